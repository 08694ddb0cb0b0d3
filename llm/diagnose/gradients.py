"""The model side: per response, ℓ = log π(y|x) with its graph and the summed last hidden states
(CHES); per pair, the gradients ∇ℓ_w, ∇ℓ_l over the chosen parameters and their inner products.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from llm.diagnose.config import require_field
from llm.logps import backbone_and_head, logit_transform
from runio import UserError


def response_forward(model: nn.Module, prompt: list[int], response: list[int], device):
    """(ℓ with its graph, |y|, S = Σ_k h(x, y_<k) in float64) for one prompt + response.

    h(x, y_<k) is the backbone's final hidden state at the position that predicts response token
    k (the LM head's input), as in ``llm.logps``; a response token at position 0 has no such
    position and is not counted (as there)."""
    backbone, head = backbone_and_head(model)
    ids = torch.tensor([list(prompt) + list(response)], device=device)
    hidden_TH = backbone(input_ids=ids, attention_mask=torch.ones_like(ids))[0][0]
    start = max(1, len(prompt))
    pos = torch.arange(start - 1, ids.shape[1] - 1, device=device)
    h_KH = hidden_TH[pos]
    logits_KV = head(h_KH)
    if logits_KV.dtype in (torch.float16, torch.bfloat16):
        logits_KV = logits_KV.float()
    scale, cap = logit_transform(getattr(model, "config", None))
    if scale != 1.0:
        logits_KV = logits_KV * scale
    if cap:
        logits_KV = torch.tanh(logits_KV / cap) * cap
    targets = ids[0, start:]
    tok_K = logits_KV.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits_KV, -1)
    return tok_K.sum(), len(targets), h_KH.detach().double().sum(0)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder's list of transformer blocks (the ModuleList as long as the layer count)."""
    backbone, _ = backbone_and_head(model)
    config = getattr(model, "config", None)
    n = None
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        n = n or getattr(config, name, None)
    for module in backbone.modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 0
            and (n is None or len(module) == n)
        ):
            return module
    raise UserError("--params last-k: cannot find the model's list of transformer blocks")


def select_params(model: nn.Module, kind: str, last_k: int = 1) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the chosen set; every other parameter is frozen."""
    if kind == "lora":
        chosen = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    elif kind == "last-k":
        blocks = transformer_blocks(model)
        require_field(last_k <= len(blocks), "last_k", f"the model has {len(blocks)} blocks")
        keep = {id(p) for b in list(blocks)[-last_k:] for p in b.parameters()}
        chosen = [(n, p) for n, p in model.named_parameters() if id(p) in keep]
    else:
        chosen = list(model.named_parameters())
    ids = {id(p) for _, p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    if not chosen:
        raise UserError(f"--params {kind}: the model has no such parameters")
    return chosen


def param_grads(value: Tensor, params: list[Tensor]) -> list[Tensor]:
    gs = torch.autograd.grad(value, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def flat_dot(a: list[Tensor], b: list[Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def ches(s_w: Tensor, s_l: Tensor, n_w: int | None = None, n_l: int | None = None) -> float:
    """⟨S⁺, S⁻⟩ − ‖S⁺‖² (Razin et al. 2024); with token counts, of S⁺/|y⁺| and S⁻/|y⁻|."""
    if n_w is not None:
        s_w, s_l = s_w / n_w, s_l / n_l
    return float(s_w @ s_l - s_w @ s_w)


def rejected_prompt(ex) -> tuple[int, ...]:
    """The prompt the rejected response is scored under: its own for unpaired rows matched into
    a pair (``Example.rejected_prompt_ids``, as ``llm.data.collate`` does), else the pair's."""
    return getattr(ex, "rejected_prompt_ids", None) or ex.prompt_ids


def pair_quantities(model, params: list[Tensor], ex, device) -> dict:
    """ℓ, |y|, ℓ̄, P of both responses of ``ex`` (an ``llm.data.Example``), CHES (both forms)
    and the gradient inner products; also returns the two gradients (lists over ``params``)
    under ``_g_w``/``_g_l``. Cost: one forward and one backward per response."""
    lw, nw, s_w = response_forward(model, ex.prompt_ids, ex.chosen_ids, device)
    g_w = param_grads(lw, params)
    ll, nl, s_l = response_forward(model, rejected_prompt(ex), ex.rejected_ids, device)
    g_l = param_grads(ll, params)
    lw, ll = lw.item(), ll.item()
    return {
        "len_w": nw,
        "len_l": nl,
        "logp_w": lw,
        "logp_l": ll,
        "logp_mean_w": lw / nw,
        "logp_mean_l": ll / nl,
        "P_w": math.exp(lw / nw),
        "P_l": math.exp(ll / nl),
        "ches": ches(s_w, s_l),
        "ches_norm": ches(s_w, s_l, nw, nl),
        "grad_ww": flat_dot(g_w, g_w),
        "grad_ll": flat_dot(g_l, g_l),
        "grad_wl": flat_dot(g_w, g_l),
        "_g_w": g_w,
        "_g_l": g_l,
    }


def flatten_grads(grads: list[Tensor]) -> Tensor:
    """One CPU vector of the gradients, in the parameters' floating dtype (at least float32)."""
    dtype = torch.promote_types(grads[0].dtype, torch.float32)
    return torch.cat([g.detach().reshape(-1).to("cpu", dtype) for g in grads])


def gram(M: Tensor, chunk: int = 1 << 20) -> Tensor:
    """M Mᵀ in float64, accumulated over column chunks of products in M's dtype (rows × P)."""
    K = torch.zeros(M.shape[0], M.shape[0], dtype=torch.float64)
    for c in range(0, M.shape[1], chunk):
        block = M[:, c : c + chunk]
        K += (block @ block.T).double()
    return K
