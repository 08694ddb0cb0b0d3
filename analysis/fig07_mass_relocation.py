"""Figure 7: mass relocation — the 100-arm distribution (mean over evaluation contexts and 5
seeds) during on-policy training on R1, one panel per objective. The reward peak is arm 70;
π_ref's mass sits at arms 0–40 and in the edge bins.

Runs: the ``onpolicy_bon`` preset with each objective (SFT, RWR, BoN, REINFORCE, PPO, DPO, IPO,
ASFT; default hyperparameters, IPO τ 0.05) on R1: 10 prompts × 10 samples, 100 rounds × 15 steps
(1,500), lr 1e-3, seeds 0–4, snapshots every 15 steps. Arm 70 is marked by cyan triangles at
both edges of every panel and a dotted line; the style's grid is off on the heatmaps.

Command: ``python -m analysis.make_figures --only fig07`` (~30 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm

from analysis.cache import cached_run
from analysis.common import label, onpolicy, save, seeds, setup

NAMES = ("sft", "rwr", "bon", "reinforce", "ppo", "dpo", "ipo", "asft")
TARGET, TARGET_COLOUR = 70, "#00e5ff"  # R1's optimal arm, marked in cyan


def main(quick: bool = False) -> None:
    setup()
    s = seeds(quick)
    names = NAMES[:2] if quick else NAMES
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.6), sharex=True, sharey=True)
    image = None
    for ax, name in zip(axes.flat, names):
        _, steps, dist = cached_run(onpolicy(name, "R1", s, quick))
        mean_dist = dist.mean(1).T  # (arms, snapshots)
        image = ax.imshow(
            mean_dist,
            aspect="auto",
            origin="lower",
            cmap="magma",
            norm=LogNorm(vmin=1e-4, vmax=1.0),
            extent=(steps[0], steps[-1], -0.5, mean_dist.shape[0] - 0.5),
        )
        ax.grid(False)  # the style's grid would cut across the heatmap
        ax.axhline(TARGET, color=TARGET_COLOUR, lw=0.7, ls=(0, (2, 3)), alpha=0.8)
        for x, marker in ((0.03, ">"), (0.97, "<")):  # triangles at both edges
            ax.plot([x], [TARGET], marker=marker, ms=8, color=TARGET_COLOUR, mec="black", mew=0.6,
                    ls="", transform=ax.get_yaxis_transform(), clip_on=False, zorder=5)  # fmt: skip
        ax.set_yticks([0, 20, 40, TARGET, 99])
        ax.set_title(label(name))
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("gradient steps")
    for ax in axes[:, 0]:
        ax.set_ylabel("arm y")
    fig.colorbar(image, ax=axes, label="π(y), mean over contexts and seeds", shrink=0.9)
    fig.suptitle(
        "Where the mass goes during on-policy training on R1 "
        f"(reward peak: arm {TARGET}, cyan triangles and dotted line)"
    )
    save(fig, "fig07_mass_relocation")


if __name__ == "__main__":
    main()
