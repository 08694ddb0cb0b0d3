"""mkdocs hook: the repository's ``figures/*.png|pdf`` on the site, without a copy in git.

The figures are committed once, at the repository root. Pages link to them by their real path
(``../figures/figNN_*.png`` from ``docs/``), so the pages also render on GitHub; this hook adds
each figure to the site as ``figures/<name>`` and rewrites those links to it. mkdocs then checks
every such link against the added files, so a missing figure fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "figures"
# a markdown link/image target or an HTML src that climbs out of docs/ into figures/
LINK = re.compile(r"(?P<lead>\]\(|src=\")(?P<path>(?:\.\./)+figures/[^)\"\s]+)")


def on_files(files, config):
    for path in sorted(FIGURES.glob("*")):
        if path.suffix in (".png", ".pdf"):
            files.append(File.generated(config, f"figures/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    docs = posixpath.relpath(Path(config["docs_dir"]).resolve().as_posix(), ROOT.as_posix())
    here = posixpath.dirname(posixpath.join(docs, page.file.src_uri))

    def site_path(match: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(here, match["path"]))
        if not target.startswith("figures/"):
            return match[0]
        return match["lead"] + posixpath.relpath(posixpath.join(docs, target), here)

    return LINK.sub(site_path, markdown)
