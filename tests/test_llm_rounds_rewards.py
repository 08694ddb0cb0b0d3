"""TRL-style reward functions in the rounds modes (``llm.reward_fns``): called with TRL's
keywords (prompts, completions, completion_ids, the prompt rows' other columns per sample,
trainer_state), the old ``(prompts, responses, token_ids)`` signature still works; several
rewards are TRL's weighted sum with ``reward/<name>/mean`` logged; None is "not applicable"
(a sample no reward scores is an error naming them); a function that raises or returns NaN,
non-numbers or the wrong count is one line naming it (exit 2). Tiny models, real runs."""

import json
import math
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from llm.prompts import Prompt
from llm.reward_fns import build_rewards, is_trl_style, trl_context
from llm.train import main
from runio import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = os.path.join(REPO, "data", "shakespeare_prompts", "train.jsonl")
ME = "test_llm_rounds_rewards"
CALLS: list[dict] = []


def trl_len(prompts, completions, completion_ids, **kwargs):
    """TRL's convention: records what it was given; reward = number of completion tokens."""
    CALLS.append({"prompts": prompts, "completions": completions, "ids": completion_ids,
                  **kwargs})  # fmt: skip
    return [float(len(c)) for c in completion_ids]


def trl_solution(prompts, completions, solution, **kwargs):
    """1 when the reference answer's first letter is in the completion, else 0."""
    return [float(s[0] in c) for c, s in zip(completions, solution)]


def trl_half_none(prompts, completions, **kwargs):
    return [None if k % 2 else 2.0 for k in range(len(completions))]


def trl_all_none(prompts, completions, **kwargs):
    return [None] * len(completions)


def trl_raises(prompts, completions, **kwargs):
    raise ValueError("no judge available")


def trl_nan(prompts, completions, **kwargs):
    return [math.nan] * len(completions)


def trl_text(prompts, completions, **kwargs):
    return ["high"] * len(completions)


def trl_short(prompts, completions, **kwargs):
    return [1.0]


def old_tokens(prompts, responses, token_ids):
    return [float(sum(t) % 7) for t in token_ids]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    """Six shipped prompts, each with a reference answer column ``solution``."""
    rows = [json.loads(x) for x in open(PROMPTS, encoding="utf-8")][:6]
    rows = [{"prompt": r["prompt"], "solution": f"e{k}"} for k, r in enumerate(rows)]
    path = tmp_path_factory.mktemp("p") / "six.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def argv(prompts_file, tmp_path, *extra: str) -> list[str]:
    return [
        "--mode", "on_policy", "--prompts", str(prompts_file), "--rounds", "2",
        "--prompts-per-round", "2", "--samples-per-prompt", "3", "--steps-per-round", "1",
        "--max-new-tokens", "4", "--max-len", "140", "--max-prompt-len", "110",
        "--objective", "reinforce", "--no-progress", "--no-save-final", "--no-plot",
        "--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
        "--name", "r", *extra,
    ]  # fmt: skip


