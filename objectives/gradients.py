"""Closed-form gradients of the objectives for a tabular softmax policy and in probability space.

Tabular softmax (docs/science.md §4): with π = softmax(z) over K arms, ∂ℓ(y)/∂z = e_y - π, so for a
loss whose partial with respect to ℓ(y_b) is g_b,

    ∂L/∂z = (1/B) Σ_b g_b (e_{y_b} - π)           (mean over the B examples of the batch)

Probability space (paper B): with x₁ = π(y_w), x₂ = π(y_l) as free coordinates and ℓ = log x,
∂L/∂x₁ = g_w / x₁ and ∂L/∂x₂ = g_l / x₂. In the bandit a response is one arm, so summed and
per-token-mean log-probs coincide and these apply to every pairwise objective unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from objectives.registry import get

# which arm index tensor each differentiable log-prob input refers to
_ARM_OF = {"chosen_logps": "chosen", "rejected_logps": "rejected", "logps": "arms"}
_REF_OF = {"chosen": "ref_chosen_logps", "rejected": "ref_rejected_logps", "arms": "ref_logps"}


def softmax_logit_grad(logits_K: Tensor, arms: Tensor, coeffs: Tensor) -> Tensor:
    """Σ_b g_b (e_{y_b} - π) for arms y_b (any shape) with coefficients g_b of the same shape."""
    pi_K = torch.softmax(logits_K, dim=-1)
    onehot_sum_K = torch.zeros_like(pi_K).index_add_(0, arms.reshape(-1), coeffs.reshape(-1))
    return onehot_sum_K - coeffs.sum() * pi_K


def tabular_inputs(
    name: str,
    logits_K: Tensor,
    ref_logps_K: Tensor | None = None,
    old_logps_K: Tensor | None = None,
    **arms_and_rewards: Tensor,
) -> dict[str, Tensor]:
    """The keyword inputs of objective ``name`` for a single-context tabular softmax policy.

    ``arms_and_rewards`` holds ``chosen``/``rejected`` arm indices (B,) for pairs and chosen-only
    objectives, or ``arms`` (P, N) and ``rewards`` (P, N) for groups.
    """
    obj = get(name)
    logps_K = torch.log_softmax(logits_K, dim=-1)
    out: dict[str, Tensor] = {}
    for key, idx in arms_and_rewards.items():
        if key == "rewards":
            out["rewards"] = idx
            continue
        out[{"chosen": "chosen_logps", "rejected": "rejected_logps", "arms": "logps"}[key]] = (
            logps_K[idx]
        )
        if ref_logps_K is not None:
            out[_REF_OF[key]] = ref_logps_K[idx]
        if old_logps_K is not None and key == "arms":
            out["old_logps"] = old_logps_K[idx]
    return obj.select_inputs(out, missing_hint=" to the tabular gradient")


def tabular_logit_grad(
    name: str,
    logits_K: Tensor,
    *,
    ref_logps_K: Tensor | None = None,
    old_logps_K: Tensor | None = None,
    hparams: dict | None = None,
    **arms_and_rewards: Tensor,
) -> Tensor:
    """Closed-form ∂(mean loss)/∂z of objective ``name`` for π = softmax(z), shape (K,)."""
    obj = get(name)
    inputs = tabular_inputs(name, logits_K, ref_logps_K, old_logps_K, **arms_and_rewards)
    partials = obj.partials(**inputs, **obj.validate_hparams(hparams or {}))
    n_examples = next(iter(partials.values())).shape[0]
    grad_K = torch.zeros_like(logits_K)
    for key, g in partials.items():
        grad_K = grad_K + softmax_logit_grad(logits_K, arms_and_rewards[_ARM_OF[key]], g)
    return grad_K / n_examples


def prob_partials(
    name: str,
    x_w: Tensor,
    x_l: Tensor,
    ref_w: Tensor | float | None = None,
    ref_l: Tensor | float | None = None,
    **hparams,
) -> tuple[Tensor, Tensor]:
    """(∂L/∂π(y_w), ∂L/∂π(y_l)) of a pairwise or chosen-only objective at x_w = π(y_w),
    x_l = π(y_l) (tensors of any common shape), given reference probabilities when needed."""
    obj = get(name)
    if obj.data == "groups":
        raise ValueError(f"{name!r} consumes scored groups, not pairs")
    x_w, x_l = torch.as_tensor(x_w), torch.as_tensor(x_l)
    inputs = {"chosen_logps": x_w.log(), "rejected_logps": x_l.log()}
    if obj.needs_ref:
        if ref_w is None or ref_l is None:
            raise ValueError(f"{name!r} needs reference probabilities ref_w and ref_l")
        inputs["ref_chosen_logps"] = torch.as_tensor(ref_w, dtype=x_w.dtype).log()
        inputs["ref_rejected_logps"] = torch.as_tensor(ref_l, dtype=x_w.dtype).log()
    hparams = obj.validate_hparams(hparams)
    g = obj.partials(**{k: v for k, v in inputs.items() if k in obj.inputs}, **hparams)
    d_w = g["chosen_logps"] / x_w
    d_l = g.get("rejected_logps", torch.zeros_like(x_l)) / x_l
    return d_w, d_l


def pushdown_ratio(name: str, x_w, x_l, ref_w=None, ref_l=None, **hparams) -> Tensor:
    """|∂L/∂π(y_l)| / |∂L/∂π(y_w)|: how much faster the loss pushes y_l down than y_w up."""
    d_w, d_l = prob_partials(name, x_w, x_l, ref_w, ref_l, **hparams)
    return d_l.abs() / d_w.abs()
