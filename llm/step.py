"""The loss of a batch from registry metadata, its per-pair statistics, and one optimiser step.

Dispatch reads only the objective's metadata: ``uses_mean_logps(hparams)`` picks ℓ̄ = ℓ/|y| over
ℓ (``needs_mean_logps``, or a ``length_norm="mean"`` hyperparameter), ``needs_ref`` whether
reference log-probs are required, ``inputs``/``optional_inputs`` which keys are passed, and
``required_inputs(hparams)`` which optional ones a hyperparameter makes necessary. The harness
builds both such inputs the registry has:

- ``chosen_full_logps`` (ORPO's ``nll="all"``): a second forward of the chosen rows with every
  token after the first counted (prompt and response).
- ``kl_logps`` / ``ref_kl_logps`` (KTO's ``z0="mismatched"``): the batch's 2B rows (chosen rows,
  then rejected rows, as ``llm.data.collate`` lays them out, i.e. B desirable then B undesirable
  examples for matched unpaired rows) rotated as TRL's ``KTOTrainer`` rotates its batch: row r's
  prompt with row r-1's completion (row 0 with the last row's), ``mismatched_batch``. The policy
  scores these under ``torch.no_grad()`` (z0 is detached) and the reference with
  ``reference.score_new``; they follow the objective's ℓ / ℓ̄ convention (TRL's: summed ℓ).
  With several processes the log-probs are gathered, so z0 is the mean over every process's
  mismatched rows, as TRL's gathered estimate (equal per-process batches).

Normalisation: an optimiser step sees N pairs in total (micro-batches × processes); each
micro-batch contributes Σ_b loss_b · W / N to the backward pass (W processes, whose gradients DDP
averages), so the update is that of the mean loss over all N pairs. That holds for per-pair
losses only: a batch-coupled objective (``Objective.batch_coupled``, AOT) is refused for a step of
several micro-batches or processes (``TrainConfig`` refuses --grad-accum > 1 and a launcher's
process count up front).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

import objectives
from objectives import Objective
from runio import NonFiniteError, UserError

# per-pair statistics summed over pairs and divided by the pair count when logged
PAIR_KEYS = (
    "loss",
    "logps/chosen",  # ℓ_w, summed over response tokens
    "logps/rejected",
    "logps/chosen_mean",  # ℓ̄_w = ℓ_w / |y_w|
    "logps/rejected_mean",
    "mass/chosen",  # exp(ℓ̄_w): geometric-mean per-token probability of y_w
    "mass/rejected",
    "rewards/chosen",  # ρ_w = ℓ_w - ℓ_ref(y_w) (in the objective's sum/mean convention)
    "rewards/rejected",
    "margin/implicit",  # h = ρ_w - ρ_l
    "pairs/accuracy",  # 1[h > 0]
)


BUILT_OPTIONAL = ("chosen_full_logps", "kl_logps", "ref_kl_logps")
"""Optional objective inputs this harness can build when a hyperparameter requires them."""


def check_buildable(obj: Objective, hparams: dict | None) -> None:
    """A ``UserError`` when the hyperparameters make the objective require an input the harness
    does not compute (none of the registry's today; kept for new optional inputs)."""
    extra = set(obj.required_inputs(hparams)) - set(obj.inputs) - set(BUILT_OPTIONAL)
    if extra:
        raise UserError(
            f"objective {obj.name!r} with these hyperparameters needs {sorted(extra)}, which the "
            "LLM harness does not compute; change the hyperparameter (see the objective's "
            "docstring)"
        )


def mismatched_batch(batch: dict[str, Tensor], max_len: int | None = None) -> dict[str, Tensor]:
    """The batch's R rows with mismatched completions, TRL's ``KTOTrainer`` rotation by one:
    row r is row r's prompt followed by row (r-1) mod R's completion (row 0 takes the last
    row's). Prompt = attended tokens outside ``loss_mask``, completion = tokens in it (a
    right-padded batch as ``llm.data.collate`` makes it). Right-padded; rows longer than
    ``max_len`` are cut from the right, as TRL cuts them at ``max_length`` (None: no cut; a
    row may then be longer than the batch's). Returns ``input_ids``, ``attention_mask``,
    ``loss_mask`` on the batch's device."""
    ids, att, lm = batch["input_ids"], batch["attention_mask"].bool(), batch["loss_mask"].bool()
    prompt = att & ~lm
    # each row's prompt tokens, then its completion tokens, packed to the front in their order
    # (a stable sort on "not in the set" keeps the set's tokens first, in place order)
    p_ids = ids.gather(1, torch.sort((~prompt).int(), dim=1, stable=True).indices)
    c_ids = ids.gather(1, torch.sort((~lm).int(), dim=1, stable=True).indices)
    p_len, c_len = prompt.sum(1, keepdim=True), lm.sum(1, keepdim=True)
    c_ids, c_len = c_ids.roll(1, dims=0), c_len.roll(1, dims=0)  # row r gets row r-1's
    T = int((p_len + c_len).max())
    T = T if max_len is None else min(T, max_len)
    t = torch.arange(T, device=ids.device).expand(ids.shape[0], T)
    in_prompt, in_seq = t < p_len, t < p_len + c_len
    width = ids.shape[1]
    from_p = p_ids.gather(1, t.clamp(max=width - 1))
    from_c = c_ids.gather(1, (t - p_len).clamp(0, width - 1))
    out_ids = torch.where(in_prompt, from_p, torch.where(in_seq, from_c, 0))
    return {"input_ids": out_ids, "attention_mask": in_seq.to(batch["attention_mask"].dtype),
            "loss_mask": (in_seq & ~in_prompt).to(batch["loss_mask"].dtype)}  # fmt: skip


def process_gather(accelerator) -> Callable[[Tensor], Tensor] | None:
    """Concatenation over processes along dim 0 (rows a process lacks padded with NaN, which
    the objectives' finite means skip), or None with one process."""
    if accelerator.num_processes == 1:
        return None

    def gather(x: Tensor) -> Tensor:
        x = accelerator.pad_across_processes(x.contiguous(), dim=0, pad_index=float("nan"))
        return accelerator.gather(x)

    return gather


def pair_inputs(
    obj: Objective,
    sums_2B: Tensor,
    counts_2B: Tensor,
    ref: tuple[Tensor, Tensor] | None,
    hparams: dict | None = None,
    full_chosen: tuple[Tensor, Tensor] | None = None,
    mismatched: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The offline-pairs mode's inputs (a round's are ``rounds.objective_inputs``): the keyword
    tensors ``obj.fn`` takes, from concatenated [chosen; rejected] log-prob sums
    and token counts (and the reference's, if any; ``full_chosen``: the chosen rows' sums and
    counts over every token after the first; ``mismatched``: (policy sums, counts, reference
    sums, counts) of the mismatched rows, any length). Raises if a required input is
    missing."""
    B = sums_2B.shape[0] // 2
    mean = obj.uses_mean_logps(hparams)
    logps_2B = sums_2B / counts_2B if mean else sums_2B
    out = {"chosen_logps": logps_2B[:B], "rejected_logps": logps_2B[B:]}
    if ref is not None:
        ref_sums_2B, ref_counts_2B = ref
        ref_2B = ref_sums_2B / ref_counts_2B if mean else ref_sums_2B
        out["ref_chosen_logps"], out["ref_rejected_logps"] = ref_2B[:B], ref_2B[B:]
    if full_chosen is not None:
        out["chosen_full_logps"] = full_chosen[0] / full_chosen[1]
    if mismatched is not None:
        kl_sums, kl_counts, ref_kl_sums, ref_kl_counts = mismatched
        out["kl_logps"] = kl_sums / kl_counts if mean else kl_sums
        out["ref_kl_logps"] = ref_kl_sums / ref_kl_counts if mean else ref_kl_sums
    return obj.select_inputs(out, hparams, " (no reference given?)")


def pair_stats(
    obj: Objective,
    loss_B: Tensor,
    sums_2B: Tensor,
    counts_2B: Tensor,
    ref: tuple[Tensor, Tensor] | None,
    hparams: dict | None = None,
) -> Tensor:
    """(B, len(PAIR_KEYS)) detached per-pair statistics (see ``PAIR_KEYS``)."""
    with torch.no_grad():
        B = sums_2B.shape[0] // 2
        mean = obj.uses_mean_logps(hparams)
        means_2B = sums_2B / counts_2B
        lp_2B = means_2B if mean else sums_2B
        ref_2B = None
        if ref is not None:
            ref_2B = ref[0] / ref[1] if mean else ref[0]
        rho_2B = objectives.implicit_rewards(lp_2B, ref_2B)
        h_B = rho_2B[:B] - rho_2B[B:]
        cols = [loss_B, sums_2B[:B], sums_2B[B:], means_2B[:B], means_2B[B:]]
        cols += [means_2B[:B].exp(), means_2B[B:].exp(), rho_2B[:B], rho_2B[B:], h_B]
        cols.append((h_B > 0).to(sums_2B.dtype))
        return torch.stack([c.detach().float() for c in cols], dim=1)


def mismatched_logps(policy, reference, batch, split: str, gather=None, max_len=None):
    """(policy sums, counts, reference sums, counts) of ``mismatched_batch(batch, max_len)``,
    no gradient; ``gather`` (``process_gather``) concatenates them over processes."""
    mb = mismatched_batch(batch, max_len)
    with torch.no_grad():
        kl_sums, kl_counts = policy(mb["input_ids"], mb["attention_mask"], mb["loss_mask"])
    ref_sums, ref_counts = reference.score_new(mb, split)
    cols = torch.stack([kl_sums, kl_counts, ref_sums.to(kl_sums), ref_counts.to(kl_sums)], 1)
    cols = cols.detach().float()
    if gather is not None:
        cols = gather(cols)
    return tuple(cols.unbind(1))


def batch_loss(
    policy,
    reference,
    batch,
    obj: Objective,
    hparams: dict,
    split: str = "train",
    gather=None,
    max_len: int | None = None,
):
    """(loss_B, stats_BK) of one batch: one concatenated chosen+rejected forward of the policy
    (plus the no-grad mismatched rows of KTO's ``z0="mismatched"``, cut at ``max_len`` and
    gathered over processes with ``gather``, and the chosen rows' full forward of ORPO's
    ``nll="all"``)."""
    check_buildable(obj, hparams)
    required = obj.required_inputs(hparams)
    sums_2B, counts_2B = policy(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    ref = reference(batch, split)
    full = mismatched = None
    if "chosen_full_logps" in required:
        B = batch["input_ids"].shape[0] // 2
        ids, att = batch["input_ids"][:B], batch["attention_mask"][:B]
        full = policy(ids, att, att)  # every token after the first: prompt and response
    if "kl_logps" in required:
        mismatched = mismatched_logps(policy, reference, batch, split, gather, max_len)
    inputs = pair_inputs(obj, sums_2B, counts_2B, ref, hparams, full, mismatched)
    loss_B = obj.fn(**inputs, **hparams)
    return loss_B, pair_stats(obj, loss_B, sums_2B, counts_2B, ref, hparams)


def train_step(
    accelerator,
    policy,
    reference,
    optimizer,
    scheduler,
    micro_batches: list[dict[str, Tensor]],
    obj: Objective,
    hparams: dict,
    n_pairs: int,
    max_grad_norm: float,
    max_len: int | None = None,
) -> dict[str, float]:
    """One optimiser step over this process's micro-batches; ``n_pairs`` is the step's total pair
    count over all micro-batches and processes (``max_len``: ``batch_loss``'s). Returns the
    step's metrics (all processes)."""
    if obj.batch_coupled and (accelerator.num_processes > 1 or len(micro_batches) > 1):
        raise UserError(  # TrainConfig refuses what it can see; this is a launch it could not
            f"{obj.name!r} is batch-coupled (a pair's loss depends on the other pairs of its "
            f"batch): a step over {len(micro_batches)} micro-batches × "
            f"{accelerator.num_processes} processes is not the full batch's; use one of each"
        )
    t0 = time.perf_counter()
    stats_K = torch.zeros(len(PAIR_KEYS), device=accelerator.device)
    tokens = torch.zeros((), device=accelerator.device)
    scale = accelerator.num_processes / n_pairs
    gather = process_gather(accelerator)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with nullcontext() if last else accelerator.no_sync(policy):
            loss_B, stats_BK = batch_loss(
                policy, reference, batch, obj, hparams, gather=gather, max_len=max_len
            )
            accelerator.backward(loss_B.sum() * scale)
        stats_K += stats_BK.sum(0)
        tokens += batch["attention_mask"].sum()
    norm = max_grad_norm if max_grad_norm > 0 else float("inf")
    grad_norm = accelerator.clip_grad_norm_(policy.parameters(), norm)
    # reduced before the update, so every process takes the same decision on finiteness
    stats_K = accelerator.reduce(stats_K, "sum") / n_pairs
    tokens = accelerator.reduce(tokens, "sum")
    loss, gnorm = float(stats_K[0]), float(grad_norm)
    if not (math.isfinite(loss) and math.isfinite(gnorm)):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(f"non-finite loss/train = {loss} or grad/norm = {gnorm}")
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - t0
    out = {("loss/train" if k == "loss" else k): v for k, v in zip(PAIR_KEYS, stats_K.tolist())}
    out["grad/norm"] = gnorm
    out["lr"] = lr
    out["perf/tokens_per_s"] = float(tokens) / elapsed
    return out
