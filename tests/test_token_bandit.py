"""The N-token bandit (``experiments.token_bandit``): the fitted GPT-2 matches π_ref at every
position; the reward callable equals a hand computation; the per-position metrics from one
forward pass equal a loop over prefixes and a plain Monte-Carlo estimate; responses are exactly 9
arm tokens; on-policy and fixed-data offline rounds run through ``llm.train.run``."""

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from experiments import token_bandit as tb
from llm.sampling import HFSampler
from toy.bandit import reference_probs, reward_vector

# Per-position KL(π_ref ‖ π_θ) bound of the fit. By Pinsker the total variation is then at most
# sqrt(1e-4 / 2) ≈ 0.007, so every per-token expected reward in [0, 1] is within 0.007 of π_ref's,
# and a 9-token response's KL is below 1e-3 nats — two orders below the KL of any trained policy.
KL_BOUND = 1e-4


@pytest.fixture(scope="module")
def ref_dir():
    return tb.prepare()  # the cached fit of analysis.run_token_bandit (fitted once if missing)


@pytest.fixture(scope="module")
def ref_lm(ref_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(ref_dir).eval()


@pytest.fixture(scope="module")
def peaky_lm():
    """A random GPT-2 with a scaled head: next-token laws that vary with the prefix."""
    lm = tb.build_model(tb.FitConfig(seed=3)).eval()
    with torch.no_grad():
        lm.transformer.wte.weight.mul_(8.0)
    return lm


def test_fit_matches_reference_at_every_position(ref_dir, ref_lm):
    report = json.loads((ref_dir / "fit_report.json").read_text())
    assert len(report["kl_ref_per_position"]) == tb.N_RESPONSE
    with torch.no_grad():
        kl = tb.kl_per_position(ref_lm, tb.random_sequences(512, torch.Generator().manual_seed(7)))
    assert kl.shape == (tb.N_RESPONSE,) and float(kl.max()) < KL_BOUND
    # the exact metrics of the fitted model equal π_ref's (position 1 depends on the prompt only)
    held = tb.load_prompt_ids(ref_dir / "heldout.jsonl")
    m = tb.exact_metrics(ref_lm, held, "R1")
    p_K = reference_probs()
    assert m["reward/expected"] == pytest.approx(float(p_K @ reward_vector("R1")), abs=5e-3)
    assert m["mass/optimal_pos1"] == pytest.approx(float(p_K[70]), abs=5e-4)


def test_reward_callable_is_the_mean_token_reward():
    ids = [[70] * 9, [60, 70, 80, 70, 70, 70, 70, 70, 70], [10] * 9]
    e = math.exp(-1.0)
    assert tb.reward_r1([""] * 3, [""] * 3, ids) == pytest.approx([1.0, (7 + 2 * e) / 9, e**36])
    assert tb.reward_r2([""], [""], [[20, 10, 30, 20, 20, 20, 20, 20, 20]]) == pytest.approx(
        [(7 + 2 * e) / 9]
    )


def test_one_forward_equals_a_loop_over_prefixes(peaky_lm):
    seqs = tb.sample_sequences(peaky_lm, [3, 50], 4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        vec = tb.next_token_logprobs(peaky_lm, seqs)
        loop = torch.stack(
            [torch.log_softmax(peaky_lm(input_ids=seqs[:, : k + 1]).logits[:, -1], -1)
             for k in range(tb.N_RESPONSE)], 1)  # fmt: skip
    torch.testing.assert_close(vec, loop, atol=1e-5, rtol=1e-5)
    # the per-position metrics of the vectorised law equal plain loops over rows and arms
    pos = tb.position_metrics(vec, "R2")
    r = reward_vector("R2")
    for k in (0, 4, 8):
        by_row = [sum(math.exp(vec[b, k, a]) * float(r[a]) for a in range(100))
                  for b in range(seqs.shape[0])]  # fmt: skip
        assert float(pos["reward"][k]) == pytest.approx(sum(by_row) / len(by_row), rel=1e-4)


def test_exact_metric_equals_monte_carlo(peaky_lm):
    prompts = [3, 50]
    exact = tb.exact_metrics(peaky_lm, prompts, "R2", m=512, seed=1)["reward/expected"]
    seqs = tb.sample_sequences(peaky_lm, prompts, 1024, torch.Generator().manual_seed(2))
    mc = torch.tensor(tb.reward_r2(None, None, seqs[:, 1:].tolist()))
    se = float(mc.std()) / math.sqrt(len(mc))
    assert abs(exact - float(mc.mean())) < 4 * se + 2e-3, (exact, float(mc.mean()), se)


def test_responses_are_nine_arm_tokens(ref_dir, ref_lm):
    tok = tb.build_tokenizer()
    assert tok.pad_token_id == tok.eos_token_id == tb.N_ARMS == ref_lm.config.vocab_size
    assert tok("a17")["input_ids"] == [17]
    s = HFSampler(tok.pad_token_id, (tok.eos_token_id,), tb.N_RESPONSE).sample(
        ref_lm, [[3], [50]], 64, seed=0
    )
    assert s.tokens_BT.shape == (128, tb.N_RESPONSE)
    assert int(s.tokens_BT.max()) < tb.N_ARMS and bool(s.mask_BT.all())
    assert bool((s.lengths_B == tb.N_RESPONSE).all()) and not bool(s.ended_B.any())


@pytest.mark.parametrize("mode", ["on_policy", "offline"])
def test_rounds_run_through_the_harness(ref_dir, tmp_path, mode):
    from dataclasses import replace

    from analysis import run_token_bandit as rtb

    b = replace(rtb.QUICK, fit=tb.FitConfig(), rounds=2, steps_per_round=1, generations=40)
    rows = rtb.one_run(ref_dir, b, "R1", mode, "dpo", 0, tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0 <= r["reward/expected"] <= 1 and math.isfinite(r["loss/train"]) for r in rows)
    assert {f"mass/optimal_pos{k}" for k in range(1, 10)} <= rows[-1].keys()
    run_dir = next(tmp_path.iterdir())
    gens = [json.loads(x) for x in open(run_dir / "generations.jsonl")]
    if mode == "offline":  # one fixed dataset: the same prompt has the same samples every round
        first = {(g["prompt"], g["sample"]): g["response"] for g in gens if g["round"] == 0}
        later = {(g["prompt"], g["sample"]): g["response"] for g in gens if g["round"] == 1}
        assert len(first) == tb.N_OFFLINE_PROMPTS * 4 and later == first
