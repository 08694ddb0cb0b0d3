"""Chunked fp32 log-probs equal a naive per-token loop (values and gradients), and a hand-checked
uniform model."""

import functools
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from llm import tiny
from llm.data import collate, read_rows, tokenize_rows
from llm.logps import PolicyLogps, sequence_logps
from llm.pairs import corpus_texts

DATA = "data/shakespeare_prefs/train.jsonl"


@functools.lru_cache
def tokenizer_and_batch():
    rows = read_rows(DATA)[:6]
    tok = tiny.build_tokenizer(corpus_texts(rows))
    ex, _ = tokenize_rows(rows, tok, path=DATA, max_len=120, max_prompt_len=100)
    return tok, collate(ex, tok.pad_token_id)


def naive_logps(model, batch):
    """Σ over response tokens of log softmax(full fp32 logits)[next token], enumerating the
    response tokens one by one in Python."""
    logits_BTV = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp_BTV = logits_BTV.float().log_softmax(-1)
    rows, pos, toks = [], [], []
    ids, mask = batch["input_ids"].tolist(), batch["loss_mask"].tolist()
    for i in range(len(ids)):
        for t in range(1, len(ids[i])):
            if mask[i][t]:
                rows.append(i), pos.append(t - 1), toks.append(ids[i][t])
    picked = logp_BTV[rows, pos, toks]
    sums = torch.zeros(len(ids)).index_add(0, torch.tensor(rows), picked)
    counts = torch.bincount(torch.tensor(rows), minlength=len(ids)).float()
    return sums, counts


@pytest.mark.parametrize("kind", tiny.TINY_MODELS)
@pytest.mark.parametrize("chunk, checkpoint_mb", [(1, 0.0), (7, 0.0), (7, 1e3), (1000, 0.0)])
def test_chunked_equals_naive_loop(kind, chunk, checkpoint_mb):
    tok, batch = tokenizer_and_batch()
    model = tiny.build_model(kind, tok, seed=1)
    args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    sums, counts = sequence_logps(model, *args, chunk=chunk, checkpoint_mb=checkpoint_mb)
    ref_sums, ref_counts = naive_logps(model, batch)
    assert sums.dtype == torch.float32
    torch.testing.assert_close(counts, ref_counts)
    torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-4)
    if chunk != 7:
        return
    # gradients through the chunks, recomputed in backward or kept, equal the naive ones
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.autograd.grad(sums.sum(), params)
    g_ref = torch.autograd.grad(naive_logps(model, batch)[0].sum(), params)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_uniform_model_hand_checked():
    """A zero LM head gives uniform next tokens: ℓ = -|y| log V exactly."""
    tok, batch = tokenizer_and_batch()
    model = tiny.build_model("tiny-llama", tok)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    sums, counts = PolicyLogps(model, chunk=5)(
        batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    )
    resp = batch["loss_mask"][:, 1:].sum(-1).float()
    torch.testing.assert_close(counts, resp)
    torch.testing.assert_close(sums, -resp * math.log(len(tok)))


def test_bf16_model_gives_fp32_logps():
    tok, batch = tokenizer_and_batch()
    model = tiny.build_model("tiny-gpt2", tok).to(torch.bfloat16)
    args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    with torch.no_grad():
        sums, _ = sequence_logps(model, *args, chunk=4)
        ref, _ = naive_logps(model, batch)  # bf16 logits upcast before the log-softmax
    assert sums.dtype == torch.float32
    torch.testing.assert_close(sums, ref, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_per_token_logps_are_tempered_full_logits_token_by_token(temperature):
    """PolicyLogps(temperature=...) per token: log softmax(logits / T)[next token] at each
    counted position (objectives.tempered_logps on the full logits), 0 elsewhere, on the
    batch's whole width; at T = 1 their sums are sequence_logps'."""
    from objectives import tempered_logps

    tok, batch = tokenizer_and_batch()
    model = tiny.build_model("tiny-gpt2", tok, seed=1)
    args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    got, mask = PolicyLogps(model, chunk=7)(*args, temperature=temperature)
    logits = model(input_ids=args[0], attention_mask=args[1]).logits.float()
    expected = tempered_logps(logits[:, :-1], args[0][:, 1:], temperature)
    assert got.shape == mask.shape == expected.shape
    torch.testing.assert_close(mask, args[2][:, 1:].float())
    ids, m = args[0].tolist(), args[2].tolist()
    for i in range(len(ids)):  # counted positions: the tempered log-prob; others exactly 0
        for t in range(1, len(ids[i])):
            want = float(expected[i, t - 1]) if m[i][t] else 0.0
            assert float(got[i, t - 1]) == pytest.approx(want, abs=1e-4)
    if temperature == 1.0:
        sums, _ = sequence_logps(model, *args, chunk=7)
        torch.testing.assert_close(got.sum(-1), sums, rtol=1e-5, atol=1e-4)
