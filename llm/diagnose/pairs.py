"""The per pair × objective table: quantities, first-order predictions and (``--verify``) the
measured steps of every diagnosed pair."""

from __future__ import annotations

import math
import time

import pandas as pd
import torch
from torch import Tensor

from llm.diagnose.config import require_field
from llm.diagnose.gradients import flat_dot, flatten_grads, pair_quantities
from llm.diagnose.prediction import objective_terms
from llm.diagnose.verification import batch_terms, verify_pair


def diagnose_pairs(
    model,
    params: list[Tensor],
    examples,
    names: tuple[str, ...],
    hparams: dict[str, dict],
    eta: float,
    *,
    verify: bool = False,
    verify_steps: int = 1,
    batch_step: bool = False,
    batch_max_gib: float = 8.0,
    device="cpu",
    progress: bool = False,
    extra: dict[int, dict] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The per pair × objective table for ``examples`` (``llm.data.Example``) and a timing /
    Lemma 6.2 record. ``extra`` adds per-pair columns (e.g. the data's own labels);
    ``batch_step`` adds the batch_* columns (``batch_terms``)."""
    from tqdm.auto import tqdm

    rows, t_grad, t_verify = [], 0.0, 0.0
    sum_w = sum_l = None
    n_params = sum(p.numel() for p in params)
    if batch_step:
        size = torch.promote_types(params[0].dtype, torch.float32).itemsize
        need = len(examples) * 2 * n_params * size / 2**30
        require_field(
            need <= batch_max_gib,
            "batch_step",
            f"stores 2 gradients per pair: {len(examples)} pairs × {n_params:,} parameters need "
            f"{need:.1f} GiB (--batch-max-gib {batch_max_gib:g}); lower --n-pairs or use "
            "--params lora / last-k",
        )
    flat = []  # batch_step: each pair's (∇ℓ_w, ∇ℓ_l) flattened, on the CPU
    for ex in tqdm(examples, disable=not progress, desc="diagnose"):
        t0 = time.perf_counter()
        q = pair_quantities(model, params, ex, device)
        g_w, g_l = q.pop("_g_w"), q.pop("_g_l")
        if batch_step:
            flat += [flatten_grads(g_w), flatten_grads(g_l)]
        if sum_w is None:
            sum_w, sum_l = [g.clone() for g in g_w], [g.clone() for g in g_l]
        else:
            for s, g in zip(sum_w + sum_l, g_w + g_l):
                s.add_(g)
        q["grad_cos"] = q["grad_wl"] / math.sqrt(q["grad_ww"] * q["grad_ll"] or math.nan)
        t_grad += time.perf_counter() - t0
        base = {"pair": ex.idx, **(extra or {}).get(ex.idx, {}), **q}
        for name in names:
            row = {**base, **objective_terms(name, hparams[name], q, eta)}
            if verify:
                t0 = time.perf_counter()
                row |= verify_pair(
                    model, params, ex, name, hparams[name], eta, verify_steps, q, device,
                    grads=(g_w, g_l),
                )  # fmt: skip
                t_verify += time.perf_counter() - t0
            rows.append(row)
        del g_w, g_l
    n = max(len(examples), 1)
    df = pd.DataFrame(rows)
    info = {
        "seconds_grads_per_pair": t_grad / n,
        "seconds_verify_per_pair_objective": t_verify / (n * len(names)) if verify else None,
        "lemma_6_2": _lemma(sum_w, sum_l, n) if sum_w is not None else None,
    }
    if batch_step and examples:
        t0 = time.perf_counter()
        df = batch_terms(
            df, torch.stack(flat), model, params, examples, names, hparams, eta, verify, device
        )
        info["seconds_batch_step"] = time.perf_counter() - t0
    return df, info


def _lemma(sum_w, sum_l, n: int) -> dict:
    """Paper A's Lemma 6.2 quantity over the diagnosed pairs: E[∇ℓ_w]ᵀE[∇ℓ_l] (and norms)."""
    ww, ll, wl = (
        flat_dot(sum_w, sum_w) / n**2,
        flat_dot(sum_l, sum_l) / n**2,
        flat_dot(sum_w, sum_l) / n**2,
    )
    return {
        "mean_grad_wl": wl,
        "mean_grad_ww": ww,
        "mean_grad_ll": ll,
        "mean_grad_cos": wl / math.sqrt(ww * ll) if ww * ll > 0 else math.nan,
    }
