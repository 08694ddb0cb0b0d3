"""Figure 12: paper A's synthetic length tasks (§5) on a tiny reference LM.

Panel 1: π_ref's response lengths (its own samples on the held-out prompts) and the lengths in
the Min and Skew preference data. Then one column per task (Min, Mode, Skew): the policy's mean
response length (top) and mean task reward (bottom) on held-out prompts against gradient steps,
per method, mean ± std over seeds. Solid: on-policy; dashed: offline (the same R·P·N samples of
π_ref, ranked by the task reward).

Data: ``figures/data/length_tasks.csv`` and ``length_hist.csv`` from
``python -m analysis.run_length_tasks`` (5 seeds, 150 runs: 16 min on one shared core); this
script only draws them.
Quick mode runs the quick sweep end to end (``--quick``, seconds).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from analysis import cache, common
from analysis.common import MODE_STYLES, PALETTE, band, save, setup
from analysis.run_length_tasks import METHODS, load

TITLES = {"min": "Min length (r = -len)", "mode": "Mode length (r = -|len - m|)",
          "skew": "Skew length (r = -len, truncated data)"}  # fmt: skip


def length_probs(h) -> pd.Series:
    """Probability of each length 0..max (zeros included, so step lines show single bins)
    from histogram rows pooled over seeds."""
    counts = h.groupby("length")["count"].sum()
    counts = counts.reindex(range(int(counts.index.max()) + 2), fill_value=0)
    return counts / counts.sum()


def _hist_panel(ax, hist) -> None:
    for (method, task), colour, label in (
        (("reference", "min"), "#7f7f7f", "π_ref samples"),
        (("data", "min"), "#1f77b4", "Min/Mode data (π_ref)"),
        (("data", "skew"), "#d62728", "Skew data (truncated)"),
    ):
        probs = length_probs(hist[(hist.method == method) & (hist.task == task)])
        if method == "reference":
            ax.bar(probs.index, probs.values, color=colour, alpha=0.5, width=1.0, label=label)
        else:
            ax.step(probs.index, probs.values, where="mid", color=colour, lw=1.5, label=label)
    ms = sorted(set(hist[hist.task == "mode"]["m"]))
    for i, m in enumerate(ms):
        label = f"Mode task's m (per seed: {', '.join(f'{x:g}' for x in ms)})" if i == 0 else None
        ax.axvline(m, color="k", ls=":", lw=1, label=label)
    ax.set(xlabel="response length (tokens)", ylabel="probability", title="π_ref lengths")
    ax.legend(fontsize=7)


def main(quick: bool = False) -> None:
    setup()
    metrics, hist = load(quick, cache.RUNS / "length_tasks_quick")
    tasks = [t for t in TITLES if t in set(metrics.task)]
    fig, axes = plt.subplots(2, 1 + len(tasks), figsize=(4 * (1 + len(tasks)), 7))
    _hist_panel(axes[0, 0], hist)
    for col, task in enumerate(tasks, start=1):
        df = metrics[metrics.task == task]
        for key in [k for k in METHODS if k in set(df.method)]:
            objective, mode, _ = METHODS[key]
            name = common.label(objective, mode)
            style = dict(color=PALETTE[objective], ls=MODE_STYLES[mode], label=name)
            band(axes[0, col], df[df.method == key], "eval_length", **style)
            band(axes[1, col], df[df.method == key], "eval_reward", **style)
        axes[0, col].set(title=TITLES[task], ylabel="mean response length", ylim=(0, None))
        axes[1, col].set(xlabel="gradient steps", ylabel="mean task reward")
    handles, labels = axes[0, 1].get_legend_handles_labels()
    axes[1, 0].axis("off")
    axes[1, 0].legend(handles, labels, loc="center", fontsize=8, title="method")
    n = metrics.seed.nunique()
    fig.suptitle(f"Length tasks on a tiny LM ({n} seed{'s' * (n > 1)}, held-out prompts)")
    fig.tight_layout()
    save(fig, "fig12_length_tasks")


if __name__ == "__main__":
    main()
