"""Bandit policies batched over seeds: every parameter has a leading seed dimension S, so S
independent runs are one computation (Adam is elementwise, so seeds never interact).

``logits(contexts_SCD) -> logits_SCK``. Two kinds:
- ``MLPPolicy``: paper A's context MLP 100 → 50 (LayerNorm, ReLU) → 256 (ReLU) → 256 (ReLU) → 100,
  Xavier-uniform weights with gain 0.01, zero biases.
- ``TabularPolicy``: one logits vector per seed shared by all contexts (exact analysis).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MLP_SIZES = (100, 50, 256, 256, 100)
LN_EPS = 1e-5
"""LayerNorm's ε (torch's default, as in ``F.layer_norm``)."""


def _xavier(fan_in: int, fan_out: int, gain: float, generators: Sequence[torch.Generator]):
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return torch.stack(
        [(torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound for g in generators]
    )


class MLPPolicy(nn.Module):
    """S independent copies of paper A's MLP, evaluated with batched matrix products."""

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        sizes: Sequence[int] = MLP_SIZES,
        gain: float = 0.01,
    ):
        super().__init__()
        s = len(generators)
        self.weights = nn.ParameterList(
            [nn.Parameter(_xavier(i, o, gain, generators)) for i, o in itertools.pairwise(sizes)]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(s, 1, o)) for o in sizes[1:]])
        self.ln_weight = nn.Parameter(torch.ones(s, 1, sizes[1]))
        self.ln_bias = nn.Parameter(torch.zeros(s, 1, sizes[1]))
        self._layers = (tuple(self.weights), tuple(self.biases))
        """The same Parameter objects as plain tuples for the hand-written step (indexing a
        ParameterList costs ~2 µs a time: 60 µs of a 0.7 ms step). ``flatten_parameters`` and
        ``load_state_dict`` change their data, never the objects. ``forward`` reads the lists,
        so ``torch.func.functional_call`` (which swaps them) still works there."""

    def forward(self, contexts_SCD: Tensor) -> Tensor:
        # plain tuples: slicing a ParameterList builds a new Module
        return _mlp_logits(tuple(self.weights), tuple(self.biases), self.ln_weight,
                           self.ln_bias, contexts_SCD)  # fmt: skip

    def forward_params(self, params: dict[str, Tensor], contexts_SCD: Tensor) -> Tensor:
        """``forward`` with the parameters given by name (as ``named_parameters``), leaving
        the module untouched (unlike ``torch.func.functional_call``, which swaps them in and
        out): safe from another thread, and a few Python calls instead of a reparametrisation."""
        n = len(self.weights)
        return _mlp_logits([params[f"weights.{i}"] for i in range(n)],
                           [params[f"biases.{i}"] for i in range(n)],
                           params["ln_weight"], params["ln_bias"], contexts_SCD)  # fmt: skip

    @torch.no_grad()
    def forward_saving(self, contexts_SCD: Tensor) -> tuple[Tensor, tuple]:
        """``forward`` without autograd, keeping what ``backward_into`` needs."""
        ws, bs = self._layers
        z = torch.baddbmm(bs[0], contexts_SCD, ws[0])
        centred = z - z.mean(-1, keepdim=True)
        rstd = torch.rsqrt(centred.square().mean(-1, keepdim=True).add_(LN_EPS))
        xhat = centred.mul_(rstd)
        h = torch.addcmul(self.ln_bias, xhat, self.ln_weight)
        acts = []  # the ReLUs' outputs, inputs of the later layers
        for w, b in zip(ws[1:], bs[1:]):
            acts.append(F.relu(h))
            h = torch.baddbmm(b, acts[-1], w)
        return h, (contexts_SCD, xhat, rstd, acts)

    @torch.no_grad()
    def backward_into(self, saved: tuple, grad_logits_SCK: Tensor) -> None:
        """Hand-written backward of ``forward_saving``: given the loss's gradient with respect
        to the logits, write its gradient with respect to every parameter into that
        parameter's ``.grad`` (overwriting it; with ``flatten_parameters`` these are views of
        one (S, D) matrix). About half the tensor operations of autograd on this graph and
        none of its bookkeeping; ``tests/test_toy_sweep.py`` checks it against autograd."""
        x, xhat, rstd, acts = saved
        ws, bs = self._layers
        dz = grad_logits_SCK
        for i in range(len(ws) - 1, 0, -1):
            act = acts[i - 1]  # ReLU(pre) ≤ 0 exactly where pre ≤ 0: the same mask
            torch.bmm(act.transpose(1, 2), dz, out=ws[i].grad)
            torch.sum(dz, 1, keepdim=True, out=bs[i].grad)
            dz = torch.ops.aten.threshold_backward(torch.bmm(dz, ws[i].transpose(1, 2)), act, 0)
        torch.sum(dz * xhat, 1, keepdim=True, out=self.ln_weight.grad)
        torch.sum(dz, 1, keepdim=True, out=self.ln_bias.grad)
        dxhat = dz.mul_(self.ln_weight)
        proj = (dxhat * xhat).mean(-1, keepdim=True)
        dz0 = (dxhat - dxhat.mean(-1, keepdim=True)).sub_(xhat * proj).mul_(rstd)
        torch.bmm(x.transpose(1, 2), dz0, out=ws[0].grad)
        torch.sum(dz0, 1, keepdim=True, out=bs[0].grad)


