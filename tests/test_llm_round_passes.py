"""Skipped scoring passes (``llm.round_passes``) change nothing: a run without the reference and
the no-grad policy pass equals the same run forcing both (metrics, final weights), for full
fine-tuning and LoRA, with micro-batches, and with a pairwise objective whose reference pass
stays; which passes each knob needs."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file
from test_llm_onpolicy import cfg, records

import objectives
from llm import onpolicy, round_passes


def _weights(run_dir: str) -> dict:
    final = os.path.join(run_dir, "final")
    name = "adapter_model.safetensors" if os.path.exists(
        os.path.join(final, "adapter_model.safetensors")) else "model.safetensors"  # fmt: skip
    return load_file(os.path.join(final, name))


def _pair(tmp_path, **kw):
    c = cfg(tmp_path, steps_per_round=1, rounds=3, save_final=True, **kw)
    skip = onpolicy.run(c.replace(name="skip"))
    forced = onpolicy.run(c.replace(name="forced"), skip_passes=False)
    return skip, forced


def _reference_of(res) -> str:
    return json.load(open(os.path.join(res["run_dir"], "config.json")))["reference"]


@pytest.mark.parametrize(
    "kw",
    [
        dict(objective="reinforce"),
        dict(objective="ppo", lora=True, lr=1e-2),
        dict(objective="reinforce", prompts_per_round=3, micro_prompts=1),
    ],
    ids=["reinforce", "ppo-lora", "micro"],
)
def test_skipping_the_passes_equals_forcing_them(tmp_path, kw):
    skip, forced = _pair(tmp_path, **kw)
    assert _reference_of(skip) == "none" and _reference_of(forced) != "none"
    rs, rf = records(skip["run_dir"]), records(forced["run_dir"])
    assert len(rs) == len(rf) == 3
    for a, b in zip(rs, rf):
        assert "policy/kl_ref" not in a and "policy/kl_ref" in b  # no reference: left out
        for key in ("reward/mean", "response/length_mean", "loss/train", "grad/norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    assert rs[-1]["reward/mean"] != rs[0]["reward/mean"] or rs[-1]["loss/train"] != 0
    wa, wb = _weights(skip["run_dir"]), _weights(forced["run_dir"])
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def test_a_pairwise_objective_keeps_its_reference_pass_and_defers_the_policy_one(tmp_path):
    skip, forced = _pair(tmp_path, objective="dpo")
    assert _reference_of(skip) == _reference_of(forced) == "copy"
    for a, b in zip(records(skip["run_dir"]), records(forced["run_dir"])):
        for key in ("loss/train", "grad/norm", "policy/kl_ref", "pairs/valid"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key


def test_which_knobs_need_the_passes(tmp_path):
    c = cfg(tmp_path, objective="reinforce", steps_per_round=1)
    rf, dpo = objectives.get("reinforce"), objectives.get("dpo")
    assert not round_passes.needs_ref_logps(c, rf, c.hparams())
    assert round_passes.needs_ref_logps(c, rf, {**c.hparams(), "kl_coef": 0.1})
    assert round_passes.needs_ref_logps(c, dpo, c.replace(objective="dpo").hparams())
    for knob in (dict(kl_penalty=0.1), dict(kl_reward=0.1), dict(mode="hybrid")):
        assert round_passes.needs_ref_logps(c.replace(**knob), rf, c.hparams()), knob
    assert round_passes.defer_policy_pass(c)
    assert not round_passes.defer_policy_pass(c.replace(steps_per_round=2))
    assert not round_passes.defer_policy_pass(c.replace(kl_reward=0.1))
