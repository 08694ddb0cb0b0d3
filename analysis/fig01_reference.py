"""Figure 1: the reference policy π_ref over the 100 arms, with the rewards R1 and R2.

π_ref has heavy edge bins and an interior mode near arm 16; R2 peaks where π_ref has mass, R1 at
arm 70 where it has almost none (π_ref puts 13% of its mass above arm 60). No training runs:
the exact bin probabilities of π_ref (``toy.bandit.reference_probs``) and the two reward curves.

Command: ``python -m analysis.fig01_reference`` (~2 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from analysis.common import REWARD_COLOURS, save, setup
from toy.bandit import reference_probs, reward_vector


def main(quick: bool = False) -> None:
    setup()
    ref = reference_probs().numpy()
    arms = torch.arange(len(ref)).numpy()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.bar(arms, ref, width=1.0, color="#7f7f7f", alpha=0.7, label=r"$\pi_{\mathrm{ref}}(y)$")
    ax.set_xlabel("arm y")
    ax.set_ylabel("reference probability")
    ax2 = ax.twinx()
    for name in ("R1", "R2"):
        ax2.plot(arms, reward_vector(name).numpy(), color=REWARD_COLOURS[name], lw=2, label=name)
    ax2.set_ylabel("reward r(y)")
    ax2.set_ylim(0, 1.05)
    ax2.grid(False)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper center", frameon=True)
    ax.set_title("Reference policy and rewards of the 100-arm bandit")
    save(fig, "fig01_reference")


if __name__ == "__main__":
    main()
