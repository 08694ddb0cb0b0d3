"""Held-out evaluation: preference accuracy, implicit margins, mean chosen/rejected log-probs
(the likelihood-displacement curves) and greedy generations scored with BLEU-4 (sacrebleu, 0-100)
and ROUGE-L F1 (rouge-score, 0-1) against the chosen response, as in the ASFT paper."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm.data import Example, collate
from llm.step import PAIR_KEYS, batch_loss, process_gather
from objectives import Objective


def _padded_shard(n: int, rank: int, world: int) -> list[tuple[int, float]]:
    """(row, weight) pairs for this process; every process gets ceil(n / world) rows so all run
    the same number of forwards (rows past the end repeat row 0 with weight 0)."""
    per = -(-n // world)
    rows = range(rank * per, (rank + 1) * per)
    return [(r, 1.0) if r < n else (0, 0.0) for r in rows]


@torch.no_grad()
def pair_metrics(
    accelerator,
    policy,
    reference,
    examples: Sequence[Example],
    obj: Objective,
    hparams: dict,
    pad_id: int,
    batch_size: int,
    max_len: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Means over the held-out pairs of ``PAIR_KEYS`` as ``eval/<key>`` (loss as eval/loss);
    ``max_len``: ``batch_loss``'s; ``progress``: a progress bar over the batches."""
    shard = _padded_shard(len(examples), accelerator.process_index, accelerator.num_processes)
    stats_K = torch.zeros(len(PAIR_KEYS), device=accelerator.device)
    gather = process_gather(accelerator)  # KTO z0=mismatched: pooled over processes
    was_training = policy.training
    policy.eval()
    for s in _bar(range(0, len(shard), batch_size), progress, "eval"):
        part = shard[s : s + batch_size]
        batch = collate([examples[r] for r, _ in part], pad_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with accelerator.autocast():
            _, stats_BK = batch_loss(
                policy, reference, batch, obj, hparams, split="eval", gather=gather, max_len=max_len
            )
        w_B = torch.tensor([w for _, w in part], device=stats_BK.device)
        stats_K += (stats_BK * w_B[:, None]).sum(0)
    policy.train(was_training)
    stats_K = accelerator.reduce(stats_K, "sum") / len(examples)
    return {f"eval/{k}": v for k, v in zip(PAIR_KEYS, stats_K.tolist())}


def _bar(steps: range, progress: bool, desc: str):
    """``steps``, with a progress bar (removed when done) when ``progress``."""
    if not progress:
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc=desc, leave=False)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    examples: Sequence[Example],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = False,
) -> list[str]:
    """Greedy completions of the examples' prompts (left-padded batches), decoded without
    special tokens; ``progress``: a progress bar over the batches."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    outs: list[str] = []
    for s in _bar(range(0, len(examples), batch_size), progress, "generate"):
        prompts = [list(e.prompt_ids) for e in examples[s : s + batch_size]]
        T = max(map(len, prompts))
        ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, T - len(p) :] = torch.tensor(p)
            mask[i, T - len(p) :] = 1
        gen = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        outs += tokenizer.batch_decode(gen[:, T:], skip_special_tokens=True)
    model.train(was_training)
    return [o.strip() for o in outs]


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-4 (sacrebleu, 0-100) and mean ROUGE-L F1 (rouge-score, 0-1)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references)]
    return {"eval/bleu4": float(bleu), "eval/rougeL": float(sum(rouge) / max(len(rouge), 1))}


def generation_metrics(
    accelerator,
    model,
    tokenizer,
    examples: Sequence[Example],
    max_new_tokens: int,
    progress: bool = False,
) -> tuple[dict[str, float], list[dict]]:
    """Scores of greedy generations for ``examples`` (sharded over processes, gathered), and the
    records (prompt, reference, generation) for generations.jsonl; ``progress``: a progress bar
    over this process's generation batches."""
    from accelerate.utils import gather_object

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = list(examples[rank::world])
    texts = generate(model, tokenizer, mine, max_new_tokens, progress=progress) if mine else []
    pairs = [(e.idx, t) for e, t in zip(mine, texts)]
    if world > 1:
        pairs = gather_object(pairs)
    by_idx = dict(pairs)
    hyps = [by_idx[e.idx] for e in examples]
    refs = [e.chosen_text for e in examples]
    records = [
        {"idx": e.idx, "prompt": e.prompt_text, "reference": r, "generation": h}
        for e, r, h in zip(examples, refs, hyps)
    ]
    return text_scores(hyps, refs), records
