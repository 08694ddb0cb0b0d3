"""Figure 15: likelihood-displacement diagnostics on a real model (``llm.diagnose``).

Per preference pair and objective (colour; marker: the pair's corruption): left, CHES (Razin et
al. 2024) against the measured change of log π(y_w) after one SGD step; middle and right, the
first-order prediction of Δlog π(y_w) and Δlog π(y_l) against the measured change (dashed
diagonal: exact prediction). Top row: one step on each pair alone; bottom row (when the table
has it, ``--batch-step``): one step on the mean loss of all the pairs together, where each pair
also feels the others' pushes. Points below the dotted zero line of the left panels are
displaced chosen responses. Symmetric-log axes: the objectives' steps differ by orders of
magnitude at one η.

Drawn from the committed table ``figures/data/diagnose_smollm2/pairs.csv``, written by the
``llm.diagnose`` command of docs/diagnose.md (SmolLM2-135M-Instruct with LoRA adapters, on CPU);
quick mode diagnoses 6 pairs on the tiny GPT-2 instead (seconds).
The drawing is ``llm.diagnose.plot``'s (also what ``llm.diagnose --plot`` writes).

Command: ``python -m analysis.make_figures --only fig15`` (~3 s from the committed table).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import cache
from analysis.common import save, setup
from llm.diagnose.plot import figure

DATA = Path(__file__).resolve().parent.parent / "figures" / "data"
TABLES = (("SmolLM2-135M-Instruct, LoRA adapters", DATA / "diagnose_smollm2"),)


def quick_table() -> pd.DataFrame:
    """6 shipped pairs on the tiny GPT-2, verified (what quick mode draws)."""
    from llm.diagnose import DiagnoseConfig, read_table, run

    out = cache.RUNS / "diagnose_quick"
    cfg = DiagnoseConfig(n_pairs=6, verify=True, batch_step=True, out_dir=str(out),
                         overwrite=True, progress=False)  # fmt: skip
    run(cfg)
    return read_table(out)


def tables(quick: bool) -> list[tuple[str, pd.DataFrame]]:
    if quick:
        return [("tiny GPT-2 (quick)", quick_table())]
    from llm.diagnose import read_table

    return [(label, read_table(d)) for label, d in TABLES if d.exists()]


def main(quick: bool = False) -> None:
    setup()
    frames = tables(quick)
    if not frames:
        raise SystemExit("no diagnose table under figures/data (see docs/diagnose.md)")
    save(figure(frames), "fig15_displacement_diagnostics")


if __name__ == "__main__":
    main()
