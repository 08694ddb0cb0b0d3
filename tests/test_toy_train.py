"""The bandit training loop: every objective, every mode, determinism, outputs, CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from objectives import OBJECTIVES
from toy import train as toy_train
from toy.config import PRESETS, BanditConfig, preset
from toy.train import run

TINY = dict(
    prompts_per_round=3,
    samples_per_prompt=4,
    rounds=3,
    steps_per_round=2,
    init_steps=3,
    n_train_contexts=20,
    init_contexts=10,
    n_eval_contexts=7,
    out_dir="",
    progress=False,
    dist_every=2,
)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_smoke_every_objective(name):
    res = run(BanditConfig(objective=name, seeds=(0, 1), **TINY))
    m = res.metrics
    assert len(m) == 2 * (3 * 2 + 1)
    trained = m[m.step > 0]
    assert np.isfinite(trained[["loss/train", "grad/norm", "reward/expected"]].to_numpy()).all()
    assert (trained["grad/norm"] > 0).all()
    assert res.dist.shape == (4, 2, 100) and np.allclose(res.dist.sum(-1), 1, atol=1e-5)
    assert list(res.dist_steps) == [0, 2, 4, 6]


def test_same_seed_identical_and_batched_equals_alone():
    a = run(BanditConfig(seeds=(3,), **TINY)).metrics
    b = run(BanditConfig(seeds=(3,), **TINY)).metrics
    pd.testing.assert_frame_equal(a, b)
    batched = run(BanditConfig(seeds=(5, 3), **TINY)).metrics
    alone = batched[batched.seed == 3].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, a, rtol=1e-4, atol=1e-6)
    other = batched[batched.seed == 5]
    assert not np.allclose(other["reward/expected"], a["reward/expected"])


def test_modes_and_options_run():
    for extra in (
        dict(mode="offline"),
        dict(mode="hybrid", offline_fraction=0.5),
        dict(objective="reinforce", baseline="running"),
        dict(objective="ppo", hp=("kl_coef=0.1",), kl_penalty=0.05),
        dict(policy="tabular", n_arms=7, reward_vector=tuple(float(i) for i in range(7))),
        dict(objective="ipo", hp=("tau=0.05",), pair_threshold=0.3),
    ):
        m = run(BanditConfig(**{**TINY, **extra})).metrics
        assert np.isfinite(m.loc[m.step > 0, "loss/train"]).all(), extra


def test_offline_samples_come_from_reference():
    """Offline: every round's old log-probs are π_ref's; on-policy: they are the policy's."""
    cfg = BanditConfig(mode="offline", **TINY)
    rec, _ = toy_train.train(cfg)
    for rnd in rec.rounds:
        assert torch.equal(rnd.old_logps_PN, rnd.ref_logps_PN)
    rec, _ = toy_train.train(cfg.replace(mode="on_policy", lr=0.05))
    assert not torch.equal(rec.rounds[-1].old_logps_PN, rec.rounds[-1].ref_logps_PN)
    assert torch.equal(rec.rounds[0].old_logps_PN, rec.rounds[0].ref_logps_PN)  # round 0


def test_initialisation_fits_reference():
    m = run(BanditConfig(**{**TINY, "init_steps": 100})).metrics
    assert m.loc[m.step == 0, "policy/kl_ref"].item() < 0.02


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("objective", "dpx", "unknown 'dpx'"),
        ("rounds", 0, "BanditConfig.rounds: must be at least 1"),
        ("offline_fraction", 1.5, "offline_fraction"),
        ("hp", ("beta",), "key=value"),
        ("hp", ("zeta=1",), "no hyperparameter"),
        ("seeds", (1, 1), "seeds"),
        ("reward", "R9", "BanditConfig.reward"),
        ("samples_per_prompt", 1, "samples_per_prompt"),
    ],
)
def test_invalid_config_names_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        BanditConfig(**{field: value})


