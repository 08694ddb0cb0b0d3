"""Paper A's categorical bandit (docs/science.md §2): arms, reference policy, rewards, contexts.

Neither the reward nor the reference depends on the context; contexts only feed the policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

N_ARMS = 100
CONTEXT_DIM = 100

# name -> (centre, width) of the Gaussian bump exp(-((y - centre)/width)²); maximum 1
REWARDS: dict[str, tuple[float, float]] = {
    "R1": (70.0, 10.0),  # optimum where π_ref has little mass
    "R2": (20.0, 10.0),  # optimum near π_ref's mode
    "R1_w20": (70.0, 20.0),
    "R1_w30": (70.0, 30.0),
}


def reference_probs(
    n_arms: int = N_ARMS, loc: float = -0.7, scale: float = 0.4, dtype=torch.float64
) -> Tensor:
    """π_ref: the law of tanh(c), c ~ Cauchy(loc, scale), in n_arms equal bins on [-1, 1].

    Exact bin masses F(atanh(right edge)) - F(atanh(left edge)) with the Cauchy CDF F; the outer
    bins take the tails (atanh(±1) = ±∞). Shape (K,), sums to 1.
    """
    edges = torch.linspace(-1.0, 1.0, n_arms + 1, dtype=torch.float64)
    x = torch.atanh(edges)  # ±inf at the ends
    cdf = 0.5 + torch.atan((x - loc) / scale) / math.pi
    return cdf.diff().to(dtype)


def reward_vector(
    reward: str | Sequence[float] | Tensor, n_arms: int = N_ARMS, dtype=torch.float64
) -> Tensor:
    """The reward r(y) of every arm, shape (K,): a name from ``REWARDS`` or a user vector."""
    if isinstance(reward, str):
        if reward not in REWARDS:
            raise ValueError(
                f"unknown reward {reward!r}; choose from {sorted(REWARDS)} "
                "or pass a vector of per-arm rewards"
            )
        centre, width = REWARDS[reward]
        y = torch.arange(n_arms, dtype=dtype)
        return torch.exp(-(((y - centre) / width) ** 2))
    r = torch.as_tensor(reward, dtype=dtype)
    if r.shape != (n_arms,):
        raise ValueError(f"reward vector must have shape ({n_arms},), got {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        raise ValueError("reward vector contains NaN or infinite values")
    return r


def contexts(n: int, generator: torch.Generator, dim: int = CONTEXT_DIM) -> Tensor:
    """n i.i.d. uniform contexts in [0, 1]^dim, float32, shape (n, dim)."""
    return torch.rand(n, dim, generator=generator)
