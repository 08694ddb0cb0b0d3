"""The synthetic length tasks (docs/science.md §5): reference LM, rewards, data, runner."""

import dataclasses
import json

import pandas as pd
import pytest
import torch

from analysis import run_length_tasks as rlt
from experiments.length_ref import RefConfig, build_reference, prompt_ids
from experiments.length_tasks import (
    DatasetSampler,
    build_preferences,
    length_mode,
    ranked_pairs,
    reward_args,
    skew_length,
    task_rewards,
)
from llm.rewards import build_reward
from runio import config_hash

EOS = 2


def test_reference_lm_samples_broad_lengths_ending_in_eos(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm.sampling import HFSampler

    cfg = RefConfig(steps=120, batch=16)
    d = build_reference(cfg, tmp_path)
    assert build_reference(cfg, tmp_path) == d  # cached by the config's hash
    assert d.name == config_hash(dataclasses.asdict(cfg), n=16)
    assert config_hash(dataclasses.asdict(dataclasses.replace(cfg, seed=1)), n=16) != d.name
    tok, lm = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d)
    prompts = [json.loads(x)["prompt"] for x in open(d / "prompts.jsonl")][-24:]
    s = HFSampler(tok.pad_token_id, (tok.eos_token_id,), 24).sample(
        lm, [prompt_ids(tok, p) for p in prompts], 4, seed=0
    )
    lengths = s.lengths_B.float()
    assert s.ended_B.float().mean() > 0.75  # most responses end in EOS before the cap
    assert lengths.std() > 4 and len(set(s.lengths_B.tolist())) > 12  # broad


def test_task_rewards_equal_hand_computations():
    len_B = torch.tensor([0, 3, 7, 12])
    assert task_rewards("min", len_B).tolist() == [0, -3, -7, -12]
    assert task_rewards("mode", len_B, m=7).tolist() == [-7, -4, 0, -5]
    assert task_rewards("skew", len_B).tolist() == [0, -3, -7, -12]
    for task, m in (("min", None), ("mode", 7.0), ("skew", None)):  # as the harness scores
        fn = build_reward(rlt.TASKS[task], reward_args(task, m))
        assert torch.equal(fn(["p"] * 4, ["r"] * 4, [[1]] * 4, len_B), task_rewards(task, len_B, m))
    assert length_mode([3, 5, 5, 7, 7, 2]) == 5  # the smaller of equally common lengths


def test_preference_builder_ranks_pairs_by_reward():
    group = [[5, 6, 7, EOS], [5, EOS], [5, 6, 7, 8, 9]]  # the last was cut before EOS
    (row,) = build_preferences(["p"], [group], "min", EOS)
    assert row["lengths"] == [3, 1, 5] and row["rewards"] == [-3, -1, -5]
    assert all(ids[-1] == EOS and EOS not in ids[:-1] for ids in row["token_ids"])
    assert row["pairs"] == [[1, 2], [0, 2], [1, 0]]  # largest reward gap first
    (mode,) = build_preferences(["p"], [group], "mode", EOS, m=3)
    assert mode["rewards"] == [0, -2, -2] and mode["pairs"] == [[0, 1], [0, 2]]  # ties never pair
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(-5, 1, (7,), generator=gen).tolist()
    pairs = ranked_pairs(rewards)
    assert all(rewards[w] > rewards[lo] for w, lo in pairs)
    assert len(pairs) == sum(a > b for a in rewards for b in rewards)


def test_skew_truncation_skews_lengths_short_and_keeps_prefixes():
    assert [skew_length(n) for n in (0, 1, 4, 5, 8, 24)] == [0, 1, 1, 2, 2, 6]
    group = [[*range(10, 10 + n), EOS] for n in range(25)]  # lengths 0..24, uniform
    (skew,) = build_preferences(["p"], [group], "skew", EOS)
    (plain,) = build_preferences(["p"], [group], "min", EOS)
    assert skew["lengths"] == [skew_length(n) for n in range(25)]
    for s, p in zip(skew["token_ids"], plain["token_ids"]):
        assert s[-1] == EOS and s[:-1] == p[: len(s) - 1]  # a prefix, then EOS
    assert max(skew["lengths"]) <= 6 < max(plain["lengths"])
    assert sum(skew["lengths"]) / 25 < 0.3 * sum(plain["lengths"]) / 25 + 1
    assert skew["rewards"] == [-n for n in skew["lengths"]]  # the Min reward on the data


