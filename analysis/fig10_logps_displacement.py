"""Figure 10: log-probabilities of the chosen and rejected responses and the implicit margin
during training, per objective (likelihood displacement). Top: the bandit, offline on R1 (one
round of 100 prompts × 10 π_ref samples, 300 steps, lr 3e-3, 5 seeds; the same runs as figure
5 plus SFT and ASFT). Bottom: a linear-softmax policy trained on one pair whose embeddings are
nearly collinear (cos 0.99, ‖e_l‖ = 1.5‖e_w‖) or orthogonal (100 steps, lr 0.1).

Command: ``python -m analysis.make_figures --only fig10`` (~7 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.cache import cached_run
from analysis.common import PALETTE, band, offline, save, seeds, setup
from toy import displacement

NAMES = ("sft", "bon", "dpo", "ipo", "asft")
KEYS = (
    ("logps/chosen", "log π(y_w)"),
    ("logps/rejected", "log π(y_l)"),
    ("margin/implicit", "implicit margin h"),
)


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for name in NAMES[:2] if quick else NAMES:
        m, *_ = cached_run(offline(name, "R1", s, quick))
        for ax, (key, label) in zip(axes[0], KEYS):
            band(ax, m, key, color=PALETTE[name], label=name)
            ax.set(xlabel="gradient steps", ylabel=label, title=f"bandit, offline R1: {label}")
    axes[0, 0].legend(fontsize=8)
    steps = 10 if quick else 100
    for ax, cos in zip(axes[1, :2], (0.99, 0.0)):
        emb = displacement.embeddings(cos=cos)
        for name in ("sft", "dpo", "ipo", "asft"):
            df = displacement.train_pair(name, emb, steps=steps)
            ax.plot(df.step, df.logp_w, color=PALETTE[name], label=name)
        ax.set(
            xlabel="gradient steps",
            ylabel="log π(y_w)",
            title=f"linear softmax, cos(e_w, e_l) = {cos}",
        )
    axes[1, 0].legend(fontsize=8)
    for name in ("dpo", "sft"):
        df = displacement.train_pair(name, None, steps=steps)
        axes[1, 2].plot(df.step, df.logp_w, color=PALETTE[name], label=f"{name}: log π(y_w)")
        axes[1, 2].plot(
            df.step, df.logp_l, color=PALETTE[name], ls="--", label=f"{name}: log π(y_l)"
        )
    axes[1, 2].set(
        xlabel="gradient steps", ylabel="log-probability", title="tabular softmax: no displacement"
    )
    axes[1, 2].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "fig10_logps_displacement")


if __name__ == "__main__":
    main()
