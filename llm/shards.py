"""The rounds modes on several processes: which prompts each process samples, scores and trains
on, and the round gathered back whole.

A round's P prompts are sampled in S equal shards (``--sample-shards``; 0: one per process),
each by one ``generate`` call seeded by (seed, round, source, shard). Process k of W takes the
shards k·S/W to (k+1)·S/W - 1, a contiguous block of P/W prompts, and samples, scores (reward,
log-prob passes) and takes the gradient of its own block. The samples thus depend on S, not on
W: a W-process run equals a 1-process run with ``--sample-shards W`` (to float tolerance: the
gradient is summed in another order). With S = 1 the seed is the one-process seed of before
shards existed, so such runs are unchanged.

What the objective or the metrics need whole (rewards for group and batch baselines and pairs,
log-prob sums, token counts, texts for generations.jsonl) is gathered (``gather_collected``):
every process holds the whole round and builds the same ``rounds.Round``; only the scoring
batch (the token rows) stays with its process. Accelerate's DDP averages the gradients of the
processes, so each process's loss share is scaled by W (``Shards.world``) and the step's
gradient is the sum of the shares, as in one process.

Errors: a reward that raises, or is not finite, in one process is raised in all of them with
its one line (``agree``), so none waits for the others in a collective forever.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Shards:
    """How a round of ``prompts`` prompts is split: ``count`` sampling shards over ``world``
    processes, this one being ``rank``."""

    prompts: int
    count: int
    world: int = 1
    rank: int = 0

    @property
    def per_shard(self) -> int:
        return self.prompts // self.count

    @property
    def mine(self) -> range:
        """This process's shard indices."""
        k = self.count // self.world
        return range(self.rank * k, (self.rank + 1) * k)

    @property
    def block(self) -> slice:
        """This process's prompts: positions in the round's P."""
        k = self.prompts // self.world
        return slice(self.rank * k, (self.rank + 1) * k)


def plan(prompts: int, sample_shards: int, world: int, rank: int) -> Shards:
    """The split of a round, or a ``UserError`` naming the flag that cannot be split."""
    count = sample_shards or world
    if prompts % world:
        raise UserError(
            f"--prompts-per-round {prompts} cannot be split over {world} processes: use a "
            "multiple of the process count (each process samples and trains on an equal share)"
        )
    if count % world or prompts % count:
        raise UserError(
            f"--sample-shards {count} must divide --prompts-per-round {prompts} and be a "
            f"multiple of the {world} processes"
        )
    return Shards(prompts, count, world, rank)


def shard_seed(base: int, shard: int) -> int:
    """The seed of one shard's draw: ``base`` (the round's seed for a source) for shard 0."""
    return base + shard * 2**32


def agree(acc, fn: Callable[[], T]) -> T:
    """``fn()`` on every process; a ``UserError`` (or any exception) in one is raised in all
    (the first process's message), so no process is left waiting in a later collective."""
    if acc.num_processes == 1:
        return fn()
    from accelerate.utils import gather_object

    error, message = None, None
    try:
        value = fn()
    except UserError as e:
        error, message = e, ("user", str(e))
    except Exception as e:
        error, message = e, ("bug", f"process {acc.process_index}: {type(e).__name__}: {e}")
    messages = [m for m in gather_object([message]) if m is not None]
    if error is not None:
        raise error
    if messages:
        kind, text = messages[0]
        raise (UserError if kind == "user" else RuntimeError)(text)
    return value


def gather_rows(acc, x: Tensor) -> Tensor:
    """This process's rows of a round tensor, concatenated over processes in rank order."""
    if acc.num_processes == 1:
        return x
    if x.dtype == torch.bool:  # gathered as integers (not every backend gathers bool)
        return gather_rows(acc, x.long()).bool()
    return acc.gather(x.contiguous().to(acc.device)).cpu()


def gather_collected(acc, col):
    """The round's ``Collected`` whole on every process: per-sample tensors, reward parts and
    texts gathered in prompt order; ``batch`` and ``samples`` (token rows) stay this process's
    (``Collected.block`` says which prompts they are)."""
    if acc.num_processes == 1:
        return col
    from accelerate.utils import gather_object

    def whole(x: Tensor | None) -> Tensor | None:
        return None if x is None else gather_rows(acc, x)

    times = gather_rows(acc, torch.tensor([[col.time_generate, col.time_score]]))
    return dataclasses.replace(
        col,
        prompt_idx=gather_object(list(col.prompt_idx)),
        texts=gather_object(list(col.texts)),
        rewards_PN=whole(col.rewards_PN),
        offline_PN=whole(col.offline_PN),
        policy_sums_PN=whole(col.policy_sums_PN),
        ref_sums_PN=whole(col.ref_sums_PN),
        counts_PN=whole(col.counts_PN),
        lengths_B=whole(col.lengths_B),
        ended_B=whole(col.ended_B),
        reward_parts={k: whole(v) for k, v in col.reward_parts.items()},
        time_generate=float(times[:, 0].max()),
        time_score=float(times[:, 1].max()),
    )
