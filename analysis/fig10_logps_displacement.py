"""Figure 10: log-probabilities of the chosen and rejected responses and the implicit margin
during training, per objective (likelihood displacement). Top: the bandit, offline on R1 (one
round of 100 prompts × 10 π_ref samples, 300 steps, lr 3e-3, 5 seeds; the same runs as figure
5 plus SFT and ASFT). Bottom: a linear-softmax policy trained on one pair whose embeddings are
nearly collinear (cos 0.99, ‖e_l‖ = 1.5‖e_w‖) or orthogonal (100 steps, lr 0.1). SFT and ASFT
(λ 0.1) coincide in the top row and at cos 0.99 (within 0.06 in log π(y_w)): SFT is drawn wide
and pale underneath, ASFT dashed on top, and the legend says so.

Command: ``python -m analysis.make_figures --only fig10`` (~7 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from analysis.cache import cached_run
from analysis.common import PALETTE, band, label, offline, save, seeds, setup
from toy import displacement

NAMES = ("sft", "bon", "dpo", "ipo", "asft")
KEYS = (
    ("logps/chosen", r"$\log\pi(y_w)$"),
    ("logps/rejected", r"$\log\pi(y_l)$"),
    ("margin/implicit", "implicit margin $h$"),
)
# SFT and ASFT (λ 0.1) coincide in the bandit panels and at cos 0.99 (within 0.06 in log π(y_w)):
# SFT is drawn wide and pale underneath, ASFT dashed on top, so that both stay visible
STYLES = {
    "sft": dict(lw=4.5, alpha=0.55, zorder=2),
    "asft": dict(lw=1.6, ls=(0, (4, 2)), zorder=4),
}
NOTE = {"asft": " (dashed; coincides with SFT here)"}


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for name in NAMES[:2] if quick else NAMES:
        m, *_ = cached_run(offline(name, "R1", s, quick))
        for ax, (key, text) in zip(axes[0], KEYS):
            band(ax, m, key, color=PALETTE[name], label=label(name) + NOTE.get(name, ""),
                 **STYLES.get(name, {}))  # fmt: skip
            ax.set(xlabel="gradient steps", ylabel=text, title=f"bandit, offline R1: {text}")
    axes[0, 0].legend(fontsize=8)
    steps = 10 if quick else 100
    for ax, cos in zip(axes[1, :2], (0.99, 0.0)):
        emb = displacement.embeddings(cos=cos)
        for name in ("sft", "dpo", "ipo", "asft"):
            df = displacement.train_pair(name, emb, steps=steps)
            style = {"lw": 1.5, **STYLES.get(name, {})}
            note = NOTE.get(name, "") if cos > 0.5 else ""
            ax.plot(df.step, df.logp_w, color=PALETTE[name], label=label(name) + note, **style)
        ax.set(
            xlabel="gradient steps",
            ylabel=r"$\log\pi(y_w)$",
            title=rf"linear softmax, $\cos(e_w, e_l) = {cos:g}$",
        )
        ax.legend(fontsize=8)
    for name in ("dpo", "sft"):
        df = displacement.train_pair(name, None, steps=steps)
        for side, ls in (("w", "-"), ("l", "--")):
            axes[1, 2].plot(df.step, df[f"logp_{side}"], color=PALETTE[name], ls=ls,
                            label=rf"{label(name)}: $\log\pi(y_{side})$")  # fmt: skip
    axes[1, 2].set(
        xlabel="gradient steps", ylabel="log-probability", title="tabular softmax: no displacement"
    )
    axes[1, 2].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "fig10_logps_displacement")


if __name__ == "__main__":
    main()
