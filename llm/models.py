"""Resolve ``--model`` into (tokenizer, causal LM): tiny built-ins, local dirs, hub ids, GGUF."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from llm import tiny


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def convert_gguf(model_dir: str, gguf_file: str, cache_dir: str) -> Path:
    """Dequantise ``model_dir/gguf_file`` to an fp32 safetensors model + tokenizer directory under
    ``cache_dir/gguf/<sha256>`` (done once; later calls return the cached directory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(model_dir) / gguf_file
    out = Path(cache_dir).expanduser() / "gguf" / file_sha256(src)[:16]
    if (out / "config.json").exists():
        return out
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=gguf_file, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-quantised models
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def load(
    model: str,
    *,
    seed: int = 0,
    corpus: Callable[[], Iterable[str]] | None = None,
    gguf_file: str | None = None,
    cache_dir: str = "~/.cache/modeseek",
):
    """(tokenizer, model in fp32). Tiny models train their tokenizer on ``corpus()``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model in tiny.TINY_MODELS:
        if corpus is None:
            raise ValueError(f"{model} needs a text corpus to train its tokenizer")
        tokenizer = tiny.build_tokenizer(corpus())
        return tokenizer, tiny.build_model(model, tokenizer, seed=seed)
    path = model
    if gguf_file:
        path = str(convert_gguf(model, gguf_file, cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return tokenizer, lm


def disable_dropout(model: nn.Module) -> None:
    """Zero every ``nn.Dropout`` and float ``*dropout`` attribute (functional attention dropout,
    e.g. Llama's ``attention_dropout``)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        for name, value in vars(m).items():
            if name.endswith("dropout") and isinstance(value, float):
                setattr(m, name, 0.0)


def add_lora(model: nn.Module, r: int, alpha: int, dropout: float, targets: tuple[str, ...]):
    """Wrap ``model`` with fresh LoRA adapters (B = 0, so the initial policy is the base)."""
    from peft import LoraConfig, get_peft_model

    target = targets[0] if targets == ("all-linear",) else list(targets)
    cfg = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, cfg)


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the parameter names, shapes, dtypes and bytes (identifies a reference model)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        t = p.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
