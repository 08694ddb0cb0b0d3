"""Figure 8: forward vs reverse KL (paper A, Theorem 6.5). Left, middle: paper A's 4-category
example, p₀ = (.3, .3, .1, .3) → q = (.2, .1, .6, .1), after one step of logit descent (η 1) and
of mirror descent (η 0.5). Right: the 100-arm bandit, logit descent from π_ref toward
q ∝ π_ref·exp(r/0.1) (R1): mass within ±10 arms of the optimum. Deterministic (no seeds).

Command: ``python -m analysis.make_figures --only fig08`` (~1 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import save, setup
from toy import kl_modes

COLOURS = {"p₀": "#7f7f7f", "target q": "#000000", "forward KL": "#1f77b4", "reverse KL": "#d62728"}


def _bars(ax, param: str, lr: float) -> None:
    bars = {"p₀": np.array(kl_modes.P0), "target q": np.array(kl_modes.Q)}
    for direction in ("forward", "reverse"):
        traj = kl_modes.trajectory(kl_modes.P0, kl_modes.Q, direction, param, lr, 1)
        bars[f"{direction} KL"] = traj[-1].numpy()
    width = 0.2
    for i, (label, values) in enumerate(bars.items()):
        ax.bar(
            np.arange(4) + (i - 1.5) * width,
            values,
            width,
            label=label,
            color=COLOURS[label],
            alpha=0.85,
        )
    ax.set(
        xticks=range(4), xlabel="category", ylabel="probability", title=f"one {param} step (η {lr})"
    )


def main(quick: bool = False) -> None:
    setup()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    _bars(axes[0], "logits", 1.0)
    _bars(axes[1], "mirror", 0.5)
    axes[0].legend(fontsize=8)
    curves = kl_modes.bandit_kl_curves(steps=20 if quick else 200)
    for (param, direction), df in curves.groupby(["parametrisation", "direction"]):
        axes[2].plot(
            df.step,
            df.mass_near_optimum,
            color=COLOURS[f"{direction} KL"],
            ls="-" if param == "logits" else "--",
            label=f"{direction}, {param}",
        )
    axes[2].set(
        xlabel="gradient steps",
        ylabel="mass within ±10 arms of arm 70",
        title="100-arm bandit toward q ∝ π_ref e^{r/0.1}",
        ylim=(0, 1.02),
    )
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "fig08_forward_reverse_kl")


if __name__ == "__main__":
    main()
