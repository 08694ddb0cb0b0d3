"""Adam on one (S, D) parameter matrix, with a learning rate per row.

Rows are independent runs (seeds, or the grid points of a sweep), so a per-row learning rate
lets runs that differ only in ``lr`` share one computation. The arithmetic is torch's Adam
(betas 0.9/0.999, ε 1e-8, no weight decay, bias-corrected):
m ← β₁m + (1-β₁)g, v ← β₂v + (1-β₂)g², θ ← θ - lr/(1-β₁ᵏ) · m / (√v/√(1-β₂ᵏ) + ε),
done by torch's fused CPU kernel (one pass over θ, g, m, v) once per distinct learning rate,
on the rows that share it. No ``torch.optim`` machinery: in the bandit loop its Python overhead
was larger than the update, and with 45 rows the single pass is 2.5x faster than separate
tensor operations (the step is memory-bound: 20 MB per tensor).
"""

from __future__ import annotations

import torch
from torch import Tensor


class RowAdam:
    """Adam for ``param`` (S, D) with ``lr`` a float or an (S,) tensor."""

    def __init__(self, param: Tensor, lr: float | Tensor, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.betas, self.eps = param, betas, eps
        s = param.shape[0]
        lr_S = torch.as_tensor(lr, dtype=torch.float64).reshape(-1).expand(s).tolist()
        self.groups: dict[float, list[int]] = {}
        for row, value in enumerate(lr_S):
            self.groups.setdefault(value, []).append(row)
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.step_count = torch.zeros((), dtype=torch.float32)
        """Every row takes every step, so one count serves all (the bias corrections)."""
        # per-group lists of row views, built once (Adam updates them in place); the kernel
        # runs on each row as its own tensor, so its results do not depend on the grouping
        p, m, v = param.data, self.m, self.v
        self.views = {lr: ([p[i] for i in rows], [m[i] for i in rows], [v[i] for i in rows])
                      for lr, rows in self.groups.items()}  # fmt: skip

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        self.step_count += 1.0
        b1, b2 = self.betas
        rows_of_grad = grad.unbind(0)
        for lr, rows in self.groups.items():
            p, m, v = self.views[lr]
            torch._fused_adam_(
                p,
                [rows_of_grad[i] for i in rows],
                m,
                v,
                [],
                [self.step_count] * len(rows),
                lr=lr,
                beta1=b1,
                beta2=b2,
                weight_decay=0.0,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )
