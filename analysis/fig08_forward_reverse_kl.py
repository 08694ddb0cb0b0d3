"""Figure 8: forward vs reverse KL (paper A, Theorem 6.5). Left, middle: paper A's 4-category
example, p₀ = (.3, .3, .1, .3) → q = (.2, .1, .6, .1), after one step of logit descent (η 1) and
of mirror descent (η 0.5). Right: the 100-arm bandit, logit descent from π_ref toward
q ∝ π_ref·exp(r/0.1) (R1): mass within ±10 arms of the optimum. Deterministic: no training
runs and no seeds (``toy.kl_modes``, 200 steps on the bandit).

Command: ``python -m analysis.make_figures --only fig08`` (~1 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from analysis.common import save, setup
from toy import kl_modes

COLOURS = {"p0": "#7f7f7f", "q": "#000000", "forward": "#1f77b4", "reverse": "#d62728"}
# mathtext labels: forward KL(q‖p) is maximum likelihood on q (mode-covering), reverse KL(p‖q)
# is mode-seeking; on the bandit the policy π plays p
BAR_LABELS = {
    "p0": r"start $p_0$",
    "q": r"target $q$",
    "forward": r"forward $\mathrm{KL}(q\,\|\,p)$",
    "reverse": r"reverse $\mathrm{KL}(p\,\|\,q)$",
}
CURVE_LABELS = {"forward": r"forward $\mathrm{KL}(q\,\|\,\pi)$",
                "reverse": r"reverse $\mathrm{KL}(\pi\,\|\,q)$"}  # fmt: skip
STEP_NAMES = {"logits": "logit descent", "mirror": "mirror descent"}


def _bars(ax, param: str, lr: float) -> None:
    bars = {"p0": np.array(kl_modes.P0), "q": np.array(kl_modes.Q)}
    for direction in ("forward", "reverse"):
        traj = kl_modes.trajectory(kl_modes.P0, kl_modes.Q, direction, param, lr, 1)
        bars[direction] = traj[-1].numpy()
    width = 0.2
    for i, (key, values) in enumerate(bars.items()):
        ax.bar(
            np.arange(4) + (i - 1.5) * width,
            values,
            width,
            label=BAR_LABELS[key],
            color=COLOURS[key],
            alpha=0.85,
        )
    ax.set(
        xticks=range(4),
        xlabel="category",
        ylabel="probability",
        title=rf"one step of {STEP_NAMES[param]} ($\eta = {lr:g}$)",
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
            color=COLOURS[direction],
            ls="-" if param == "logits" else "--",
            label=f"{CURVE_LABELS[direction]}, {STEP_NAMES[param]}",
        )
    axes[2].set(
        xlabel="gradient steps",
        ylabel=r"mass within $\pm 10$ arms of arm 70",
        title=r"100-arm bandit toward $q \propto \pi_{\mathrm{ref}}\, e^{r_1/0.1}$ (R1)",
        ylim=(0, 1.02),
    )
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save(fig, "fig08_forward_reverse_kl")


if __name__ == "__main__":
    main()
