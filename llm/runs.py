"""Run directory of an LLM training run: config.json before training, metrics.jsonl appended
per logged step, checkpoints (complete only once trainer_state.json is written) and final/.
Every file is written atomically or appended line by line, so a killed run leaves nothing
half-written and ``--resume`` continues from the last complete checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llm.config import TrainConfig
from toy.runio import atomic_write


def start_run(cfg: TrainConfig, run_dir: Path, meta: dict, accelerator) -> int:
    """Write config.json (or, resuming, check it) and return the step to start from."""
    ckpts = sorted(run_dir.glob("checkpoints/step_*/trainer_state.json"))
    if cfg.resume and ckpts:
        old = json.loads((run_dir / "config.json").read_text())["config"]
        new = json.loads(json.dumps(meta["config"], default=str))  # tuples -> lists
        diff = sorted(k for k in new if k not in ("resume", "progress") and old.get(k) != new[k])
        if diff:
            raise ValueError(f"resume: config differs from the checkpointed run in {diff}")
        accelerator.load_state(str(ckpts[-1].parent))
        step = json.loads(ckpts[-1].read_text())["step"]
        if accelerator.is_main_process:
            metrics = run_dir / "metrics.jsonl"
            keep = [ln for ln in metrics.read_text().splitlines() if json.loads(ln)["step"] <= step]
            atomic_write(metrics, lambda p: p.write_text("".join(f"{ln}\n" for ln in keep)))
        accelerator.wait_for_everyone()
        return step
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(meta, indent=2, default=str)
        atomic_write(run_dir / "config.json", lambda p: p.write_text(text))
        for stale in ("metrics.jsonl", "generations.jsonl"):
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    return 0


def append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def save_checkpoint(accelerator, run_dir: Path, step: int) -> None:
    """Model (or PEFT model), optimiser, scheduler and every process's RNG via accelerate, then
    trainer_state.json (written last: a checkpoint without it is incomplete and ignored)."""
    ckpt = run_dir / "checkpoints" / f"step_{step:07d}"
    accelerator.save_state(str(ckpt), safe_serialization=False)
    if accelerator.is_main_process:
        atomic_write(
            ckpt / "trainer_state.json", lambda p: p.write_text(json.dumps({"step": step}))
        )
    accelerator.wait_for_everyone()


def save_final(accelerator, policy, tokenizer, out: Path) -> None:
    """The trained model (a PEFT model saves only its adapter) and tokenizer."""
    state = accelerator.get_state_dict(policy)
    if accelerator.is_main_process:
        lm = accelerator.unwrap_model(policy).model
        state = {k.removeprefix("model."): v for k, v in state.items()}
        lm.save_pretrained(out, state_dict=state)
        tokenizer.save_pretrained(out)


def lib_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for lib in ("transformers", "accelerate", "peft", "tokenizers"):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    return out
