"""TRL's GRPO flags in llm.train's rounds modes (``llm.rounds_flags``): each maps onto our field
with GRPO's meaning (whatever the order of --mode), flags without a meaning there are one-line
errors naming them, ``--max_steps 1`` takes exactly one update, and ``--dataset_name FILE``
trains on FILE's prompts. Tiny models, real runs."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from llm.flags import translate_all
from llm.train import main, parse
from runio import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = os.path.join(REPO, "data", "shakespeare_prompts", "train.jsonl")
ON = ["--mode", "on_policy"]


@pytest.mark.parametrize(
    ("argv", "ours"),
    [
        (["--dataset_name", "p.jsonl"], ["--prompts", "p.jsonl"]),
        (["--data", "p.jsonl"], ["--prompts", "p.jsonl"]),
        (["--num_generations", "6"], ["--samples-per-prompt", "6"]),
        (["--num_iterations", "3"], ["--steps-per-round", "3"]),
        (["--max_completion_length", "16"], ["--max-new-tokens", "16"]),
        (["--temperature", "0.7"], ["--temperature", "0.7"]),
        (["--max_steps", "5"], ["--max-steps", "5"]),
        (["--num_generations", "4", "--per_device_train_batch_size", "8"],
         ["--samples-per-prompt", "4", "--prompts-per-round", "2"]),
        (["--per_device_train_batch_size", "8"], ["--prompts-per-round", "2"]),  # N = 4
        (["--objective", "reinforce", "--beta", "0.05"],
         ["--objective", "reinforce", "--kl-penalty", "0.05"]),
        (["--objective", "rwr", "--beta", "0.05"], ["--objective", "rwr", "--hp", "beta=0.05"]),
        (["--objective", "ppo", "--epsilon", "0.3"],
         ["--objective", "ppo", "--hp", "clip_eps=0.3"]),
        (["--epsilon", "0.2"], []),  # TRL's default: ignored by a non-clipping objective
    ],
)  # fmt: skip
def test_grpo_flags_become_our_rounds_fields(argv, ours):
    assert translate_all([*ON, *argv]).argv == [*ON, *ours]
    assert sorted(translate_all([*argv, *ON]).argv) == sorted([*ON, *ours])  # --mode last


def test_per_device_batch_counts_every_process(monkeypatch):
    """TRL's per-device batch under W processes: the round holds W of them (B·W / N prompts)."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = [*ON, "--num_generations", "4", "--per_device_train_batch_size", "8"]
    assert translate_all(argv).argv == [
        *ON,
        "--samples-per-prompt",
        "4",
        "--prompts-per-round",
        "4",
    ]


def test_mode_after_the_flags_is_seen():
    t = translate_all(["--dataset_name", "p.jsonl", "--num_generations", "2", "--mode", "hybrid"])
    assert t.argv == ["--prompts", "p.jsonl", "--samples-per-prompt", "2", "--mode", "hybrid"]
    assert t.spelled == {"prompts": "--dataset_name", "samples_per_prompt": "--num_generations"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max_length", "64"], "--max_length: no counterpart in the rounds modes; the rounds"),
        (["--num_train_epochs", "2"], "--num_train_epochs: no counterpart in the rounds modes; r"),
        (["--gradient_accumulation_steps", "2"], "--gradient_accumulation_steps: no counterpart"),
        (["--per_device_eval_batch_size", "2"], "--per_device_eval_batch_size: no counterpart"),
        (["--dataset_test_split", "test"], "--dataset_test_split: no counterpart in the rounds"),
        (["--eval_strategy", "no"], "--eval_strategy: no counterpart in the rounds modes"),
        (["--save_steps", "2"], "--save_steps: no counterpart in the rounds modes; --save-every"),
        (["--logging_steps", "2"], "--logging_steps: no counterpart in the rounds modes; one"),
        (["--use_vllm"], "--use_vllm: no counterpart in the rounds modes"),
        (["--reward_funcs", "m:f"], "--reward_funcs: no counterpart in the rounds modes; use --r"),
        (["--epsilon", "0.3"], "--epsilon 0.3: dpo has no clip_eps (--epsilon is clip_eps of "),
        (["--objective", "reinforce", "--epsilon_high", "0.28"],
         "--epsilon_high 0.28: reinforce has no clip_eps_high (--epsilon_high is clip_eps_high"),
        (["--num_generations", "4", "--per_device_train_batch_size", "6"],
         "--per_device_train_batch_size 6: TRL's batch counts completions, 4 per prompt"),
        (["--dataset_name", "a.jsonl", "--prompts", "b.jsonl"],
         "--dataset_name and --prompts both name the prompts file; give one"),
    ],
)  # fmt: skip
def test_flags_without_a_rounds_meaning_are_refused(argv, message):
    with pytest.raises(UserError) as e:
        translate_all([*ON, *argv])
    assert str(e.value).startswith(message), str(e.value)


