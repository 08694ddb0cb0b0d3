"""Per-sequence log-probabilities of responses, in fp32, chunked over the sequence.

For a sequence x_1..x_T with response mask m_t (1 on response tokens),

    ℓ = Σ_{t≥2} m_t log softmax(W h_{t-1})[x_t],      |y| = Σ_t m_t,      ℓ̄ = ℓ / |y|,

where h are the backbone's final hidden states and W the LM head. The (B, T, V) fp32 logits are
never materialised: the head and log-softmax run on ``chunk`` positions at a time, each chunk under
activation checkpointing (only its (B, chunk) token log-probs are kept for backward; the chunk's
logits are recomputed during backward). When the whole batch's fp32 logits would take at most
``checkpoint_mb`` MB, the recomputation is skipped (a small batch or vocabulary gains speed and
loses nothing that matters); 0 always checkpoints.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder returning last_hidden_state, LM head) of a causal LM, a PEFT model of one, or a
    ``PolicyLogps``."""
    if hasattr(model, "get_base_model"):  # peft: the LoRA-injected CausalLM
        model = model.get_base_model()
    backbone = getattr(model, model.base_model_prefix)
    return backbone, model.get_output_embeddings()


def logit_transform(config) -> tuple[float, float]:
    """(multiplier, softcap) applied to head outputs by some architectures (Cohere's
    ``logit_scale``, Granite's ``logits_scaling``, Gemma-2's ``final_logit_softcapping``)."""
    scale = float(getattr(config, "logit_scale", None) or 1.0)
    scaling = getattr(config, "logits_scaling", None)
    if scaling:
        scale /= float(scaling)
    cap = getattr(config, "final_logit_softcapping", None)
    return scale, float(cap or 0.0)


def _chunk_token_logps(
    hidden_BCH: Tensor,
    targets_BC: Tensor,
    head: nn.Module,
    scale: float,
    cap: float,
    temperature: float = 1.0,
) -> Tensor:
    logits_BCV = head(hidden_BCH).float()
    if scale != 1.0:
        logits_BCV = logits_BCV * scale
    if cap:
        logits_BCV = torch.tanh(logits_BCV / cap) * cap
    if temperature != 1.0:  # the sampling distribution's (TRL's online trainers)
        logits_BCV = logits_BCV / temperature
    picked_BC = logits_BCV.gather(-1, targets_BC.unsqueeze(-1)).squeeze(-1)
    return picked_BC - torch.logsumexp(logits_BCV, dim=-1)


def token_logps(
    hidden_BTH: Tensor,
    targets_BT: Tensor,
    head: nn.Module,
    config=None,
    chunk: int = 128,
    checkpoint_mb: float = 0.0,
    temperature: float = 1.0,
) -> Tensor:
    """log softmax(head(h_t) / temperature)[target_t] for every position, fp32, shape (B, T)."""
    scale, cap = logit_transform(config)
    b, t = targets_BT.shape
    logits_mb = b * t * head.weight.shape[0] * 4 / 2**20
    recompute = torch.is_grad_enabled() and logits_mb > checkpoint_mb
    out = []
    for s in range(0, hidden_BTH.shape[1], chunk):
        args = (hidden_BTH[:, s : s + chunk], targets_BT[:, s : s + chunk], head, scale, cap,
                temperature)  # fmt: skip
        if recompute:
            out.append(checkpoint(_chunk_token_logps, *args, use_reentrant=False))
        else:
            out.append(_chunk_token_logps(*args))
    return torch.cat(out, dim=1)


def sequence_logps(
    model: nn.Module,
    input_ids_BT: Tensor,
    attention_mask_BT: Tensor,
    loss_mask_BT: Tensor,
    chunk: int = 128,
    checkpoint_mb: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """(ℓ_B, |y|_B): summed response log-probs (fp32) and response token counts, one forward;
    the head and log-softmax run only on the positions from the first one any row counts
    (a round's prompt positions cost the backbone only, as TRL's ``logits_to_keep``)."""
    s, tok_BT = _response_token_logps(
        model, input_ids_BT, attention_mask_BT, loss_mask_BT, chunk, checkpoint_mb
    )
    mask_BT = loss_mask_BT[:, s + 1 :].to(tok_BT.dtype)
    return (tok_BT * mask_BT).sum(-1), loss_mask_BT[:, 1:].to(tok_BT.dtype).sum(-1)


def _response_token_logps(
    model, input_ids_BT, attention_mask_BT, loss_mask_BT, chunk, checkpoint_mb, temperature=1.0
) -> tuple[int, Tensor]:
    """(s, log-probs of the tokens at positions s+1…T-1): one backbone forward, the head and
    log-softmax only from the first position any row counts (the prompts' are never scored)."""
    backbone, head = backbone_and_head(model)
    hidden_BTH = backbone(input_ids=input_ids_BT, attention_mask=attention_mask_BT)[0]
    counted_T = loss_mask_BT[:, 1:].any(0)
    s = int(counted_T.float().argmax())  # 0 when none counts
    return s, token_logps(hidden_BTH[:, s:-1], input_ids_BT[:, s + 1 :], head, model.config,
                          chunk, checkpoint_mb, temperature)  # fmt: skip


def per_token_logps(
    model: nn.Module,
    input_ids_BT: Tensor,
    attention_mask_BT: Tensor,
    loss_mask_BT: Tensor,
    chunk: int = 128,
    checkpoint_mb: float = 0.0,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """(log-probs (B, T-1) of tokens 2…T at ``temperature``, 0 where not counted; their mask
    (B, T-1), the loss mask shifted): the per-token form of ``sequence_logps`` (TRL's online
    trainers' per-token losses). The width is the batch's, whatever the rows count, so passes
    over the same rows line up."""
    s, tok_BT = _response_token_logps(
        model, input_ids_BT, attention_mask_BT, loss_mask_BT, chunk, checkpoint_mb, temperature
    )
    mask_BT = loss_mask_BT[:, 1:].to(tok_BT.dtype)
    return torch.nn.functional.pad(tok_BT, (s, 0)) * mask_BT, mask_BT


class PolicyLogps(nn.Module):
    """Wraps a causal LM so that ``accelerate`` (DDP/FSDP) sees one forward returning
    (ℓ_B, |y|_B), or with ``temperature`` given the per-token (log-probs, mask)
    (``per_token_logps``). ``disable_adapter=True`` runs the PEFT base model (the LoRA
    reference)."""

    def __init__(self, model: nn.Module, chunk: int = 128, checkpoint_mb: float = 0.0):
        super().__init__()
        self.model = model
        self.chunk = chunk
        self.checkpoint_mb = checkpoint_mb

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        loss_mask: Tensor,
        disable_adapter: bool = False,
        temperature: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        ctx = self.model.disable_adapter() if disable_adapter else nullcontext()
        with ctx:
            if temperature is not None:
                return per_token_logps(self.model, input_ids, attention_mask, loss_mask,
                                       self.chunk, self.checkpoint_mb, temperature)  # fmt: skip
            return sequence_logps(
                self.model, input_ids, attention_mask, loss_mask, self.chunk, self.checkpoint_mb
            )
