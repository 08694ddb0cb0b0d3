"""Speed of one DPO step: modeseek's llm/ step vs TRL's DPOTrainer, same model and data.

A random-init Llama- or Qwen2-shaped model (its vocabulary a BPE trained on the shipped
Shakespeare pairs), ``--pairs`` pairs per step cut to ``--length`` tokens. Rows:

- ours: reference = frozen copy or precomputed log-probs; gradient checkpointing off/on;
- trl: DPOTrainer (same AdamW lr, beta, max_length, dropout off), live or precomputed reference,
  when ``trl`` is installed (optional benchmark extra).

Tokens/s counts non-pad tokens of the policy's chosen+rejected forward; step time is the median
over ``--steps`` timed steps after one warm-up. Peak memory: CUDA max allocated, or on CPU the
process's peak RSS (cumulative over the run, so only the first rows are comparable).

    python -m bench.llm_dpo_speed --shape llama --hidden 256 --layers 4 --pairs 4 --length 128
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

import torch

from llm.config import TrainConfig
from llm.data import collate, read_rows, tokenize_rows
from llm.logps import PolicyLogps
from llm.pairs import corpus_texts
from llm.reference import LiveReference, PrecomputedReference, compute_table
from llm.step import train_step
from llm.tiny import build_tokenizer

DATA = "data/shakespeare_prefs/train.jsonl"


def build_model(shape: str, vocab: int, hidden: int, layers: int, seed: int = 0):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[shape]
    cfg = cls(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1),
        num_key_value_heads=max(hidden // 128, 1),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_ours(args, tok, examples, ref_kind: str, checkpointing: bool) -> dict:
    from accelerate import Accelerator

    acc = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    model = build_model(args.shape, len(tok), args.hidden, args.layers)
    ref_model = build_model(args.shape, len(tok), args.hidden, args.layers)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    mb = TrainConfig().logps_checkpoint_mb  # the harness default
    policy = PolicyLogps(model, checkpoint_mb=mb)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    policy, opt = acc.prepare(policy, opt)
    ref_policy = PolicyLogps(ref_model, checkpoint_mb=mb).to(acc.device).eval()
    ref_policy.requires_grad_(False)
    fn = lambda b: ref_policy(b["input_ids"], b["attention_mask"], b["loss_mask"])  # noqa: E731
    ref = LiveReference(fn)
    if ref_kind == "precomputed":
        table = compute_table(fn, examples, tok.pad_token_id, args.pairs, acc)
        ref = PrecomputedReference({"train": table})
    obj = __import__("objectives").get("dpo")
    times, tokens = [], []
    for step in range(args.steps + 1):
        chunk = [examples[(step * args.pairs + i) % len(examples)] for i in range(args.pairs)]
        batch = {k: v.to(acc.device) for k, v in collate(chunk, tok.pad_token_id).items()}
        if acc.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(acc, policy, ref, opt, sched, [batch], obj, {"beta": 0.1}, args.pairs, 1.0)
        if acc.device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            times.append(time.perf_counter() - t0)
            tokens.append(int(batch["attention_mask"].sum()))
    med = statistics.median(times)
    return {"tokens_per_s": statistics.mean(tokens) / med, "step_s": med}


def bench_trl(args, tok, rows, precompute: bool, checkpointing: bool) -> dict:
    import datasets
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)

    datasets.disable_progress_bars()
    model = build_model(args.shape, len(tok), args.hidden, args.layers)
    ref_model = build_model(args.shape, len(tok), args.hidden, args.layers)
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        cfg = DPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.pairs,
            max_length=args.length,
            max_steps=args.steps + 1,
            learning_rate=1e-5,
            lr_scheduler_type="constant",
            beta=0.1,
            report_to=[],
            save_strategy="no",
            logging_steps=10**6,
            use_cpu=not cuda,
            bf16=cuda,
            gradient_checkpointing=checkpointing,
            precompute_ref_log_probs=precompute,
            disable_dropout=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        timer = Timer()
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=cfg,
            train_dataset=data,
            processing_class=tok,
            callbacks=[timer],
        )
        trainer.train()
    return {"step_s": statistics.median(timer.times[1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=["llama", "qwen2"], default="llama")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL rows")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = read_rows(DATA)[: args.pairs * (args.steps + 1)]
    tok = build_tokenizer(corpus_texts(read_rows(DATA)), vocab_size=args.vocab)
    tok.chat_template = None  # standard (untemplated) pairs, as TRL tokenises them
    TrainConfig(max_len=args.length, max_prompt_len=args.length - 1)  # validates the lengths
    examples, _ = tokenize_rows(
        rows, tok, path=DATA, max_len=args.length, max_prompt_len=args.length - 1
    )
    tokens_per_step = sum(len(e.prompt_ids) * 2 + len(e.chosen_ids) + len(e.rejected_ids)
                          for e in examples) / len(examples) * args.pairs  # fmt: skip
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"{args.shape} h={args.hidden} L={args.layers} V={len(tok)} pairs={args.pairs} "
          f"T<={args.length} device={device}")  # fmt: skip
    print(f"{'impl':5} {'reference':12} {'ckpt':5} {'step_s':>8} {'tok/s':>9} {'peak_MB':>8}")
    for ref_kind in ("copy", "precomputed"):
        for ckpt in (False, True):
            r = bench_ours(args, tok, examples, ref_kind, ckpt)
            mem = peak_memory_mb(device)
            step_s, tps = r["step_s"], r["tokens_per_s"]
            print(f"ours  {ref_kind:12} {ckpt!s:5} {step_s:8.3f} {tps:9.0f} {mem:8.0f}")
    if args.no_trl:
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        print("trl not installed: pip install trl (optional benchmark extra)")
        return
    for pre in (False, True):
        for ckpt in (False, True):
            r = bench_trl(args, tok, rows, pre, ckpt)
            ref_kind = "precomputed" if pre else "copy"
            mem = peak_memory_mb(device)
            tps = tokens_per_step / r["step_s"]  # the same rows, tokenised by us
            print(f"trl   {ref_kind:12} {ckpt!s:5} {r['step_s']:8.3f} {tps:9.0f} {mem:8.0f}")


if __name__ == "__main__":
    main()
