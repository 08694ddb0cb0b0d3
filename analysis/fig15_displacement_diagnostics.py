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
``llm.diagnose`` command in the README (SmolLM2-135M-Instruct with LoRA adapters, on CPU); quick
mode diagnoses 6 pairs on the tiny GPT-2 instead (seconds).

Command: ``python -m analysis.make_figures --only fig15`` (~3 s from the committed table).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from analysis import cache, common
from analysis.common import PALETTE, save, setup

DATA = Path(__file__).resolve().parent.parent / "figures" / "data"
TABLES = (("SmolLM2-135M-Instruct, LoRA adapters", DATA / "diagnose_smollm2"),)
STEPS = (("", "one step on each pair"), ("batch_", "one step on the batch of all pairs"))
MARKERS = {"shuffled": "o", "other_play": "^"}


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


def _linthresh(*cols: pd.Series) -> float:
    v = pd.concat([c.abs() for c in cols]).replace(0, np.nan).dropna()
    return float(10 ** np.floor(np.log10(v.quantile(0.05)))) if len(v) else 1e-3


def _scatter(ax, df: pd.DataFrame, x: str, y: str) -> None:
    groups = df.group if "group" in df else pd.Series("", index=df.index)
    for (name, grp), g in df.groupby([df.objective, groups], sort=False):
        ax.scatter(g[x], g[y], s=14, alpha=0.75, lw=0.3, edgecolor="white",
                   color=PALETTE.get(name, "k"), marker=MARKERS.get(grp, "o"))  # fmt: skip


def draw_row(axes, df: pd.DataFrame, label: str, prefix: str = "") -> None:
    """CHES vs Δℓ_w, and predicted vs measured Δℓ_w, Δℓ_l, of the step ``prefix`` names
    ("": each pair alone, "batch_": the batch)."""
    meas = f"{prefix}meas_dlogp_w" in df
    yw = f"{prefix}{'meas' if meas else 'pred'}_dlogp_w"
    ax = axes[0]
    _scatter(ax, df, "ches", yw)
    ax.axhline(0, color="k", ls=":", lw=0.8)
    ax.set_yscale("symlog", linthresh=_linthresh(df[yw]))
    ax.set(xlabel="CHES = ⟨S⁺,S⁻⟩ − ‖S⁺‖²",
           ylabel=f"{'measured' if meas else 'predicted'} Δlog π(y_w)")  # fmt: skip
    ax.set_title(label, loc="left")  # runs over the row: the other panels have no title
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    for ax, side in zip(axes[1:], ("w", "l")):
        p, m = f"{prefix}pred_dlogp_{side}", f"{prefix}meas_dlogp_{side}"
        if not meas:
            ax.set_axis_off()
            continue
        _scatter(ax, df, p, m)
        lo = float(min(df[p].min(), df[m].min()))
        hi = float(max(df[p].max(), df[m].max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--")
        t = _linthresh(df[p], df[m])
        ax.set_xscale("symlog", linthresh=t)
        ax.set_yscale("symlog", linthresh=t)
        ax.axhline(0, color="k", ls=":", lw=0.6)
        ax.axvline(0, color="k", ls=":", lw=0.6)
        ax.set(xlabel=f"predicted Δlog π(y_{side}) (first order)",
               ylabel=f"measured Δlog π(y_{side})")  # fmt: skip


def _legend(fig, frames: list[pd.DataFrame]) -> None:
    names = list(dict.fromkeys(n for df in frames for n in df.objective))
    handles = [Line2D([], [], ls="", marker="o", color=PALETTE.get(n, "k"), label=common.label(n))
               for n in names]  # fmt: skip
    groups = sorted({g for df in frames if "group" in df for g in df.group.dropna().unique()})
    handles += [Line2D([], [], ls="", marker=MARKERS.get(g, "o"), color="0.4", label=f"{g} pair")
                for g in groups]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               bbox_to_anchor=(0.5, -0.01), frameon=False)  # fmt: skip


def figure(frames: list[tuple[str, pd.DataFrame]]):
    rows = [(f"{label}: {what}", df, prefix) for label, df in frames for prefix, what in STEPS
            if f"{prefix}pred_dlogp_w" in df]  # fmt: skip
    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 3.9 * len(rows) + 0.4), squeeze=False)
    for ax_row, (label, df, prefix) in zip(axes, rows):
        draw_row(ax_row, df, label, prefix)
    _legend(fig, [df for _, df in frames])
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def draw(df: pd.DataFrame, path: Path, label: str = "") -> Path:
    """One row for one diagnose table, written to ``path`` (``llm.diagnose --plot``)."""
    setup()
    fig = figure([(label, df)])
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return Path(path)


def main(quick: bool = False) -> None:
    setup()
    frames = tables(quick)
    if not frames:
        raise SystemExit("no diagnose table under figures/data (see the README's command)")
    save(figure(frames), "fig15_displacement_diagnostics")


if __name__ == "__main__":
    main()
