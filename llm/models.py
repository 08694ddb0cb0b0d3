"""Resolve ``--model`` into (tokenizer, causal LM): tiny built-ins, local dirs, hub ids, GGUF."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from llm import tiny
from runio import UserError


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


def _looks_local(model: str) -> bool:
    """A path rather than a hub id (``org/name``): absolute, relative, home, or deeper."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


def resolve_source(model: str, gguf_file: str | None, cache_dir: str) -> str:
    """The directory or hub id to load ``--model`` from (a GGUF file converted once). A missing
    local path or GGUF file is a ``UserError`` naming it (not a hub-id format complaint)."""
    path = Path(model).expanduser()
    if gguf_file:
        if not (path / gguf_file).is_file():
            raise UserError(f"TrainConfig.gguf_file: {path / gguf_file} does not exist")
        return str(convert_gguf(str(path), gguf_file, cache_dir))
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(
                f"TrainConfig.model: {model} has no config.json (not a Hugging Face model "
                "directory; pass --gguf-file for a GGUF file)"
            )
        return str(path)
    if _looks_local(model):
        raise UserError(f"TrainConfig.model: local model directory {model} does not exist")
    return model


def load_tokenizer(
    model: str,
    *,
    corpus: Callable[[], Iterable[str]] | None = None,
    gguf_file: str | None = None,
    cache_dir: str = "~/.cache/modeseek",
):
    """The tokenizer of ``--model`` (tiny models train one on ``corpus()``), with a pad token."""
    from transformers import AutoTokenizer

    if model in tiny.TINY_MODELS:
        if corpus is None:
            raise ValueError(f"{model} needs a text corpus to train its tokenizer")
        return tiny.build_tokenizer(corpus())
    source = resolve_source(model, gguf_file, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise UserError(
            f"TrainConfig.model: cannot load a tokenizer from {model!r} ({_brief(e)})"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def max_positions(model: str, gguf_file: str | None = None, cache_dir: str = "") -> int | None:
    """The longest sequence the model's position embeddings allow (read from its config, before
    any weights load); None when the config states no limit."""
    if model in tiny.TINY_MODELS:
        return tiny.MAX_POSITIONS
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_source(model, gguf_file, cache_dir))
    except OSError as e:
        raise UserError(
            f"TrainConfig.model: cannot load the config of {model!r} ({_brief(e)})"
        ) from None
    config = getattr(config, "text_config", None) or config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_model(
    model: str,
    tokenizer,
    *,
    seed: int = 0,
    gguf_file: str | None = None,
    cache_dir: str = "~/.cache/modeseek",
):
    """The causal LM of ``--model`` in fp32 (tiny ones random-initialised from ``seed``)."""
    from transformers import AutoModelForCausalLM

    if model in tiny.TINY_MODELS:
        return tiny.build_model(model, tokenizer, seed=seed)
    source = resolve_source(model, gguf_file, cache_dir)
    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except OSError as e:
        raise UserError(f"TrainConfig.model: cannot load {model!r} ({_brief(e)})") from None


def load(
    model: str,
    *,
    seed: int = 0,
    corpus: Callable[[], Iterable[str]] | None = None,
    gguf_file: str | None = None,
    cache_dir: str = "~/.cache/modeseek",
):
    """(tokenizer, model in fp32). Tiny models train their tokenizer on ``corpus()``."""
    tokenizer = load_tokenizer(model, corpus=corpus, gguf_file=gguf_file, cache_dir=cache_dir)
    lm = load_model(model, tokenizer, seed=seed, gguf_file=gguf_file, cache_dir=cache_dir)
    return tokenizer, lm


def _brief(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


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
