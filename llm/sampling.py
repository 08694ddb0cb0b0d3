"""Sampling N responses per prompt behind a small interface, and the batches that score them.

``Sampler.sample(model, prompts, n, seed)`` returns ``Samples``: the generated tokens (B, Tg),
B = len(prompts)·n with the n samples of a prompt adjacent, and the response mask. The default
``HFSampler`` calls ``transformers`` ``generate`` (KV cache, left-padded prompts, temperature /
top-k / top-p, ``max_new_tokens``, stop at EOS). A faster engine (e.g. vLLM on a GPU) only needs
to implement ``sample``.

Masks: a response is its tokens up to and including the first EOS (all of them when it was cut
at ``max_new_tokens``); every token after the first EOS is padding and is never in the mask
(``response_mask``). Lengths exclude the EOS.

Seeding: generation draws from torch's global RNG, so ``sample`` forks it and seeds it with
``seed`` (``torch.random.fork_rng``): the samples are a pure function of (model, prompts, n,
seed) and the caller's RNG state is untouched. The rounds loop derives the seed from (run seed,
round, source), so a resumed run samples exactly what the uninterrupted one did without any
saved generator state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass
class Samples:
    """``tokens_BT`` generated ids (padding after the end); ``mask_BT`` 1 on response tokens
    (EOS included); ``lengths_B`` response tokens without EOS; ``ended_B`` whether EOS came."""

    tokens_BT: Tensor
    mask_BT: Tensor
    lengths_B: Tensor
    ended_B: Tensor


def response_mask(tokens_BT: Tensor, eos_ids: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """(mask_BT, lengths_B, ended_B) of generated tokens: the mask keeps every token up to and
    including the first EOS, and nothing after it."""
    is_eos_BT = torch.isin(tokens_BT, torch.tensor(list(eos_ids), device=tokens_BT.device))
    eos_before_BT = is_eos_BT.long().cumsum(-1) - is_eos_BT.long()
    mask_BT = (eos_before_BT == 0).long()
    ended_B = is_eos_BT.any(-1)
    return mask_BT, mask_BT.sum(-1) - ended_B.long(), ended_B


def eos_ids(tokenizer, model=None) -> tuple[int, ...]:
    """The tokens that end a response: the tokenizer's EOS and those of the model's generation
    config (chat models often list an end-of-turn token there)."""
    ids = [tokenizer.eos_token_id]
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += gen if isinstance(gen, list) else [gen]
    return tuple(sorted({i for i in ids if i is not None}))


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(ids_PT, attention_mask_PT) of left-padded prompts."""
    T = max(map(len, prompts))
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, T - len(p) :] = 1
    return ids, mask


def scoring_batch(
    prompts: Sequence[Sequence[int]], n: int, samples: Samples, pad_id: int
) -> dict[str, Tensor]:
    """Right-padded prompt + response sequences for ``llm.logps.sequence_logps`` (B = P·n rows,
    the layout of the pairs path, so positions match it): ``input_ids``, ``attention_mask``,
    ``loss_mask`` (1 on response tokens, EOS included)."""
    ids_PT, pmask_PT = left_pad(prompts, pad_id)
    ids_BT = torch.cat([ids_PT.repeat_interleave(n, 0), samples.tokens_BT.cpu()], 1)
    resp_BT = samples.mask_BT.cpu()
    valid_BT = torch.cat([pmask_PT.repeat_interleave(n, 0), resp_BT], 1)
    loss_BT = torch.cat([torch.zeros_like(ids_PT).repeat_interleave(n, 0), resp_BT], 1)
    # shift each row left by its padding so the prompt starts at position 0
    shift_B = (ids_PT.shape[1] - pmask_PT.sum(-1)).repeat_interleave(n, 0)
    T = ids_BT.shape[1]
    pos_BT = torch.arange(T)[None] + shift_B[:, None]
    inside_BT = pos_BT < T
    idx_BT = pos_BT.clamp(max=T - 1)
    keep_BT = valid_BT.gather(1, idx_BT) * inside_BT
    width = int(keep_BT.sum(-1).max())
    out = {
        "input_ids": torch.where(keep_BT.bool(), ids_BT.gather(1, idx_BT), pad_id),
        "attention_mask": keep_BT,
        "loss_mask": loss_BT.gather(1, idx_BT) * inside_BT,
    }
    return {k: v[:, :width].contiguous() for k, v in out.items()}


class Sampler(Protocol):
    def sample(
        self, model, prompts: Sequence[Sequence[int]], n: int, seed: int
    ) -> Samples:  # pragma: no cover - interface
        ...


@dataclass
class HFSampler:
    """``transformers`` ``generate`` with sampling; the n samples of a prompt are adjacent."""

    pad_id: int
    eos_ids: tuple[int, ...]
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @torch.no_grad()
    def sample(self, model, prompts: Sequence[Sequence[int]], n: int, seed: int) -> Samples:
        device = next(model.parameters()).device
        ids_PT, mask_PT = left_pad(prompts, self.pad_id)
        ids_BT, mask_BT = ids_PT.repeat_interleave(n, 0), mask_PT.repeat_interleave(n, 0)
        was_training = model.training
        model.eval()
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.generate(
                input_ids=ids_BT.to(device),
                attention_mask=mask_BT.to(device),
                do_sample=True,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=list(self.eos_ids),
                use_cache=True,
            )
        model.train(was_training)
        tokens_BT = out[:, ids_BT.shape[1] :].cpu()
        mask, lengths, ended = response_mask(tokens_BT, self.eos_ids)
        tokens_BT = torch.where(mask.bool(), tokens_BT, self.pad_id)
        return Samples(tokens_BT, mask, lengths, ended)
