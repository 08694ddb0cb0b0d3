"""Figure 2: on-policy vs offline best-of-N on R1 and R2, against gradient steps and against
reward queries (paper A, finding 1).

On-policy: 10 prompts × 10 samples per round, 100 rounds × 15 steps, lr 1e-3 (10,000 queries).
Offline: one round of π_ref samples, 1,500 steps, lr 1e-2, with 5 prompts (50 queries; the
steps panels) and 5 / 50 / 500 prompts (the queries panels; 500 steps each). Every run trains
on one fixed set of its P prompts, each used once per round (``n_train_contexts`` = P, as the
presets and the official code do). 5 seeds (0–4), mean ± std. The square markers of the
queries panels are the offline runs' final expected reward (± std), each labelled with its P.

Command: ``python -m analysis.make_figures --only fig02`` (~2.3 min on a busy 2-core CPU, clean
cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.cache import cached_run
from analysis.common import PALETTE, band, final, label, reward_vs_queries, save, seeds, setup
from toy.config import preset

OFFLINE_SIZES = (5, 50, 500)


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    rounds, steps = (3, 45) if quick else (100, 1500)
    on_label, off_label = label("bon", "on_policy"), label("bon", "offline")
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="col")
    for row, reward in enumerate(("R1", "R2")):
        on, *_ = cached_run(preset("onpolicy_bon", reward=reward, seeds=s, rounds=rounds))
        off, *_ = cached_run(preset("offline_bon", reward=reward, seeds=s, steps_per_round=steps))
        ax = axes[row, 0]
        band(ax, on, "reward/expected", color=PALETTE["bon"], label=on_label)
        band(ax, off, "reward/expected", color=PALETTE["sft"], ls="--",
             label=f"{off_label}\n(5 prompts × 10 π_ref samples)")  # fmt: skip
        ax.set(xlabel="gradient steps", ylabel=f"expected reward ({reward})", ylim=(0, 1.02))
        ax = axes[row, 1]
        reward_vs_queries(ax, on, PALETTE["bon"], on_label)
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
                label=f"{off_label}: final reward after {steps // 3:,} steps\n"
                f"on P prompts × 10 π_ref samples (marker label: P)"
                if p == OFFLINE_SIZES[0]
                else None,
            )
            ax.annotate(f"P = {p}", (p * 10, mean), xytext=(6, -3), textcoords="offset points",
                        fontsize=7.5, color=PALETTE["sft"], ha="left", va="top")  # fmt: skip
        ax.set(xlabel="reward queries", xscale="log", ylim=(0, 1.02))
    axes[1, 1].legend(loc="lower right", fontsize=8)  # R1's curve crosses the lower right
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.suptitle("On-policy sampling helps most when the reward peak is where π_ref has no mass")
    fig.tight_layout()
    save(fig, "fig02_onpolicy_vs_offline")


if __name__ == "__main__":
    main()