def cli(args, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(args)
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def records(tmp_path) -> list[dict]:
    return [json.loads(x) for x in open(tmp_path / "runs" / "r" / "metrics.jsonl")]


def test_signatures_are_told_apart():
    assert is_trl_style(trl_len) and is_trl_style(trl_solution)
    assert is_trl_style(lambda **kw: None)
    assert not is_trl_style(old_tokens)
    assert not is_trl_style(lambda prompts, responses, token_ids, **kw: None)


def test_trl_function_gets_trl_keywords_and_the_rows_columns(prompts_file, tmp_path, capsys):
    CALLS.clear()
    code, err = cli(argv(prompts_file, tmp_path, "--reward", f"{ME}:trl_len"), capsys)
    assert code == 0, err
    assert len(CALLS) == 2, len(CALLS)  # one call per round (no evaluation configured)
    rows = [json.loads(x) for x in open(prompts_file)]
    for r, call in enumerate(CALLS):
        assert call["trainer_state"].round == r
        assert len(call["completions"]) == len(call["prompts"]) == 6
        assert all(isinstance(c, str) for c in call["completions"])
        assert all(isinstance(i, list) and all(isinstance(t, int) for t in i) for i in call["ids"])
        solution_of = {row["prompt"]: row["solution"] for row in rows}
        assert call["solution"] == [solution_of[p] for p in call["prompts"]]
        assert call["solution"][0] == call["solution"][1] == call["solution"][2]
        assert call["prompts"][0] == call["prompts"][2] != call["prompts"][3]
    recs = records(tmp_path)
    mean0 = sum(len(i) for i in CALLS[0]["ids"]) / 6
    assert recs[0]["reward/mean"] == pytest.approx(mean0)
    assert "reward/trl_len/mean" not in recs[0]  # one reward: the total is it


def test_several_rewards_are_the_weighted_sum_with_each_logged(prompts_file, tmp_path, capsys):
    extra = ["--reward", f"{ME}:trl_len", f"{ME}:old_tokens", f"{ME}:trl_half_none",
             "--reward-weights", "0.5", "2", "-1"]  # fmt: skip
    code, err = cli(argv(prompts_file, tmp_path, *extra), capsys)
    assert code == 0, err
    for rec in records(tmp_path):
        a, b = rec["reward/trl_len/mean"], rec["reward/old_tokens/mean"]
        assert rec["reward/trl_half_none/mean"] == 2.0  # the mean over the samples it scored
        # nansum: trl_half_none adds -1 * 2 to 3 of the 6 samples (k even of each call)
        assert rec["reward/mean"] == pytest.approx(0.5 * a + 2 * b - 1.0)
    config = json.load(open(tmp_path / "runs" / "r" / "config.json"))["config"]
    assert config["reward_weights"] == [0.5, 2.0, -1.0]
    assert config["reward"] == [f"{ME}:trl_len", f"{ME}:old_tokens", f"{ME}:trl_half_none"]


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ([f"{ME}:trl_raises"],
         rf"error: round 0: reward {ME}:trl_raises raised ValueError: no judge available on the "
         r"samples of prompt row \d of .*six.jsonl \(no update was made"),
        ([f"{ME}:trl_nan"], rf"round 0: reward {ME}:trl_nan: returned nan for response 0; rewa"),
        ([f"{ME}:trl_text"], rf"round 0: reward {ME}:trl_text: returned str 'high' for respon"),
        ([f"{ME}:trl_short"], rf"round 0: reward {ME}:trl_short: returned 1 values for 6 resp"),
        ([f"{ME}:trl_all_none", f"{ME}:trl_half_none"],
         rf"round 0: every reward \({ME}:trl_all_none, {ME}:trl_half_none\) returned None for "
         r"response 1"),
    ],
    ids=["raises", "nan", "text", "count", "all_none"],
)  # fmt: skip
def test_a_failing_reward_is_one_line_naming_it(extra, pattern, prompts_file, tmp_path, capsys):
    code, err = cli(argv(prompts_file, tmp_path, "--reward", *extra), capsys)
    assert code == 2 and len(err) == 1, err
    assert re.search(pattern, err[0]), err[0]
    assert (tmp_path / "runs" / "r" / "FAILED").exists()


def test_weights_must_match_the_rewards(prompts_file, tmp_path, capsys):
    extra = ["--reward", "length_min", f"{ME}:trl_len", "--reward-weights", "1"]
    code, err = cli(argv(prompts_file, tmp_path, *extra), capsys)
    assert code == 2 and err == [
        "error: TrainConfig.reward_weights: 1 weights for 2 rewards (one per --reward)"
    ], err
    assert not (tmp_path / "runs").exists()


def test_conversational_prompts_give_message_completions():
    chat = [{"role": "user", "content": "Hi"}]
    yo = [{"role": "user", "content": "Yo"}]
    prompts = [Prompt(0, (1, 2), "Hi", chat, {"solution": "a"}),
               Prompt(1, (3,), "Yo", yo, {"solution": "b"})]  # fmt: skip
    ctx = trl_context(prompts, [1, 0], 2, ["x", "y", "z", "w"], round_index=4)
    assert ctx["prompts"] == [prompts[1].raw, prompts[1].raw, chat, chat]
    assert ctx["completions"][0] == [{"role": "assistant", "content": "x"}]
    assert ctx["columns"] == {"solution": ["b", "b", "a", "a"]}
    plain = [Prompt(0, (1,), "Hi", "Hi", {})]
    assert trl_context(plain, [0], 2, ["x", "y"], 0)["completions"] == ["x", "y"]


def test_rewards_object_sums_with_weights_and_nones():
    import torch

    fns = build_rewards((f"{ME}:trl_half_none", f"{ME}:old_tokens"), (), (3.0, 1.0))
    ids = [[1, 2], [3], [4], [5, 6]]
    total = fns(["p"] * 4, ["a", "b", "c", "d"], ids, torch.tensor([2, 1, 1, 2]))
    assert total.tolist() == [6.0 + 3.0, 3.0, 6.0 + 4.0, 4.0]
    assert torch.isnan(fns.last["trl_half_none"][1])
    with pytest.raises(UserError, match="every reward"):
        build_rewards((f"{ME}:trl_all_none",), ())(["p"], ["a"], [[1]], torch.tensor([1]))
