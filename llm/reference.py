"""Reference log-probs (ℓ_ref, |y|) of a batch: none, a frozen copy, the LoRA base model with
adapters disabled, or a table precomputed once and cached on disk.

Every strategy is called as ``ref(batch, split)`` and returns ``(sums_2B, counts_2B)`` (no
gradient) or None. ``ref.score_new(batch, split)`` scores rows that are not training pairs (KTO's
mismatched prompt-completion rows): a live reference runs on them; a precomputed table can only
when the reference is still live beside it (``--lora``: the base model with adapters disabled),
else it raises a ``UserError`` naming ``--ref copy|adapter``.

The disk cache key is sha256 of (the reference model's parameter fingerprint, the tokenised
examples — which fixes data, tokenizer, template and truncation — and a format version), so a
later run with the same model and data reuses the table.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from llm.data import Example, collate
from runio import UserError, atomic_write

CACHE_VERSION = 1
Batch = dict[str, Tensor]
LogpsFn = Callable[[Batch], tuple[Tensor, Tensor]]


class NoReference:
    """Reference-free objectives: nothing is loaded or computed."""

    def __call__(self, batch: Batch, split: str) -> None:
        return None

    def score_new(self, batch: Batch, split: str) -> None:
        return None


class LiveReference:
    """A frozen model evaluated on each batch: a copy, or the policy with adapters disabled."""

    def __init__(self, fn: LogpsFn):
        self.fn = fn

    @torch.no_grad()
    def __call__(self, batch: Batch, split: str) -> tuple[Tensor, Tensor]:
        return self.fn(batch)

    def score_new(self, batch: Batch, split: str) -> tuple[Tensor, Tensor]:
        return self(batch, split)


PRECOMPUTED_NEW_ROWS = (
    "--ref precomputed holds the reference log-probs of the training pairs only, and without "
    "--lora no reference model is kept to score other rows (KTO z0=mismatched scores mismatched "
    "prompt-completion pairs); use --ref copy|adapter (adapter with --lora), or --hp z0=batch"
)


class PrecomputedReference:
    """Look-up of precomputed (N, 2) tables [chosen, rejected] by the batch's row indices;
    ``live``: the reference model itself when it is still available (LoRA's base model), for
    rows outside the tables."""

    def __init__(self, tables: dict[str, tuple[Tensor, Tensor]], live: LogpsFn | None = None):
        self.tables = tables
        self.live = live

    @torch.no_grad()
    def score_new(self, batch: Batch, split: str) -> tuple[Tensor, Tensor]:
        if self.live is None:
            raise UserError(PRECOMPUTED_NEW_ROWS)
        return self.live(batch)

    def __call__(self, batch: Batch, split: str) -> tuple[Tensor, Tensor]:
        sums_N2, counts_N2 = self.tables[split]
        idx = batch["idx"].cpu()
        device = batch["input_ids"].device
        sums = torch.cat([sums_N2[idx, 0], sums_N2[idx, 1]]).to(device)
        return sums, torch.cat([counts_N2[idx, 0], counts_N2[idx, 1]]).to(device)


def examples_digest(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        ids = [e.prompt_ids, e.chosen_ids, e.rejected_ids]
        if e.rejected_prompt_ids is not None:  # matched unpaired rows: the rejected one's prompt
            ids.append(e.rejected_prompt_ids)
        h.update(json.dumps(ids).encode())
    return h.hexdigest()


def cache_key(model_fingerprint: str, examples: Sequence[Example]) -> str:
    text = json.dumps([CACHE_VERSION, model_fingerprint, examples_digest(examples)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def compute_table(
    fn: LogpsFn,
    examples: Sequence[Example],
    pad_id: int,
    batch_size: int,
    accelerator,
) -> tuple[Tensor, Tensor]:
    """(sums_N2, counts_N2) of every example, columns [chosen, rejected]; rows are sharded over
    processes and gathered."""
    from accelerate.utils import gather_object

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(examples[rank::world])
    results = []
    with torch.no_grad():
        for s in range(0, len(mine), batch_size):
            chunk = mine[s : s + batch_size]
            batch = {k: v.to(accelerator.device) for k, v in collate(chunk, pad_id).items()}
            sums, counts = fn(batch)
            B = len(chunk)
            for j, e in enumerate(chunk):
                results.append((e.idx, sums[j].item(), sums[B + j].item(), counts[j].item()))
                results[-1] += (counts[B + j].item(),)
    if world > 1:
        results = gather_object(results)
    sums_N2 = torch.zeros(len(examples), 2)
    counts_N2 = torch.zeros(len(examples), 2)
    for idx, sw, sl, cw, cl in results:
        sums_N2[idx] = torch.tensor([sw, sl])
        counts_N2[idx] = torch.tensor([cw, cl])
    return sums_N2, counts_N2


def _load_table(path: Path, n_rows: int) -> tuple[Tensor, Tensor] | None:
    """The cached table, or None when the file is truncated, corrupt, not plain tensor data, of
    the wrong shape or holds non-finite values (then it is recomputed)."""
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
        sums, counts = data["sums"], data["counts"]
    except Exception:  # any unreadable file is recomputed, never trusted
        return None
    shape_ok = sums.shape == counts.shape == (n_rows, 2)
    if not (shape_ok and torch.isfinite(sums).all() and (counts >= 1).all()):
        return None
    return sums, counts


def cached_table(
    cache_dir: str,
    key: str,
    compute: Callable[[], tuple[Tensor, Tensor]],
    accelerator,
    n_rows: int,
) -> tuple[tuple[Tensor, Tensor], bool]:
    """The table stored under ``cache_dir/ref_logps/<key>.pt``, computing and saving it (main
    process, atomic write) when absent or unreadable (reported with its path; a save that fails
    is a warning). Returns (table, was_cached)."""
    path = Path(cache_dir).expanduser() / "ref_logps" / f"{key}.pt"
    table = _load_table(path, n_rows) if path.exists() else None
    # every process takes the same branch (no collective hangs): all must have read the file
    ok = torch.tensor([float(table is not None)], device=accelerator.device)
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        ok = accelerator.reduce(ok, "min")
    if bool(ok.item()):
        return table, True
    if path.exists() and accelerator.is_main_process:
        print(f"[llm] reference cache {path} is corrupt or stale; recomputing it", file=sys.stderr)
    table = compute()
    if accelerator.is_main_process:
        payload = {"sums": table[0], "counts": table[1]}
        try:  # a cache that cannot be written (disk full, no permission) is only a warning
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda p: torch.save(payload, p))
        except Exception as e:
            reason = " ".join(str(getattr(e, "strerror", None) or e).split())[:160]
            print(f"[llm] warning: cannot write reference cache {path} ({reason}); it will be "
                  "recomputed next time", file=sys.stderr)  # fmt: skip
    accelerator.wait_for_everyone()
    return table, False