def _mlp_logits(ws, bs, ln_weight, ln_bias, contexts_SCD: Tensor) -> Tensor:
    h = torch.baddbmm(bs[0], contexts_SCD, ws[0])
    h = F.layer_norm(h, h.shape[-1:]) * ln_weight + ln_bias
    for w, b in zip(ws[1:], bs[1:]):
        h = torch.baddbmm(b, F.relu(h), w)
    return h


class TabularPolicy(nn.Module):
    """One logits vector per seed, the same for every context; starts uniform."""

    def __init__(self, generators: Sequence[torch.Generator], n_arms: int = MLP_SIZES[-1]):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(len(generators), 1, n_arms))

    def forward(self, contexts_SCD: Tensor) -> Tensor:
        return self.forward_params({"table": self.table}, contexts_SCD)

    def forward_params(self, params: dict[str, Tensor], contexts_SCD: Tensor) -> Tensor:
        """``forward`` with the table given (see ``MLPPolicy.forward_params``)."""
        return params["table"].expand(contexts_SCD.shape[0], contexts_SCD.shape[1], -1)


POLICIES = {"mlp": MLPPolicy, "tabular": TabularPolicy}


def kl_to_reference(logp_SCK: Tensor, ref_logp_K: Tensor) -> Tensor:
    """Reverse KL(π(·|x) ‖ π_ref) per seed and context, shape (S, C)."""
    return (logp_SCK.exp() * (logp_SCK - ref_logp_K)).sum(-1)


def fit_to_reference(
    policy: nn.Module, contexts_SCD: Tensor, ref_logp_K: Tensor, steps: int = 100, lr: float = 0.01
) -> Tensor:
    """Paper A's "SFT" initialisation: full-batch Adam on the mean over training contexts of
    KL(π_θ(·|x) ‖ π_ref). Returns the final mean KL per seed, shape (S,).

    The policy's parameters become views of one flat matrix (``flatten_parameters``); Adam is
    ``toy.optim.RowAdam`` (torch's fused kernel without ``torch.optim``, whose import alone
    pulls in torch._dynamo: 1.5 s of a 3 s command)."""
    from toy.optim import RowAdam

    flat = flatten_parameters(policy)
    opt = RowAdam(flat, lr)
    fused = hasattr(policy, "backward_into")
    for _ in range(steps):
        if fused:
            logits, saved = policy.forward_saving(contexts_SCD)
            logits.requires_grad_(True)
        else:
            logits = policy(contexts_SCD)
            flat.grad.zero_()
        kl_S = kl_to_reference(torch.log_softmax(logits, -1), ref_logp_K).mean(-1)
        kl_S.sum().backward()
        if fused:
            policy.backward_into(saved, logits.grad)
        opt.step(flat.grad)
    with torch.no_grad():
        return kl_to_reference(torch.log_softmax(policy(contexts_SCD), -1), ref_logp_K).mean(-1)


def flatten_parameters(policy: nn.Module) -> nn.Parameter:
    """Re-home every parameter (each with a leading seed dim S) and its gradient as views of one
    (S, D) tensor, returned as a single parameter for the optimiser.

    Backward accumulates in place into the preset ``.grad`` views, so after it the returned
    parameter's ``.grad`` holds every gradient: one fused Adam call, one zeroing and one
    per-seed norm per step instead of one of each per parameter (the loop is overhead-bound).
    Zero its ``.grad`` in place; never set the policy's gradients to None.
    """
    params = list(policy.parameters())
    s = params[0].shape[0]
    flat = nn.Parameter(torch.cat([p.detach().reshape(s, -1) for p in params], dim=1))
    flat.grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        size = p[0].numel()
        p.data = flat.data[:, offset : offset + size].view(p.shape)
        p.grad = flat.grad[:, offset : offset + size].view(p.shape)
        offset += size
    return flat
