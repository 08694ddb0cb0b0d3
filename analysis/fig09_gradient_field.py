"""Figure 9: paper B's gradient field — unit arrows of -∇L in (π(y_w), π(y_l)) on the feasible
triangle, coloured by log10 |∇L| on one colour scale shared by all panels (one colourbar), one
panel per objective. Reference probabilities 0.5 / 0.5 where needed; ℓ = log π (one-token
responses). Closed forms from ``objectives``, no training runs. Each title gives the push-down
ratio |∂L/∂π(y_l)| / |∂L/∂π(y_w)| at π(y_w) = 0.6, π(y_l) = 0.2.

Command: ``python -m analysis.make_figures --only fig09`` (~2 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import Normalize

from analysis.common import label, save, setup
from toy.prob_space import descent_field, triangle_grid

POINT = (torch.tensor([0.6], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64))
PANELS = (  # (objective, hyperparameters, what the title adds to the paper's name)
    ("dpo", {"beta": 0.1}, "β 0.1"),
    ("dpo", {"beta": 1.0}, "β 1"),
    ("ipo", {"tau": 0.1}, "τ 0.1"),
    ("simpo", {}, "β 2, γ 1"),
    ("orpo", {"lam": 0.1}, "λ 0.1"),
    ("orpo", {"lam": 1.0}, "λ 1"),
    ("asft", {"lam": 0.1}, "λ 0.1"),
    ("asft", {"lam": 1.0}, "λ 1"),
    ("sft", {}, ""),
)


def main(quick: bool = False) -> None:
    setup()
    x_w, x_l = triangle_grid(6 if quick else 16, margin=0.03)
    fields = [descent_field(name, x_w, x_l, 0.5, 0.5, **hp) for name, hp, _ in PANELS]
    # one colour scale for every panel, so that colours compare gradient sizes across objectives
    logs = np.concatenate([df.log10_magnitude.to_numpy() for df in fields])
    logs = logs[np.isfinite(logs)]
    cnorm = Normalize(np.floor(logs.min() * 2) / 2, np.ceil(logs.max() * 2) / 2)
    fig, axes = plt.subplots(3, 3, figsize=(11.5, 10.5), sharex=True, sharey=True)
    for ax, (name, hp, extra), df in zip(axes.flat, PANELS, fields):
        norm = np.hypot(df.u, df.v).replace(0, np.nan)
        ax.quiver(
            df.x_w,
            df.x_l,
            df.u / norm,
            df.v / norm,
            df.log10_magnitude,
            cmap="viridis",
            norm=cnorm,
            angles="xy",
            scale=22,
            width=0.006,
        )
        ax.plot([0, 1], [1, 0], color="black", lw=0.8)
        point = descent_field(name, *POINT, 0.5, 0.5, **hp).ratio.item()
        title = f"{label(name)} {extra}".strip()
        ax.set_title(f"{title}\npush-down ratio at (0.6, 0.2): {point:.3g}", fontsize=8.5)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    for ax in axes[-1]:
        ax.set_xlabel(r"$\pi(y_w)$")
    for ax in axes[:, 0]:
        ax.set_ylabel(r"$\pi(y_l)$")
    fig.colorbar(
        plt.cm.ScalarMappable(norm=cnorm, cmap="viridis"),
        ax=axes,
        shrink=0.6,
        label=r"$\log_{10}\,\|\nabla L\|$ (one scale for all panels)",
    )
    fig.suptitle("Descent directions in probability space (paper B)")
    save(fig, "fig09_gradient_field")


if __name__ == "__main__":
    main()
