"""Figure 4: sample reuse T ∈ {1, 2, 4, 8, 16} gradient steps per round of on-policy data, for
best-of-N (no negative gradient) and DPO (negative gradient), R1 (paper A: moderate reuse
helps; large reuse hurts methods without a negative gradient).

100 rounds × 10 prompts × 10 samples (10,000 queries), 5 seeds, mean ± std. Top row: the shared
lr 1e-3 (DPO β 0.1). Bottom row: each objective's tuned lr and hyperparameter
(``figures/data/tuned.json``, tuned at T 15 on held-out seeds by ``python -m analysis.tune``;
quick mode falls back to the shared values when it is absent).

Command: ``python -m analysis.make_figures --only fig04`` (53 s for both rows on a 2-core
CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from analysis import tune
from analysis.cache import cached_run
from analysis.common import label, onpolicy, reward_vs_queries, save, seeds, setup

REUSE = (1, 2, 4, 8, 16)


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    reuse = REUSE[:2] if quick else REUSE
    values = tune.tuned(quick)
    colours = sns.color_palette("rocket_r", len(reuse) + 1)[1:]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.4), sharey=True)
    for row, tuned in zip(axes, (False, True)):
        for ax, name in zip(row, ("bon", "dpo")):
            for colour, t in zip(colours, reuse):
                cfg = onpolicy(name, "R1", s, quick, steps_per_round=t)
                if tuned:
                    cfg = tune.tuned_config(cfg, values[name])
                m, *_ = cached_run(cfg)
                reward_vs_queries(ax, m, colour, f"T = {t}")
            shared = f"{label(name, 'on_policy')}, lr 1e-3{', β 0.1' if name == 'dpo' else ''}"
            which = f"tuned {tune.label(name, values[name], 'on_policy')}" if tuned else shared
            ax.set(
                xlabel="reward queries",
                ylabel="expected reward (R1)",
                ylim=(0, 1.02),
                title=which,
            )
            ax.title.set_fontsize(10)
        row[0].legend(fontsize=8, title="steps per round", title_fontsize=8)
    fig.tight_layout()
    save(fig, "fig04_sample_reuse")


if __name__ == "__main__":
    main()
