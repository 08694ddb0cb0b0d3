"""Figure 14: sensitivity to the learning rate and the main hyperparameter — per objective, the
mean final expected reward (R1, 1,500 steps) and the mean steps to 90% mass on the optimal arm
over the tuning grid (lr × hyperparameter), on the held-out seeds 100–102; the selected point
(``analysis.tune``'s rule) is outlined.

Drawn from ``figures/data/tuning.csv`` (written by ``python -m analysis.tune``, 10 min 45 s
here); quick mode runs a tiny sweep (two objectives, 2 × 2 grid, 45 steps) instead.

Command: ``python -m analysis.make_figures --only fig14`` (~3 s from the committed table).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from analysis import tune
from analysis.common import HP_SYMBOLS, label, save, setup

STEPS_MAX = 1500


def table(quick: bool) -> pd.DataFrame:
    """The tuning table, hyperparameter names and values as strings ("" when lr only)."""
    if quick:
        t, _ = tune.run_tuning(names=("dpo", "bon"), offline_names=(), quick=True, progress=False)
    else:
        t = pd.read_csv(tune.DATA / "tuning.csv")
    t["hp_name"] = t.hp_name.fillna("")
    t["hp_value"] = t.hp_value.map(tune._fmt)
    return t


def _panel(ax, g: pd.DataFrame, value: str, norm, cmap, fmt) -> None:
    lrs = sorted(g.lr.unique())
    hps = sorted(g.hp_value.unique(), key=lambda v: float(v) if v else 0.0)
    grid = np.full((len(hps), len(lrs)), np.nan)
    for _, r in g.iterrows():
        i, j = hps.index(r.hp_value), lrs.index(r.lr)
        grid[i, j] = r[value]
        ax.text(j, i, fmt(r), ha="center", va="center", fontsize=6.5,
                color="white" if _dark(r[value], norm, cmap) else "black")  # fmt: skip
        if r.selected:
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="black", clip_on=False)
            )
    cm = plt.get_cmap(cmap).with_extremes(bad="#d9d9d9")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cm, norm=norm, aspect="auto", origin="lower")
    ax.set_xticks(range(len(lrs)), [f"{x:g}" for x in lrs], fontsize=6.5)
    name = g.hp_name.iloc[0]
    ax.set_yticks(range(len(hps)), hps if name else [""], fontsize=6.5)
    ax.set_ylabel(HP_SYMBOLS.get(name, name), fontsize=8, labelpad=1)
    ax.grid(False)


def _dark(v, norm, cmap) -> bool:
    if not np.isfinite(v):
        return False
    r, g, b, _ = plt.get_cmap(cmap)(norm(v))
    return 0.299 * r + 0.587 * g + 0.114 * b < 0.5


def _steps_text(r) -> str:
    if r.seeds_reaching_90 == r.n_seeds:
        return f"{r.steps_to_90:.0f}"
    return "—" if r.seeds_reaching_90 == 0 else f"{r.seeds_reaching_90}/{r.n_seeds}"


def main(quick: bool = False) -> None:
    setup()
    t = table(quick)
    t["steps_all"] = t.steps_to_90.where(t.seeds_reaching_90 == t.n_seeds)
    jobs = list(t.groupby(["mode", "objective"], sort=False).groups)
    per_row = 3
    rows = -(-len(jobs) // per_row)
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2.15 * 2 * per_row, 1.55 * rows + 0.9),
                             squeeze=False)  # fmt: skip
    r_norm, s_norm = Normalize(0, 1), Normalize(0, STEPS_MAX)
    for k, (mode, name) in enumerate(jobs):
        g = t[(t["mode"] == mode) & (t.objective == name)]
        ax_r, ax_s = (
            axes[k // per_row, 2 * (k % per_row)],
            axes[k // per_row, 2 * (k % per_row) + 1],
        )
        _panel(ax_r, g, "reward_mean", r_norm, "viridis", lambda r: f"{r.reward_mean:.2f}")
        _panel(ax_s, g, "steps_all", s_norm, "magma_r", _steps_text)
        text = label(name, None if mode == "on_policy" else mode)
        ax_r.set_title(f"{text}: final reward", fontsize=7.5)
        ax_s.set_title(f"{text}: steps to 90%", fontsize=7.5)
        ax_s.set_ylabel("")
    for ax in axes.flat[2 * len(jobs) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("lr", fontsize=7, labelpad=1)
    fig.tight_layout(rect=(0, 0.06, 1, 1), h_pad=0.6, w_pad=0.4)
    for norm, cmap, x, lab in ((r_norm, "viridis", 0.08, "mean final expected reward (R1)"),
                               (s_norm, "magma_r", 0.56, "mean steps to 90% mass on arm 70 "
                                "(all seeds; k/3: k seeds get there; —: none)")):  # fmt: skip
        cax = fig.add_axes((x, 0.025, 0.36, 0.012))
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal")
        cax.tick_params(labelsize=6.5)
        cax.set_title(lab, fontsize=7)
    save(fig, "fig14_sensitivity")


if __name__ == "__main__":
    main()
