"""Figure 15's drawing of a diagnose table (``--plot``'s ``diagnose.png``; the analysis script
``analysis.fig15_displacement_diagnostics`` draws the committed table with it): per pair and
objective (colour; marker: the pair's group), CHES against the measured Δlog π(y_w) after one
SGD step, and the first-order prediction of Δlog π(y_w), Δlog π(y_l) against the measured change;
one row per step (each pair alone, ``batch_``: the batch of all pairs).

The palette and display names are every figure's (``objectives.display``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from objectives.display import DISPLAY_NAMES, PALETTE, display_name  # noqa: F401 (re-exported)


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "svg.hashsalt": "modeseek"})


STEPS = (("", "one step on each pair"), ("batch_", "one step on the batch of all pairs"))
MARKERS = {"shuffled": "o", "other_play": "^"}


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
    handles = [Line2D([], [], ls="", marker="o", color=PALETTE.get(n, "k"), label=display_name(n))
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
