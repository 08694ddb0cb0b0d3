"""Figure 6: on-policy sampling and the negative gradient are complementary — on-policy DPO /
IPO vs on-policy best-of-N vs offline DPO / IPO, R1, against gradient steps.

On-policy: 10 prompts × 10 samples, 100 rounds × 15 steps. Offline: one round of 100 prompts ×
10 π_ref samples, 1,500 steps. 5 seeds. Left: the shared lr 1e-3, IPO τ 0.05, DPO β 0.1.
Right: each method's tuned lr and hyperparameter (``figures/data/tuned.json``: on-policy and
offline tuned separately on held-out seeds by ``python -m analysis.tune``; quick mode falls back
to the shared values when it is absent).

Command: ``python -m analysis.make_figures --only fig06`` (73 s for both panels on a 2-core
CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis import tune
from analysis.cache import cached_run
from analysis.common import PALETTE, band, label, offline, onpolicy, save, seeds, setup


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    steps = 45 if quick else 1500
    on_values, off_values = tune.tuned(quick), tune.tuned(quick, "offline")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, tuned in zip(axes, (False, True)):
        for name in ("dpo", "ipo", "bon"):
            cfg = onpolicy(name, "R1", s, quick)
            text = label(name, "on_policy")
            if tuned:
                cfg = tune.tuned_config(cfg, on_values[name])
                text = tune.label(name, on_values[name], "on_policy")
            m, *_ = cached_run(cfg)
            band(ax, m, "reward/expected", color=PALETTE[name], label=text)
        for name in ("dpo", "ipo"):
            cfg = offline(name, "R1", s, quick, steps_per_round=steps, lr=1e-3)
            text = label(name, "offline")
            if tuned:
                cfg = tune.tuned_config(cfg, off_values[name])
                text = tune.label(name, off_values[name], "offline")
            m, *_ = cached_run(cfg)
            band(ax, m, "reward/expected", color=PALETTE[name], label=text, ls="--")
        ax.set(
            xlabel="gradient steps",
            ylabel="expected reward (R1)",
            ylim=(0, 1.02),
            title="tuned per method" if tuned else "shared lr 1e-3",
        )
        ax.legend(fontsize=7.5, loc="lower right")
    fig.suptitle("on-policy + negative gradient", fontsize=11)
    fig.tight_layout()
    save(fig, "fig06_complementarity")


if __name__ == "__main__":
    main()
