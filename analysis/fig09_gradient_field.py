"""Figure 9: paper B's gradient field — unit arrows of -∇L in (π(y_w), π(y_l)) on the feasible
triangle, coloured by log10 |∇L|, one panel per objective. Reference probabilities 0.5 / 0.5
where needed; ℓ = log π (one-token responses). Closed forms from ``objectives``. Each title
gives the push-down ratio |∂L/∂π(y_l)| / |∂L/∂π(y_w)| at π(y_w) = 0.6, π(y_l) = 0.2.

Command: ``python -m analysis.make_figures --only fig09`` (~2 s on a 2-core CPU, clean cache).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from analysis.common import save, setup
from toy.prob_space import descent_field, triangle_grid

POINT = (torch.tensor([0.6], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64))
PANELS = (
    ("dpo", {"beta": 0.1}, "DPO β 0.1"),
    ("dpo", {"beta": 1.0}, "DPO β 1"),
    ("ipo", {"tau": 0.1}, "IPO τ 0.1"),
    ("simpo", {}, "SimPO β 2, γ 1"),
    ("orpo", {"lam": 0.1}, "ORPO λ 0.1"),
    ("orpo", {"lam": 1.0}, "ORPO λ 1"),
    ("asft", {"lam": 0.1}, "ASFT λ 0.1"),
    ("asft", {"lam": 1.0}, "ASFT λ 1"),
    ("sft", {}, "SFT"),
)


def main(quick: bool = False) -> None:
    setup()
    x_w, x_l = triangle_grid(6 if quick else 16, margin=0.03)
    fig, axes = plt.subplots(3, 3, figsize=(11, 10.5), sharex=True, sharey=True)
    for ax, (name, hp, title) in zip(axes.flat, PANELS):
        df = descent_field(name, x_w, x_l, 0.5, 0.5, **hp)
        norm = np.hypot(df.u, df.v).replace(0, np.nan)
        q = ax.quiver(
            df.x_w,
            df.x_l,
            df.u / norm,
            df.v / norm,
            df.log10_magnitude,
            cmap="viridis",
            angles="xy",
            scale=22,
            width=0.006,
        )
        ax.plot([0, 1], [1, 0], color="black", lw=0.8)
        point = descent_field(name, *POINT, 0.5, 0.5, **hp).ratio.item()
        ax.set_title(f"{title}\npush-down ratio at (0.6, 0.2): {point:.3g}", fontsize=9)
        ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
        fig.colorbar(q, ax=ax, shrink=0.8, label="log10 |∇L|")
    for ax in axes[-1]:
        ax.set_xlabel("π(y_w)")
    for ax in axes[:, 0]:
        ax.set_ylabel("π(y_l)")
    fig.suptitle("Descent directions in probability space (paper B)")
    save(fig, "fig09_gradient_field")


if __name__ == "__main__":
    main()