def test_grpo_only_flags_are_refused_in_the_pairs_mode():
    for flag in ("--num_generations", "--num_iterations", "--epsilon"):
        with pytest.raises(UserError, match=f"^{flag}: TRL's GRPO flag has no counterpart in the"):
            translate_all([flag, "2"])


def test_parsed_config_and_errors_name_the_grpo_flag(capsys):
    cfg = parse([*ON, "--num_generations", "2", "--per_device_train_batch_size", "6",
                 "--num_iterations", "3", "--objective", "reinforce", "--beta", "0.1"])  # fmt: skip
    assert (cfg.samples_per_prompt, cfg.prompts_per_round, cfg.steps_per_round) == (2, 3, 3)
    assert cfg.kl_penalty == 0.1
    code = main([*ON, "--num_generations", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --num_generations: must be")


def base(tmp_path, *extra) -> list[str]:
    return [
        *ON, "--rounds", "3", "--prompts-per-round", "2", "--samples-per-prompt", "2",
        "--max-new-tokens", "4", "--max-len", "140", "--max-prompt-len", "110",
        "--objective", "reinforce", "--reward", "length_min", "--no-progress",
        "--no-save-final", "--no-plot", "--out-dir", str(tmp_path / "runs"),
        "--cache-dir", str(tmp_path / "cache"), "--name", "r", *extra,
    ]  # fmt: skip


def records(tmp_path) -> list[dict]:
    return [json.loads(x) for x in open(tmp_path / "runs" / "r" / "metrics.jsonl")]


def test_max_steps_bounds_the_updates(tmp_path, capsys):
    assert main(base(tmp_path, "--max_steps", "1", "--num_iterations", "2")) == 0
    recs = records(tmp_path)
    assert [(r["round"], r["step"]) for r in recs] == [(0, 1)]
    assert (tmp_path / "runs" / "r" / "COMPLETE").exists()
    meta = json.load(open(tmp_path / "runs" / "r" / "config.json"))
    assert meta["config"]["max_steps"] == 1


def test_max_steps_cuts_the_last_round_and_resume_finishes_it(tmp_path, capsys):
    args = base(tmp_path, "--max_steps", "3", "--num_iterations", "2", "--save-every", "1")
    assert main(args) == 0
    recs = records(tmp_path)
    assert [(r["round"], r["step"]) for r in recs] == [(0, 2), (1, 3)]
    assert main([*args, "--resume"]) == 0  # complete: nothing to resume
    assert [r["step"] for r in records(tmp_path)] == [2, 3]


def test_dataset_name_trains_on_the_files_prompts(tmp_path, capsys):
    rows = [{"prompt": f"Speak, friend number {k}, and enter."} for k in range(4)]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(base(tmp_path, "--dataset_name", str(path), "--rounds", "1")) == 0
    meta = json.load(open(tmp_path / "runs" / "r" / "config.json"))
    assert meta["config"]["prompts"] == str(path)
    gens = [json.loads(x) for x in open(tmp_path / "runs" / "r" / "generations.jsonl")]
    assert gens and all(g["prompt"] in {r["prompt"] for r in rows} for g in gens)
