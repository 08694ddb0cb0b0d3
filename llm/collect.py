"""Collect one round of Algorithm 1 on a language model: draw P prompts, sample N responses per
prompt (the first ``n_offline`` from the frozen reference, the rest from the current policy),
score them with the reward, and compute their sequence log-probs under the collecting policy and
the reference. The model-agnostic half (mixing counts, pairs, objective inputs) is ``rounds``.

Seeds: the prompts of round r are a permutation drawn from a generator seeded with
(seed, r); the samples of round r from each source use the seed (seed, r, source). Everything a
round draws is thus a pure function of the run seed and the round index: a resumed run collects
exactly what the uninterrupted run did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

import rounds
from llm.prompts import Prompt
from llm.reward_fns import parts_of, trl_context
from llm.rewards import score
from llm.sampling import Sampler, Samples, scoring_batch
from llm.shards import shard_seed


def round_seed(seed: int, round_index: int, source: int = 0) -> int:
    """The seed of one round's draw (source 0: prompts / policy samples, 1: reference)."""
    return (seed * 1_000_003 + round_index) * 4 + source


def draw_prompts(n_prompts: int, p: int, seed: int, round_index: int) -> Tensor:
    """P distinct prompt indices for the round (a permutation prefix), (P,)."""
    gen = torch.Generator().manual_seed(round_seed(seed, round_index))
    return torch.randperm(n_prompts, generator=gen)[:p]


def _cat_sources(off: Samples | None, on: Samples | None, p: int, pad_id: int) -> Samples:
    """Per prompt, the offline samples first, then the on-policy ones: (P·N, T) rows."""
    parts = [s for s in (off, on) if s is not None]
    width = max(s.tokens_BT.shape[1] for s in parts)

    def field(name: str, fill: int) -> Tensor:
        xs = []
        for s in parts:
            x = getattr(s, name)
            if x.dim() == 2:
                x = torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill)
            xs.append(x.reshape(p, -1, *x.shape[1:]))
        return torch.cat(xs, 1).flatten(0, 1)

    return Samples(field("tokens_BT", pad_id), field("mask_BT", 0), field("lengths_B", 0),
                   field("ended_B", 0))  # fmt: skip


def _cat_rows(parts: list[Samples], pad_id: int) -> Samples:
    """Samples of consecutive prompt shards as one (B, T) batch, right-padded to the widest."""
    if len(parts) == 1:
        return parts[0]
    width = max(s.tokens_BT.shape[1] for s in parts)

    def cat(name: str, fill: int) -> Tensor:
        xs = [getattr(s, name) for s in parts]
        if xs[0].dim() == 2:
            xs = [torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill) for x in xs]
        return torch.cat(xs)

    return Samples(cat("tokens_BT", pad_id), cat("mask_BT", 0), cat("lengths_B", 0),
                   cat("ended_B", 0))  # fmt: skip


@dataclass
class Collected:
    """A round's samples, rewards (P, N) and log-prob sums/counts (P, N) under the collecting
    policy and the reference; ``batch`` is the right-padded scoring batch (P·N rows). Without
    a policy pass (``llm.round_passes``) the policy sums are NaN until the training forward
    fills them; without a reference pass ``ref_sums_PN`` is None. On several processes
    (``llm.shards``) everything is the whole round's except ``samples`` and ``batch``, the token
    rows of this process's prompts ``block`` (positions in the round's P)."""

    prompt_idx: list[int]
    samples: Samples
    texts: list[str]
    rewards_PN: Tensor
    offline_PN: Tensor
    policy_sums_PN: Tensor
    ref_sums_PN: Tensor | None
    counts_PN: Tensor
    batch: dict[str, Tensor]
    time_generate: float
    time_score: float
    lengths_B: Tensor
    """Response tokens without EOS of every sample (P·N)."""
    ended_B: Tensor
    """Whether each sample ended with EOS (P·N)."""
    block: slice
    reward_parts: dict[str, Tensor] = field(default_factory=dict)
    """Each reward's values (P, N) when there are several (``llm.reward_fns``)."""
    policy_tok: Tensor | None = None
    ref_tok: Tensor | None = None
    """Per-token log-probs (rows of ``batch``, its width - 1) of the collecting policy and the
    reference, when the passes are per token (``llm.round_step.TOKEN_LEVEL``)."""


@torch.no_grad()
def _logps(fn: Callable, batch: dict, rows: Sequence[slice]) -> tuple[Tensor, Tensor, Tensor]:
    """(sums, counts, per-token log-probs or None) of a no-grad pass over the batch's rows; a
    per-token ``fn`` (``llm.logps.per_token_logps``: log-probs and mask) is summed."""
    a, b = zip(*(fn({k: v[r] for k, v in batch.items()}) for r in rows))
    a, b = torch.cat(a).float().cpu(), torch.cat(b).float().cpu()
    if a.dim() == 2:
        return a.sum(-1), b.sum(-1), a
    return a, b, None


