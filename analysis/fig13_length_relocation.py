"""Figure 13: mass relocation in length space — the policy's response-length distribution before
(π_ref) and after training, offline vs on-policy DPO, one panel per task (held-out prompts, all
seeds pooled). Offline DPO trains on π_ref's samples ranked by the task reward (Skew: truncated
ones, dotted); on-policy DPO on its own samples, with the same budget and steps. Offline DPO
is drawn dashed in a darker red on top of on-policy DPO (solid), so that both stay visible.

Data: ``figures/data/length_hist.csv`` from ``python -m analysis.run_length_tasks``; quick mode
runs the quick sweep end to end.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis import cache, common
from analysis.common import PALETTE, save, setup
from analysis.fig12_length_tasks import TITLES, length_probs
from analysis.run_length_tasks import load

ON_DPO, OFF_DPO = common.label("dpo", "on_policy"), common.label("dpo", "offline")
CURVES = (  # (method, stage, label, style)
    ("reference", "before", "π_ref (before)", dict(color="#7f7f7f", lw=0)),
    ("data", "data", "preference data", dict(color="k", ls=":", lw=1.2)),
    ("dpo_on", "after", f"{ON_DPO} (after)", dict(color=PALETTE["dpo"], ls="-", lw=2.6)),
    ("dpo_off", "after", f"{OFF_DPO} (after)", dict(color="#7b0d0e", ls="--", lw=1.6)),
)


def main(quick: bool = False) -> None:
    setup()
    _, hist = load(quick, cache.RUNS / "length_tasks_quick")
    tasks = [t for t in TITLES if t in set(hist.task)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), sharey=True)
    for ax, task in zip(axes, tasks):
        h = hist[hist.task == task]
        for method, stage, label, style in CURVES:
            rows = h[(h.method == method) & (h.stage == stage)]
            if rows.empty:
                continue
            probs = length_probs(rows)
            if method == "reference":
                ax.bar(probs.index, probs.values, width=1.0, alpha=0.45, label=label, **style)
            else:
                ax.step(probs.index, probs.values, where="mid", label=label, **style)
        ax.set(title=TITLES[task], xlabel="response length (tokens)")
    axes[0].set_ylabel("probability")
    axes[0].legend(fontsize=8)
    fig.suptitle("Where DPO moves the length distribution: offline vs on-policy samples")
    fig.tight_layout()
    save(fig, "fig13_length_relocation")


if __name__ == "__main__":
    main()
