"""Figure 4: sample reuse T ∈ {1, 2, 4, 8, 16} gradient steps per round of on-policy data, for
best-of-N (no negative gradient) and DPO (negative gradient), R1 (paper A: moderate reuse
helps; large reuse hurts methods without a negative gradient).

100 rounds × 10 prompts × 10 samples (10,000 queries), lr 1e-3, 5 seeds, mean ± std.

Command: ``python -m analysis.make_figures --only fig04`` (~21 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from analysis.cache import cached_run
from analysis.common import onpolicy, reward_vs_queries, save, seeds, setup

REUSE = (1, 2, 4, 8, 16)


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    reuse = REUSE[:2] if quick else REUSE
    colours = sns.color_palette("rocket_r", len(reuse) + 1)[1:]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, name in zip(axes, ("bon", "dpo")):
        for colour, t in zip(colours, reuse):
            m, *_ = cached_run(onpolicy(name, "R1", s, quick, steps_per_round=t))
            reward_vs_queries(ax, m, colour, f"T = {t}")
        ax.set(
            xlabel="reward queries",
            ylabel="expected reward (R1)",
            ylim=(0, 1.02),
            title=f"on-policy {name.upper()}: steps per round",
        )
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "fig04_sample_reuse")


if __name__ == "__main__":
    main()
