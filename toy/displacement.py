"""Likelihood displacement (paper A, finding 2): a linear-softmax policy π = softmax(E θ) whose
arm embeddings for y_w and y_l have a chosen cosine similarity and norm ratio.

With shared features, one DPO step changes ℓ_w by η c (e_w - ē)ᵀ(e_w - e_l) (ē = Σ π e), which
is negative when e_l is nearly collinear with and longer than e_w: the chosen response loses
mass although the margin grows. A tabular policy (E = I) never displaces: there
(e_w - π)ᵀ(e_w - e_l) = 1 - π_w + π_l > 0.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import Tensor

from toy.mass import batch_loss

W, L = 0, 1  # indices of the chosen and rejected arms


def embeddings(
    n_arms: int = 20, dim: int = 8, cos: float = 0.95, norm_ratio: float = 1.5, seed: int = 0
) -> Tensor:
    """(K, d) embeddings: e_w a unit vector, e_l = norm_ratio·(cos·e_w + sin·v) with v ⊥ e_w,
    the other arms random with norm 1/√d·‖N(0, I)‖ ≈ 1."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n_arms, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    basis, _ = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=torch.float64))
    u, v = basis[:, 0], basis[:, 1]
    emb[W] = u
    emb[L] = norm_ratio * (cos * u + math.sqrt(max(0.0, 1 - cos**2)) * v)
    return emb


def train_pair(
    objective: str,
    emb_KD: Tensor | None,
    steps: int = 100,
    lr: float = 0.1,
    hparams=None,
    n_arms: int = 20,
) -> pd.DataFrame:
    """Plain gradient descent on the single pair (y_w, y_l) = (0, 1) from θ = 0 (uniform π, the
    reference). ``emb_KD=None`` is the tabular policy. One row per step: ℓ_w, ℓ_l, margin,
    and the mass on every other arm."""
    tabular = emb_KD is None
    dim = n_arms if tabular else emb_KD.shape[1]
    theta = torch.zeros(dim, dtype=torch.float64, requires_grad=True)
    ref = None
    rows = []
    for step in range(steps + 1):
        logits = theta if tabular else emb_KD @ theta
        logp = torch.log_softmax(logits, -1)
        if ref is None:
            ref = logp.detach()
        rows.append(
            {
                "step": step,
                "logp_w": logp[W].item(),
                "logp_l": logp[L].item(),
                "mass_other": 1 - logp[[W, L]].exp().sum().item(),
            }
        )
        if step == steps:
            break
        loss = batch_loss(
            objective, logp, ref, hparams, chosen=torch.tensor([W]), rejected=torch.tensor([L])
        )
        (g,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= lr * g
    df = pd.DataFrame(rows)
    df["margin"] = df.logp_w - df.logp_l
    df.insert(0, "objective", objective)
    return df


def displacement_table(
    objectives_: tuple[str, ...] = ("dpo", "ipo", "sft", "asft"),
    cosines: tuple[float, ...] = (0.99, 0.9, 0.5, 0.0, -0.5),
    norm_ratio: float = 1.5,
    steps: int = 100,
    lr: float = 0.1,
    hparams=None,
) -> pd.DataFrame:
    """Change of ℓ_w and of the margin after ``steps`` steps, per objective and similarity
    (plus the tabular policy, ``cos = nan``). ``displaced`` marks a fall of ℓ_w."""
    rows = []
    for name in objectives_:
        hp = (hparams or {}).get(name, {})
        cases = [(c, embeddings(cos=c, norm_ratio=norm_ratio)) for c in cosines]
        for cos, emb in [*cases, (float("nan"), None)]:
            df = train_pair(name, emb, steps, lr, hp)
            rows.append(
                {
                    "objective": name,
                    "cos": cos,
                    "policy": "tabular" if emb is None else "linear",
                    "delta_logp_w": df.logp_w.iloc[-1] - df.logp_w.iloc[0],
                    "delta_margin": df.margin.iloc[-1] - df.margin.iloc[0],
                    "delta_mass_other": df.mass_other.iloc[-1] - df.mass_other.iloc[0],
                }
            )
    out = pd.DataFrame(rows)
    out["displaced"] = out.delta_logp_w < 0
    return out
