"""Figure 3: prompts per round (5 … 200) at a fixed budget of 10,000 reward queries, on-policy
best-of-N, R1 and R2 (paper A: smaller batches, i.e. more rounds, help on R1).

Rounds = 10,000 / (10 P); 15 steps per round, lr 1e-3; 5 seeds, mean ± std.

Command: ``python -m analysis.make_figures --only fig03`` (~32 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from analysis.cache import cached_run
from analysis.common import onpolicy, reward_vs_queries, save, seeds, setup

SIZES = (5, 10, 25, 50, 100, 200)
BUDGET = 10_000


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    sizes = SIZES[:2] if quick else SIZES
    colours = sns.color_palette("viridis", len(sizes))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, reward in zip(axes, ("R1", "R2")):
        for colour, p in zip(colours, sizes):
            rounds = 2 if quick else BUDGET // (10 * p)
            m, *_ = cached_run(
                onpolicy("bon", reward, s, quick, prompts_per_round=p, rounds=rounds)
            )
            reward_vs_queries(ax, m, colour, f"P = {p}")
        ax.set(
            xlabel="reward queries",
            ylabel=f"expected reward ({reward})",
            xscale="log",
            ylim=(0, 1.02),
            title=f"on-policy BoN, {reward}",
        )
    axes[0].legend(title="prompts per round", fontsize=8)
    fig.tight_layout()
    save(fig, "fig03_batch_size")


if __name__ == "__main__":
    main()
