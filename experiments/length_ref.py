"""A reference LM whose response lengths vary: the π_ref of the synthetic length tasks (§5).

A tiny causal LM (``tiny-gpt2``, width 64, 2 layers, a BPE tokenizer trained on the same text)
is fitted on CPU to the shipped Shakespeare pairs: prompt = the last line of a speech, response =
the first k words of its chosen continuation (k uniform in 1..max_words, seeded), then EOS. The
loss is the summed next-token NLL of the response tokens (EOS included), so sampled responses at
temperature 1 end in EOS after a broad range of lengths.

    python -m experiments.length_ref        # builds (or finds) the cached reference; prints its dir

The result is a plain Hugging Face directory (``--model DIR`` of ``llm.train``) cached under
``<cache_root>/<hash of RefConfig>``: a changed config trains a new one; an existing complete
directory is reused. It also holds ``prompts.jsonl`` (the short prompts, one per pair row).
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from runio import config_hash

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "runs" / "cache" / "length_ref"


@dataclass(frozen=True)
class RefConfig:
    """How the reference LM is built (every field enters the cache key)."""

    data: str = "data/shakespeare_prefs/train.jsonl"
    """Pairs whose prompts and chosen responses are the training text."""
    model: str = "tiny-gpt2"
    """``llm.tiny`` architecture."""
    size: int = 64
    """Model width."""
    vocab_size: int = 512
    """BPE vocabulary size."""
    max_words: int = 8
    """Response = the first k words of the chosen text, k uniform in 1..max_words."""
    steps: int = 800
    """AdamW steps (batch ``batch`` random rows each)."""
    batch: int = 32
    """Rows per step."""
    lr: float = 3e-3
    """Peak learning rate (cosine decay to 10%)."""
    seed: int = 0
    """Seed of the cuts, model init and batches."""


def short_prompt(prompt: str) -> str:
    """The last non-empty line of a speech prompt (short prompts keep every pass cheap)."""
    lines = [x.strip() for x in prompt.splitlines() if x.strip()]
    return lines[-1] if lines else prompt.strip()


def training_rows(cfg: RefConfig) -> list[dict]:
    """(prompt, response) rows: the short prompt and the first k words of the chosen text."""
    rng = random.Random(cfg.seed)
    rows = []
    for line in (ROOT / cfg.data).read_text().splitlines():
        row = json.loads(line)
        words = row["chosen"].split()
        k = rng.randint(1, cfg.max_words)
        rows.append({"prompt": short_prompt(row["prompt"]), "response": " ".join(words[:k])})
    return rows


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt as the rounds modes render it (the tokenizer's chat template, generation
    prompt added; ``llm.prompts``)."""
    from llm.data import render_row

    return render_row(tokenizer, [{"role": "user", "content": prompt}], True)


def _batch(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """(ids_BT, targets_BT) with targets -100 outside the response (EOS included)."""
    width = max(len(p) + len(r) for p, r in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    tgt = torch.full_like(ids, -100)
    for i, (p, r) in enumerate(examples):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        tgt[i, len(p) : len(p) + len(r)] = torch.tensor(r)
    return ids, tgt


def train_reference(cfg: RefConfig, out: Path) -> dict:
    """Fit the reference and save model, tokenizer, prompts.jsonl and ref_config.json to out."""
    from llm import tiny

    t0 = time.perf_counter()
    rows = training_rows(cfg)
    texts = [r["prompt"] for r in rows] + [r["response"] for r in rows]
    tok = tiny.build_tokenizer(texts, vocab_size=cfg.vocab_size)
    model = tiny.build_model(cfg.model, tok, seed=cfg.seed, size=cfg.size)
    eos = tok.eos_token_id
    examples = [
        (prompt_ids(tok, r["prompt"]), tok(r["response"], add_special_tokens=False)["input_ids"])
        for r in rows
    ]
    examples = [(p, [*r, eos]) for p, r in examples]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(s / cfg.steps * 3.14159)))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    losses = []
    for _ in range(cfg.steps):
        idx = torch.randint(len(examples), (cfg.batch,), generator=gen).tolist()
        ids, tgt = _batch([examples[i] for i in idx], tok.pad_token_id)
        logits = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long()).logits
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), tgt[:, 1:].flatten(), reduction="sum"
        )
        loss = nll / cfg.batch  # summed over tokens, mean over rows
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    prompts = "".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows)
    (out / "prompts.jsonl").write_text(prompts)
    info = {
        "config": dataclasses.asdict(cfg),
        "final_loss": sum(losses[-20:]) / min(20, len(losses)),
        "train_seconds": time.perf_counter() - t0,
    }
    (out / "ref_config.json").write_text(json.dumps(info, indent=1))
    return info


def build_reference(cfg: RefConfig = RefConfig(), cache_root: Path | str = CACHE) -> Path:
    """The cached reference directory for ``cfg`` (trained once; reused when complete)."""
    out = Path(cache_root).expanduser() / config_hash(dataclasses.asdict(cfg), n=16)
    if (out / "ref_config.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    train_reference(cfg, tmp)
    tmp.rename(out)
    return out


if __name__ == "__main__":
    print(build_reference())
