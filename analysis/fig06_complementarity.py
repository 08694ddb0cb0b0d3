"""Figure 6: on-policy sampling and the negative gradient are complementary — on-policy DPO /
IPO vs on-policy best-of-N vs offline DPO / IPO, R1, against gradient steps.

On-policy: 10 prompts × 10 samples, 100 rounds × 15 steps, lr 1e-3. Offline: one round of
100 prompts × 10 π_ref samples, 1,500 steps, lr 1e-3. IPO τ 0.05, DPO β 0.1. 5 seeds.

Command: ``python -m analysis.make_figures --only fig06`` (~35 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.cache import cached_run
from analysis.common import PALETTE, band, offline, onpolicy, save, seeds, setup


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    steps = 45 if quick else 1500
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in ("dpo", "ipo", "bon"):
        m, *_ = cached_run(onpolicy(name, "R1", s, quick))
        band(ax, m, "reward/expected", color=PALETTE[name], label=f"on-policy {name}")
    for name in ("dpo", "ipo"):
        m, *_ = cached_run(offline(name, "R1", s, quick, steps_per_round=steps, lr=1e-3))
        band(ax, m, "reward/expected", color=PALETTE[name], label=f"offline {name}", ls="--")
    ax.set(
        xlabel="gradient steps",
        ylabel="expected reward (R1)",
        ylim=(0, 1.02),
        title="on-policy + negative gradient",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, "fig06_complementarity")


if __name__ == "__main__":
    main()