def test_presets_are_valid_and_cover_the_spec():
    assert {"offline_bon", "offline_ipo", "onpolicy_bon", "onpolicy_ipo"} <= set(PRESETS)
    ipo = preset("offline_ipo")
    assert ipo.hparams() == {"tau": 0.05} and ipo.pair_threshold == 0.2 and ipo.lr == 3e-3
    on = preset("onpolicy_bon")
    assert on.rounds * on.prompts_per_round * on.samples_per_prompt == 10_000
    assert on.total_steps == 1500


def test_presets_train_on_a_fixed_set_of_their_p_prompts():
    """Like the official scripts (``num_train_states``), each preset's pool of training prompts
    is exactly its P prompts, and the π_ref initialisation is fitted on them; the large pool
    stays the default of a plain config."""
    for name, cfg in PRESETS.items():
        assert cfg.n_train_contexts == cfg.prompts_per_round, name
        assert cfg.init_contexts >= cfg.n_train_contexts, name
    pools = {name: PRESETS[name].n_train_contexts for name in ("offline_bon", "offline_ipo")}
    assert pools == {"offline_bon": 5, "offline_ipo": 100}  # the official scripts' counts
    assert BanditConfig().n_train_contexts == 1000


def test_outputs_written(tmp_path):
    cfg = BanditConfig(**{**TINY, "out_dir": str(tmp_path), "name": "t"})
    res = run(cfg)
    meta = json.loads((tmp_path / "t" / "config.json").read_text())
    assert meta["config"]["objective"] == "bon" and meta["seeds"] == [0]
    assert {"torch", "numpy", "python"} <= set(meta["versions"]) and "git_sha" in meta
    assert meta["config"]["resolved_hparams"] == {}
    back = pd.read_json(tmp_path / "t" / "metrics.jsonl", lines=True)
    pd.testing.assert_frame_equal(back, res.metrics, check_dtype=False)
    with np.load(tmp_path / "t" / "dist.npz") as z:
        assert z["dist"].shape == res.dist.shape


def test_cli_help_lists_everything(capsys):
    with pytest.raises(SystemExit):
        toy_train.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--objective", "--seeds", "--hp", "--mode", "--steps-per-round", "--preset"):
        assert flag in out
    assert "onpolicy_bon" in out


def test_cli_runs_a_preset(tmp_path, capsys):
    toy_train.main(
        [
            "--preset",
            "offline_bon",
            "--steps-per-round",
            "3",
            "--init-steps",
            "2",
            "--seeds",
            "0",
            "1",
            "--out-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert "expected reward after 3 steps" in out
    (run_dir,) = tmp_path.glob("bon_offline_R2_P5_s0-1_*")  # the name ends in a config hash
    assert (run_dir / "metrics.jsonl").exists() and (run_dir / "COMPLETE").exists()


@pytest.fixture(scope="module")
def bon_final_rewards():
    """Final expected reward of on-policy vs offline best-of-N, 1,500 steps, 3 seeds."""
    kw = dict(seeds=(0, 1, 2), out_dir="", progress=False)
    out = {}
    for reward in ("R1", "R2"):
        for mode, cfg in (
            ("on", preset("onpolicy_bon", reward=reward, **kw)),
            ("off", preset("offline_bon", reward=reward, steps_per_round=1500, **kw)),
        ):
            m = run(cfg).metrics
            out[mode, reward] = m.loc[m.step == cfg.total_steps, "reward/expected"].mean()
    return out


@pytest.mark.slow
def test_on_policy_bon_far_above_offline_on_r1(bon_final_rewards):
    r = bon_final_rewards
    assert r["on", "R1"] > 0.9 and r["on", "R1"] - r["off", "R1"] > 0.5  # 0.999 vs 0.229


@pytest.mark.slow
def test_on_policy_bon_gains_far_less_on_r2(bon_final_rewards):
    r = bon_final_rewards
    # measured 1.000 vs 0.966 on one CPU and 1.000 vs 0.892 on another (AMD EPYC): 1,500 offline
    # steps on 5 prompts amplify the last bits of float rounding, so the bound leaves room for both
    gap_r2 = r["on", "R2"] - r["off", "R2"]
    assert 0 <= gap_r2 < 0.15 and gap_r2 < (r["on", "R1"] - r["off", "R1"]) / 5
