"""Figure 2: on-policy vs offline best-of-N on R1 and R2, against gradient steps and against
reward queries (paper A, finding 1).

On-policy: 10 prompts × 10 samples per round, 100 rounds × 15 steps, lr 1e-3 (10,000 queries).
Offline: one round of π_ref samples, 1,500 steps, lr 1e-2, with 5 prompts (50 queries; the
steps panels) and 5 / 50 / 500 prompts (the queries panels; 500 steps each). Every run trains
on one fixed set of its P prompts, each used once per round (``n_train_contexts`` = P, as the
presets and the official code do). 5 seeds, mean ± std.

Command: ``python -m analysis.make_figures --only fig02`` (~2.3 min on a busy 2-core CPU, clean
cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.cache import cached_run
from analysis.common import PALETTE, band, final, reward_vs_queries, save, seeds, setup
from toy.config import preset

OFFLINE_SIZES = (5, 50, 500)


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    rounds, steps = (3, 45) if quick else (100, 1500)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="col")
    for row, reward in enumerate(("R1", "R2")):
        on, *_ = cached_run(preset("onpolicy_bon", reward=reward, seeds=s, rounds=rounds))
        off, *_ = cached_run(preset("offline_bon", reward=reward, seeds=s, steps_per_round=steps))
        ax = axes[row, 0]
        band(ax, on, "reward/expected", color=PALETTE["bon"], label="on-policy BoN")
        band(
            ax,
            off,
            "reward/expected",
            color=PALETTE["sft"],
            label="offline BoN (50 samples)",
            ls="--",
        )
        ax.set(xlabel="gradient steps", ylabel=f"expected reward ({reward})", ylim=(0, 1.02))
        ax = axes[row, 1]
        reward_vs_queries(ax, on, PALETTE["bon"], "on-policy BoN")
        for p in OFFLINE_SIZES[:1] if quick else OFFLINE_SIZES:
            m, *_ = cached_run(
                preset(
                    "offline_bon",
                    reward=reward,
                    seeds=s,
                    prompts_per_round=p,
                    n_train_contexts=p,  # one fixed set of P prompts, as the preset's 5
                    steps_per_round=steps // 3,
                )
            )
            mean, std = final(m)
            ax.errorbar(
                [p * 10],
                [mean],
                yerr=[std],
                fmt="s",
                color=PALETTE["sft"],
                capsize=3,
                label="offline BoN, final" if p == OFFLINE_SIZES[0] else None,
            )
        ax.set(xlabel="reward queries", xscale="log", ylim=(0, 1.02))
        ax.legend(loc="lower right", fontsize=8)
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.suptitle("On-policy sampling helps most when the reward peak is where π_ref has no mass")
    fig.tight_layout()
    save(fig, "fig02_onpolicy_vs_offline")


if __name__ == "__main__":
    main()
