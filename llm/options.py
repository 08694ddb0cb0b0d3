"""Model, data and LoRA options declared once for ``llm.TrainConfig`` and
``llm.diagnose.DiagnoseConfig`` (one name, type, default and help text; tyro reads the
docstrings below for both command lines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llm import shipped


@dataclass(frozen=True)
class ModelOptions:
    model: str = "tiny-gpt2"
    """``tiny-gpt2`` / ``tiny-llama`` (random init + a BPE tokenizer trained on --data, no
    download), a local model directory, or a hub id."""
    gguf_file: str | None = None
    """A GGUF file inside the --model directory to load (dequantised to fp32, converted once to a
    safetensors cache under --cache-dir)."""
    cache_dir: str = "~/.cache/modeseek"
    """Where precomputed reference log-probs and converted GGUF models are cached."""
    seed: int = 0
    """Seed of the run: tiny models' init, data order and sampling, dropout, subsets."""


@dataclass(frozen=True)
class DataOptions:
    data: str = shipped.PAIRS_TRAIN
    """Preference data (default: the shipped Shakespeare pairs, found beside the installed
    package; a path you give is relative to the working directory):
    .jsonl/.json/.csv/.parquet, a ``datasets`` directory, or a hub dataset
    name (``datasets.load_dataset(name, split=--data-split)``; offline: from the local cache).
    Layouts (detected from the columns): prompt/chosen/rejected, chosen/rejected (implicit
    prompt), prompt/completion/label (kto), prompt/completion, text, messages (chosen-only
    objectives)."""
    data_split: str = "train"
    """Split of --data when it is a DatasetDict directory or a hub dataset."""
    max_len: int = 256
    """Maximum prompt + response tokens; responses are cut from the right to fit."""
    max_prompt_len: int = 128
    """Rows whose prompt has more tokens than this are invalid."""
    chat_template: Literal["auto", "on", "off"] = "auto"
    """Render rows with the tokenizer's chat template: auto = when it has one."""
    skip_invalid: bool = False
    """Skip invalid rows (reporting counts) instead of stopping with an error naming the row."""


@dataclass(frozen=True)
class LoraOptions:
    lora: bool = False
    """LoRA adapters (peft): llm.train trains them instead of all weights; llm.diagnose adds
    fresh ones (B = 0: the model unchanged) to take gradients in."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_targets: tuple[str, ...] = ("all-linear",)
    """Module names to adapt (peft ``target_modules``); all-linear = every linear but the head."""
