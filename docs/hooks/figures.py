"""mkdocs hook: the repository's ``figures/*.png|pdf`` become site files under ``figures/``.

The figures are committed once, at the repository root (README shows them from there); pages
link to them as ``figures/figNN_*.png`` (``../figures/...`` from a sub-folder), and mkdocs checks
those links against the files this hook adds, so a missing figure fails ``mkdocs build --strict``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

FIGURES = Path(__file__).resolve().parents[2] / "figures"


def on_files(files, config):
    for path in sorted(FIGURES.glob("*")):
        if path.suffix in (".png", ".pdf"):
            files.append(File.generated(config, f"figures/{path.name}", abs_src_path=str(path)))
    return files
