"""Speed of one on-policy round on a causal LM: generation tokens/s and the round's time split.

A random-init GPT-2- or Llama-shaped model (its vocabulary a BPE trained on the shipped prompts)
is saved to a temporary directory and trained with ``llm.onpolicy`` (REINFORCE, Min-length
reward) for ``--rounds`` rounds of P prompts × N samples; the table gives, per shape, the
generated tokens per second of ``transformers`` ``generate`` (all P·N sequences in one batch,
KV cache, up to ``--new-tokens`` each: a random model rarely stops early) and the median over
rounds after the first of the round's time split: generate / score (reward + policy and
reference log-probs) / update (T optimiser steps).

    python -m bench.llm_round_speed --shapes gpt2:64:2 llama:128:2 --prompts 8 --samples 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from llm.config import TrainConfig
from llm.prompts import prompt_texts, tokenize_prompts
from llm.sampling import HFSampler
from llm.tiny import build_tokenizer
from llm.train import run

PROMPTS = "data/shakespeare_prompts/train.jsonl"


def build_model(shape: str, vocab: int, hidden: int, layers: int, tok):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    ids |= dict(bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    if shape == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers,
                         n_head=max(hidden // 32, 1), **ids)  # fmt: skip
        return GPT2LMHeadModel(cfg)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=max(hidden // 32, 1),
                      num_key_value_heads=max(hidden // 64, 1), **ids)  # fmt: skip
    return LlamaForCausalLM(cfg)


def gen_tokens_per_s(lm, tok, prompts, n: int, new_tokens: int) -> float:
    sampler = HFSampler(tok.pad_token_id, (tok.eos_token_id,), new_tokens)
    ids = [p.ids for p in prompts]
    sampler.sample(lm, ids[:1], 1, seed=0)  # warm-up
    t0 = time.perf_counter()
    samples = sampler.sample(lm, ids, n, seed=1)
    return float(samples.mask_BT.sum()) / (time.perf_counter() - t0)


def bench_shape(spec: str, args, tmp: Path) -> dict:
    shape, hidden, layers = spec.split(":")
    rows = [json.loads(x) for x in open(PROMPTS, encoding="utf-8")]
    tok = build_tokenizer(prompt_texts(rows))
    lm = build_model(shape, len(tok), int(hidden), int(layers), tok).float()
    model_dir = tmp / spec.replace(":", "_")
    lm.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    prompts, _ = tokenize_prompts(rows[: args.prompts], tok, path=PROMPTS, max_prompt_len=110)
    tps = gen_tokens_per_s(lm, tok, prompts, args.samples, args.new_tokens)
    cfg = TrainConfig(
        mode="on_policy", model=str(model_dir), prompts=PROMPTS, objective="reinforce",
        reward="length_min", rounds=args.rounds, prompts_per_round=args.prompts,
        samples_per_prompt=args.samples, steps_per_round=args.steps,
        max_new_tokens=args.new_tokens, max_len=110 + args.new_tokens, max_prompt_len=110,
        out_dir=str(tmp / "runs"), name=spec.replace(":", "_"), progress=False,
        save_final=False, lr=1e-5, chat_template="off",
    )  # fmt: skip
    run_dir = Path(run(cfg)["run_dir"])
    recs = [json.loads(x) for x in open(run_dir / "metrics.jsonl")][1:]
    med = {k: statistics.median(r[f"time/{k}"] for r in recs) for k in ("generate", "score")}
    med["update"] = statistics.median(r["time/update"] for r in recs)
    params = sum(p.numel() for p in lm.parameters()) / 1e6
    return {"shape": spec, "params_M": params, "gen_tok_s": tps, **med}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["gpt2:64:2", "llama:64:2", "llama:256:4"],
                    help="shape:hidden:layers (gpt2 or llama)")  # fmt: skip
    ap.add_argument("--prompts", type=int, default=8, help="P prompts per round")
    ap.add_argument("--samples", type=int, default=4, help="N samples per prompt")
    ap.add_argument("--steps", type=int, default=2, help="T steps per round")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"P={args.prompts} N={args.samples} T={args.steps} new_tokens={args.new_tokens}, "
          f"{torch.get_num_threads()} threads, device cpu")  # fmt: skip
    print(f"{'shape':<14}{'params':>9}{'gen tok/s':>11}{'generate s':>12}{'score s':>9}"
          f"{'update s':>10}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        for spec in args.shapes:
            r = bench_shape(spec, args, Path(d))
            print(f"{r['shape']:<14}{r['params_M']:>8.2f}M{r['gen_tok_s']:>11.0f}"
                  f"{r['generate']:>12.3f}{r['score']:>9.3f}{r['update']:>10.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
