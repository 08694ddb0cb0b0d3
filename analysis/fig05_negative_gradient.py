"""Figure 5: the negative gradient, offline — best-of-N vs best-of-N + push-down vs DPO vs IPO
trained on the same π_ref data (one round, 100 prompts × 10 samples), R1 and R2.

Runs: the ``offline_ipo`` preset (one round of 100 prompts × 10 π_ref samples, pair threshold 0)
with each objective, 300 steps at lr 3e-3, default hyperparameters (IPO τ 0.05); the same seed
gives every objective the same samples. 5 seeds (0–4), mean ± std.

Command: ``python -m analysis.make_figures --only fig05`` (~17 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.cache import cached_run
from analysis.common import PALETTE, band, label, offline, save, seeds, setup

NAMES = ("bon", "bon_pushdown", "dpo", "ipo")


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, reward in zip(axes, ("R1", "R2")):
        for name in NAMES:
            m, *_ = cached_run(offline(name, reward, s, quick))
            band(ax, m, "reward/expected", color=PALETTE[name], label=label(name))
        ax.set(
            xlabel="gradient steps",
            ylabel=f"expected reward ({reward})",
            ylim=(0, 1.02),
            title=f"offline, same π_ref data, {reward}",
        )
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "fig05_negative_gradient")


if __name__ == "__main__":
    main()