def collect(
    prompts: Sequence[Prompt],
    prompt_idx: Sequence[int],
    n: int,
    n_offline: int,
    *,
    sampler: Sampler,
    policy_lm,
    reference_lm,
    policy_logps: Callable | None,
    ref_logps: Callable | None,
    reward_fn: Callable,
    tokenizer,
    seed: int,
    round_index: int,
    row_slices: Sequence[slice],
    prompts_file: str,
    shards: Sequence[int] = (0,),
    block: slice | None = None,
) -> Collected:
    """Sample, score and compute log-probs for one round. ``reference_lm`` is a context-manager
    factory yielding the reference LM (the frozen copy, or the LoRA model with adapters off);
    ``policy_logps``/``ref_logps`` map a scoring batch to (sums, counts), or are None to skip
    that pass (``llm.round_passes``). The prompts are sampled in ``len(shards)`` equal shards,
    each one draw per source seeded with the shard's index (``llm.shards``); ``block``: their
    positions in the round (default: all of it). A non-finite reward, or an exception the
    reward raises, is a ``UserError`` naming the prompt row (and sample), raised before any
    update (``llm.rewards.score``)."""
    p, pad_id = len(prompt_idx), tokenizer.pad_token_id
    ids = [prompts[i].ids for i in prompt_idx]
    t0 = time.perf_counter()
    per, parts = p // len(shards), []
    for j, shard in enumerate(shards):
        ids_j = ids[j * per : (j + 1) * per]
        off = on = None
        if n_offline:
            with reference_lm() as ref_lm:
                s1 = shard_seed(round_seed(seed, round_index, 1), shard)
                off = sampler.sample(ref_lm, ids_j, n_offline, s1)
        if n_offline < n:
            s2 = shard_seed(round_seed(seed, round_index, 2), shard)
            on = sampler.sample(policy_lm, ids_j, n - n_offline, s2)
        parts.append(_cat_sources(off, on, per, pad_id))
    samples = _cat_rows(parts, pad_id)
    t1 = time.perf_counter()
    texts = tokenizer.batch_decode(samples.tokens_BT, skip_special_tokens=True)
    token_ids = [row[m.bool()].tolist() for row, m in zip(samples.tokens_BT, samples.mask_BT)]
    prompt_texts = [prompts[i].text for i in prompt_idx for _ in range(n)]
    rows = [prompts[i].idx for i in prompt_idx]
    context = trl_context(prompts, prompt_idx, n, texts, round_index)
    rewards = score(reward_fn, prompt_texts, texts, token_ids, samples.lengths_B, rows,
                    prompts_file, context)  # fmt: skip
    parts = parts_of(reward_fn, p, n)
    batch = scoring_batch(ids, n, samples, pad_id)
    counts = batch["loss_mask"][:, 1:].sum(-1).float()
    pol_sums = torch.full((p * n,), float("nan"))  # filled by the training forward
    pol_tok = ref_sums = ref_tok = None
    if policy_logps is not None:
        pol_sums, counts, pol_tok = _logps(policy_logps, batch, row_slices)
    if ref_logps is not None:
        ref_sums, _, ref_tok = _logps(ref_logps, batch, row_slices)
        ref_sums = ref_sums.view(p, n)
    offline = rounds.offline_mask(n_offline, (p, n))
    col = Collected(
        list(prompt_idx), samples, texts, rewards, offline, pol_sums.view(p, n),
        ref_sums, counts.view(p, n), batch, t1 - t0, time.perf_counter() - t1,
        samples.lengths_B, samples.ended_B, slice(0, p) if block is None else block,
    )  # fmt: skip
    col.reward_parts, col.policy_tok, col.ref_tok = parts, pol_tok, ref_tok
    return col


def kl_estimate(col: Collected) -> float | None:
    """Sampled-sequence estimate of KL(π‖π_ref) (None without a reference pass): the mean of
    ℓ_π - ℓ_ref over the samples drawn from the policy; in a round without any (round 0,
    offline mode) the self-normalised importance-weighted mean over the reference's samples
    (weights π/π_ref)."""
    if col.ref_sums_PN is None:
        return None
    d_PN = col.policy_sums_PN - col.ref_sums_PN
    on = ~col.offline_PN
    if bool(on.any()):
        return float(d_PN[on].mean())
    w = torch.softmax(d_PN.flatten(), 0)
    return float((w * d_PN.flatten()).sum())


@torch.no_grad()
def evaluate_policy(
    prompts: Sequence[Prompt],
    n: int,
    *,
    sampler: Sampler,
    policy_lm,
    reward_fn: Callable,
    tokenizer,
    seed: int,
    round_index: int,
    prompts_file: str,
) -> dict[str, float]:
    """The current policy's own samples on fixed prompts (n each, seeded from (seed, round)):
    ``eval/reward/mean`` and ``eval/response/length_mean``. In offline mode the round's
    training samples come from the reference, so only these measure the policy."""
    ids = [p.ids for p in prompts]
    samples = sampler.sample(policy_lm, ids, n, round_seed(seed, round_index, 3))
    texts = tokenizer.batch_decode(samples.tokens_BT, skip_special_tokens=True)
    token_ids = [row[m.bool()].tolist() for row, m in zip(samples.tokens_BT, samples.mask_BT)]
    prompt_texts = [p.text for p in prompts for _ in range(n)]
    rows = [p.idx for p in prompts]
    context = trl_context(prompts, range(len(prompts)), n, texts, round_index)
    rewards = score(reward_fn, prompt_texts, texts, token_ids, samples.lengths_B, rows,
                    prompts_file, context)  # fmt: skip
    return {
        "eval/reward/mean": float(rewards.mean()),
        "eval/response/length_mean": float(samples.lengths_B.float().mean()),
    }
