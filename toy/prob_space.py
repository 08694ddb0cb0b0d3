"""Paper B's probability-space analysis: each pairwise objective as a function of
x_w = π(y_w) and x_l = π(y_l) on the feasible triangle x_w + x_l ≤ 1.

The descent field is (-∂L/∂x_w, -∂L/∂x_l) from the closed forms in ``objectives``; the
push-down ratio |∂L/∂x_l| / |∂L/∂x_w| says how much faster the loss lowers the rejected response
than it raises the chosen one. Claims (docs/science.md §4): DPO's ratio is x_w/x_l at every β and
reference, shared by every loss of log x_w - log x_l (IPO, SimPO, SLiC); ASFT's is
λ x_w / ((1+λ)(1 - x_l)) < 1 on the triangle.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

import objectives


def triangle_grid(n: int = 25, margin: float = 0.02) -> tuple[Tensor, Tensor]:
    """Points of an n × n grid on [margin, 1 - margin]² with x_w + x_l ≤ 1 - margin, float64."""
    axis = torch.linspace(margin, 1 - margin, n, dtype=torch.float64)
    x_w, x_l = torch.meshgrid(axis, axis, indexing="ij")
    keep = x_w + x_l <= 1 - margin + 1e-12
    return x_w[keep], x_l[keep]


def descent_field(
    objective: str,
    x_w: Tensor,
    x_l: Tensor,
    ref_w: float | Tensor | None = 0.5,
    ref_l: float | Tensor | None = 0.5,
    **hparams,
) -> pd.DataFrame:
    """-∇L in (x_w, x_l) at each point, its log10 magnitude and the push-down ratio."""
    obj = objectives.get(objective)
    refs = (ref_w, ref_l) if obj.needs_ref else (None, None)
    d_w, d_l = objectives.prob_partials(objective, x_w, x_l, *refs, **hparams)
    mag = torch.sqrt(d_w**2 + d_l**2)
    ratio = torch.where(d_w != 0, d_l.abs() / d_w.abs(), torch.nan)
    return pd.DataFrame(
        {
            "objective": objective,
            "x_w": x_w.numpy(),
            "x_l": x_l.numpy(),
            "u": (-d_w).numpy(),
            "v": (-d_l).numpy(),
            "log10_magnitude": torch.log10(mag).numpy(),
            "ratio": ratio.numpy(),
        }
    )


def autograd_partials(
    objective: str, x_w: Tensor, x_l: Tensor, ref_w=0.5, ref_l=0.5, **hparams
) -> tuple[Tensor, Tensor]:
    """The same partials by autograd through the objective with ℓ = log x (for checking)."""
    obj = objectives.get(objective)
    xw = x_w.detach().clone().requires_grad_(True)
    xl = x_l.detach().clone().requires_grad_(True)
    kw = {"chosen_logps": xw.log(), "rejected_logps": xl.log()}
    if obj.needs_ref:
        kw["ref_chosen_logps"] = torch.log(torch.as_tensor(ref_w, dtype=xw.dtype)).expand_as(xw)
        kw["ref_rejected_logps"] = torch.log(torch.as_tensor(ref_l, dtype=xw.dtype)).expand_as(xl)
    kw = obj.select_inputs(kw, hparams)
    g_w, g_l = torch.autograd.grad(obj(**kw, **hparams).sum(), (xw, xl), allow_unused=True)
    return g_w, (torch.zeros_like(xl) if g_l is None else g_l)


def asft_ratio(x_w: Tensor, x_l: Tensor, lam: float = 0.1) -> Tensor:
    """Paper B's closed form for ASFT: λ x_w / ((1 + λ)(1 - x_l))."""
    return lam * x_w / ((1 + lam) * (1 - x_l))


def point_table(objective: str, x_w: float, x_l: float, ref_w=0.5, ref_l=0.5, **hp):
    """One row: partials by closed form and by autograd, and the push-down ratio."""
    xw, xl = torch.tensor([x_w], dtype=torch.float64), torch.tensor([x_l], dtype=torch.float64)
    row = descent_field(objective, xw, xl, ref_w, ref_l, **hp).iloc[0].to_dict()
    a_w, a_l = autograd_partials(objective, xw, xl, ref_w, ref_l, **hp)
    row.update(
        {
            "dL/dx_w": -row.pop("u"),
            "dL/dx_l": -row.pop("v"),
            "autograd dL/dx_w": a_w.item(),
            "autograd dL/dx_l": a_l.item(),
        }
    )
    return row
