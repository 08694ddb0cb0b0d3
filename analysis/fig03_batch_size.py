"""Figure 3: prompts per round (5 … 200) at a fixed budget of 10,000 reward queries, on-policy
best-of-N, R1 and R2 (paper A: smaller batches, i.e. more rounds, help on R1), under two
protocols.

Rounds = 10,000 / (10 P); 15 passes per round, lr 1e-3; each P trains on one fixed set of P
prompts (``n_train_contexts`` = P). Top row, full batch: one gradient step per pass, so P = 5
gets 3,000 steps and P = 200 gets 75. Bottom row, paper A's Algorithm 1 with a fixed minibatch
of M = 5 prompts (the smallest P, so every P is a multiple): each pass shuffles the round's P
prompts into P/M steps, so every P gets R·T·P/M = 3,000 steps (at P = M = 5 this is the
full-batch run itself). Left, middle: expected reward after each round against reward queries.
Right: the final expected reward against P. 5 seeds, mean ± std.

Command: ``python -m analysis.make_figures --only fig03`` (~3 min on a busy 2-core CPU, clean
cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from analysis.cache import cached_run
from analysis.common import REWARD_COLOURS, band, final, label, onpolicy, save, seeds, setup

SIZES = (5, 10, 25, 50, 100, 200)
BUDGET = 10_000
MINIBATCH = 5
PROTOCOLS = ("full batch", f"fixed minibatch M = {MINIBATCH}")
MARKERS = {"R1": dict(marker="o", ms=6), "R2": dict(marker="s", ms=4, mfc="none", ls="--")}


def config(reward: str, p: int, protocol: str, s: tuple[int, ...], quick: bool):
    """On-policy BoN with P prompts per round at the fixed query budget, under ``protocol``."""
    rounds = 2 if quick else BUDGET // (10 * p)
    # M = P is one full-batch step per pass: the same run, so it shares the full-batch cache
    m = MINIBATCH if protocol != PROTOCOLS[0] and p > MINIBATCH else None
    return onpolicy("bon", reward, s, quick, prompts_per_round=p, rounds=rounds, minibatch_size=m)


def round_ends(ax, metrics, colour, label):
    """Expected reward after each round's last step against the queries collected so far."""
    trained = metrics[metrics.step > 0]
    last = trained.loc[trained.groupby(["seed", "queries/reward"]).step.idxmax()]
    band(ax, last, "reward/expected", x="queries/reward", color=colour, label=label)


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    sizes = SIZES[:2] if quick else SIZES
    colours = sns.color_palette("viridis", len(sizes))
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.4), sharey=True)
    for row, protocol in enumerate(PROTOCOLS):
        for col, reward in enumerate(("R1", "R2")):
            ax = axes[row, col]
            finals = []
            for colour, p in zip(colours, sizes):
                cfg = config(reward, p, protocol, s, quick)
                m, *_ = cached_run(cfg)
                round_ends(ax, m, colour, f"P = {p} ({cfg.total_steps:,} steps)")
                finals.append(final(m))
            ax.set(
                xlabel="reward queries",
                ylabel=f"expected reward ({reward})",
                xscale="log",
                ylim=(0, 1.02),
                title=f"{protocol}: {label('bon', 'on_policy')}, {reward}",
            )
            loc = "upper left" if reward == "R1" else "lower right"
            ax.legend(title="prompts per round", fontsize=7, loc=loc)
            mean, std = zip(*finals)
            axes[row, 2].errorbar(sizes, mean, yerr=std, capsize=3, label=reward,
                                  color=REWARD_COLOURS[reward], **MARKERS[reward])  # fmt: skip
        axes[row, 2].set(
            xlabel="prompts per round P",
            xscale="log",
            ylabel="final expected reward",
            title=f"{protocol}: after {BUDGET:,} queries" if not quick else protocol,
        )
        axes[row, 2].legend(fontsize=8, loc="lower left")
        axes[row, 2].tick_params(labelleft=True)
    fig.tight_layout()
    save(fig, "fig03_batch_size")


if __name__ == "__main__":
    main()