def test_dataset_sampler_serves_the_stored_responses():
    stored = {(1, 2, 3): [[5, EOS], [5, 6, 7, EOS]], (4,): [[9, 9, 9, EOS], [EOS]]}
    s = DatasetSampler(stored, pad_id=0, eos_id=EOS).sample(None, [(4,), (1, 2, 3)], 2, seed=1)
    assert s.lengths_B.tolist() == [3, 0, 1, 3] and s.ended_B.all()
    assert s.tokens_BT[1].tolist() == [EOS, 0, 0, 0]
    with pytest.raises(ValueError, match="2 stored responses"):
        DatasetSampler(stored, 0, EOS).sample(None, [(4,)], 3, seed=1)


def test_quick_runner_writes_the_metric_columns(tmp_path):
    sweep = dataclasses.replace(rlt.QUICK, tasks=("skew",), methods=("dpo_off", "dpo_on"))
    paths = rlt.sweep_all(sweep, tmp_path / "data", tmp_path / "runs", cache_root=tmp_path / "r")
    metrics, hist = pd.read_csv(paths[0]), pd.read_csv(paths[1])
    cols = {"task", "seed", "m", "method", "round", "step", "eval_length", "eval_length_std",
            "eval_reward", "loss", "kl_ref", "pairs"}  # fmt: skip
    assert cols <= set(metrics.columns)
    for _, df in metrics.groupby("method"):
        assert df.step.tolist() == [0, 1, 2]  # π_ref, then after each round's step
        torch.testing.assert_close(
            torch.tensor(df.eval_reward.values),
            -torch.tensor(df.eval_length.values),
            atol=1e-3,
            rtol=0,
        )
    assert {"before", "data", "after"} == set(hist.stage)
    rows = [json.loads(x) for x in open(tmp_path / "runs" / "skew_s0.jsonl")]
    assert len(rows) == sweep.rounds * sweep.prompts_per_round
    assert all(max(r["lengths"]) <= skew_length(sweep.max_new_tokens) for r in rows)


def test_committed_length_data_cover_every_method_task_and_seed():
    metrics = pd.read_csv(rlt.DATA / "length_tasks.csv")
    hist = pd.read_csv(rlt.DATA / "length_hist.csv")
    assert set(metrics.method) == set(rlt.METHODS) and set(metrics.task) == set(rlt.TASKS)
    assert metrics.groupby(["task", "method"]).seed.nunique().min() >= 3
    ref = hist[(hist.method == "reference") & (hist.task == "min")]
    mean = (ref.length * ref["count"]).sum() / ref["count"].sum()
    var = ((ref.length - mean) ** 2 * ref["count"]).sum() / ref["count"].sum()
    assert var**0.5 > 4  # π_ref's lengths are broad


def test_findings_table_reports_seed_means_and_first_step():
    import pandas as pd

    from analysis.lm_findings import length_table

    rows = []
    for seed, lengths in ((0, (10.0, 2.0, 0.0)), (1, (10.0, 1.0, 1.0))):
        for step, length in zip((0, 4, 8), lengths):
            rows.append(dict(task="min", method="dpo_on", seed=seed, step=step,
                             eval_length=length, eval_reward=-length))  # fmt: skip
    line = next(x for x in length_table(pd.DataFrame(rows)).splitlines() if "on-policy DPO" in x)
    # step 8: lengths 0 and 1 -> 0.50 ± 0.50; seed means 1.5 (step 4), 0.5 (step 8): first ≤ 1 is 8
    assert line == "| min | on-policy DPO | 10.00 | 0.50 ± 0.50 | -0.50 ± 0.50 | 8 |"
