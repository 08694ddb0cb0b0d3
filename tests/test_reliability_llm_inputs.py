"""The LLM harness's inputs under the error contract: every entry point validates field types the
same way (``TrainConfig`` in Python, ``python -m llm.train``); prompt messages with unknown roles
or layouts are refused with the file and row; a ``module:function`` reward is checked before the
model loads, and what it raises at import or per call is one line naming it, the round and the
prompt row (FAILED written, nothing partial that looks like a result); rounds without pairs are
warned about once and counted, and a threshold no reward gap can pass is refused; requests that
cannot be met (more prompts than the file holds, a batch-coupled objective split into
micro-batches) are refused, not trimmed.

Each case asserts the exit code (``llm.train.main``) or the exception and its message, exactly
one stderr line, no run directory for a refused config, and what a failed run leaves."""

import json
import os
import re
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

import objectives
from llm.config import TrainConfig
from llm.train import main, run
from runio import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = os.path.join(REPO, "data", "shakespeare_prompts", "train.jsonl")
ME = "test_reliability_llm_inputs"
NOT_CALLABLE = 3
CALLS = {"n": 0}


def token_reward(prompts, responses, token_ids):
    return [float(sum(t) % 7) for t in token_ids]


def constant_reward(prompts, responses, token_ids):
    return [1.0] * len(responses)


def wrong_signature(texts):
    return [0.0] * len(texts)


def two_values(prompts, responses, token_ids):
    return [0.0, 1.0]


def raises_on_one_prompt(prompts, responses, token_ids):
    """Raises on the samples of one prompt (its text starts with 'Bad'), whatever the batch."""
    if any(p.startswith("Bad") for p in prompts):
        raise ValueError("cannot score this prompt")
    return [0.0] * len(responses)


def raises_from_second_call(prompts, responses, token_ids):
    CALLS["n"] += 1
    if CALLS["n"] >= 2:
        raise RuntimeError("the scorer went away")
    return [float(sum(t) % 7) for t in token_ids]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    """Six shipped prompts; one more with a prompt starting 'Bad' as row 3."""
    d = tmp_path_factory.mktemp("prompts")
    rows = [json.loads(x) for x in open(PROMPTS, encoding="utf-8")][:6]
    (d / "six.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = [*rows[:3], {"prompt": "Bad prompt here"}, *rows[3:]]
    (d / "bad_row.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    return d


def base_argv(prompts_file, tmp_path, *extra: str) -> list[str]:
    return [
        "--mode", "on_policy", "--prompts", str(prompts_file), "--rounds", "2",
        "--prompts-per-round", "2", "--samples-per-prompt", "3", "--steps-per-round", "1",
        "--max-new-tokens", "4", "--max-len", "140", "--max-prompt-len", "110",
        "--reward", f"{ME}:token_reward", "--no-progress", "--no-save-final",
        "--out-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
        "--name", "r", *extra,
    ]  # fmt: skip


def cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    """Exit code and stderr's non-empty lines of the in-process CLI."""
    capsys.readouterr()
    code = main(argv)
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def refused(argv, tmp_path, capsys, pattern: str) -> None:
    """Exit 2, one stderr line matching ``pattern``, no traceback, no run directory."""
    code, err = cli(argv, capsys)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(pattern, err[0]), err[0]
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.rglob("*"))


def write_prompts(tmp_path, rows) -> str:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ---- A: one validation for Python and the CLI ------------------------------------------------

PYTHON_CASES = [
    ("hp_string", dict(hp="beta=0.1"), r"TrainConfig.hp: must be a sequence of strings, got 'beta"),
    ("reward_args_string", dict(mode="on_policy", reward="length_mode", reward_args="m=3"),
     r"TrainConfig.reward_args: must be a sequence of strings, got 'm=3'"),
    ("lora_targets_string", dict(lora_targets="q_proj"),
     r"TrainConfig.lora_targets: must be a sequence of strings, got 'q_proj'"),
    ("mode_unknown", dict(mode="onpolicy"), r"TrainConfig.mode: must be one of 'pairs', 'on_pol"),
    ("baseline_unknown", dict(mode="on_policy", baseline="runing"),
     r"TrainConfig.baseline: must be one of 'group', 'running', got 'runing'"),
    ("ref_unknown", dict(ref="cpy"), r"TrainConfig.ref: must be one of 'auto', 'copy'"),
    ("precision_unknown", dict(precision="fp16"), r"TrainConfig.precision: must be one of"),
    ("rounds_fraction", dict(mode="on_policy", rounds=2.5), r"TrainConfig.rounds: must be an in"),
    ("batch_fraction", dict(batch_size=4.0), r"TrainConfig.batch_size: must be an integer, got 4"),
    ("lr_bool", dict(lr=True), r"TrainConfig.lr: must be a number, got True"),
    ("aot_micro_prompts", dict(mode="on_policy", objective="aot", micro_prompts=3),
     r"TrainConfig.micro_prompts: 'aot' is batch-coupled .* use --micro-prompts 0"),
    ("aot_grad_accum", dict(objective="aot_unpaired", grad_accum=2, batch_size=2),
     r"TrainConfig.grad_accum: 'aot_unpaired' is batch-coupled .* --batch-size 4 instead"),
    ("threshold_length_min", dict(mode="on_policy", pair_threshold=4, max_new_tokens=4),
     r"pair_threshold: 4 is not below the largest reward gap length_min can give with max_new_t"),
    ("threshold_length_mode", dict(mode="hybrid", reward="length_mode", reward_args=("m=3",),
                                   max_new_tokens=6, pair_threshold=3, objective="sft"),
     r"pair_threshold: 3 .* \(3\): no pair can ever form, so 'sft' would never train"),
]  # fmt: skip


@pytest.mark.parametrize(("kw", "pattern"), [c[1:] for c in PYTHON_CASES],
                         ids=[c[0] for c in PYTHON_CASES])  # fmt: skip
def test_python_config_refuses_with_one_line_naming_the_field(kw, pattern):
    with pytest.raises(UserError, match=pattern) as info:
        TrainConfig(**kw)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_what_the_checks_still_accept():
    """Sequences as lists, ints for floats, micro_prompts ≥ P for AOT (one micro-batch), a
    threshold that a KL-shaped, group or user reward may pass."""
    TrainConfig(hp=["beta=0.2"], lora_targets=["q_proj"], lr=1, objective="aot", batch_size=8)
    TrainConfig(mode="on_policy", objective="aot", micro_prompts=8, prompts_per_round=8)
    TrainConfig(mode="on_policy", pair_threshold=99, kl_reward=0.1)
    TrainConfig(mode="on_policy", pair_threshold=99, objective="reinforce")
    TrainConfig(mode="on_policy", pair_threshold=99, reward=f"{ME}:token_reward")


def test_batch_coupled_refused_when_the_launcher_asks_for_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"TrainConfig.objective: 'aot' .* asks for 2 processes"):
        TrainConfig(objective="aot")
    TrainConfig(objective="dpo")


def test_batch_coupled_step_over_micro_batches_is_refused():
    """The step itself refuses what the config could not see (an undeclared launch)."""
    from llm.step import train_step

    acc = SimpleNamespace(num_processes=2)
    with pytest.raises(UserError, match=r"'aot' is batch-coupled.* 1 micro-batches × 2 process"):
        train_step(acc, None, None, None, None, [{}], objectives.get("aot"), {}, 8, 1.0)


CLI_CASES = [
    ("aot_micro", ["--objective", "aot", "--micro-prompts", "1"], r"micro_prompts: 'aot' is b"),
    ("threshold", ["--pair-threshold", "4", "--reward", "length_min"], r"no pair can ever form"),
    ("eval_prompts", ["--eval-prompts", "7"], r"eval_prompts: 7 exceeds the 6 valid prompts of"),
    ("prompts_per_round", ["--prompts-per-round", "8"], r"prompts_per_round: 8 exceeds the 6 va"),
    ("reward_args", ["--reward", "length_min", "--reward-args", "m=3"], r"reward_args: reward 'l"),
    ("no_module", ["--reward", "no_such_reward_module:f"],
     r"TrainConfig.reward: 'no_such_reward_module:f': no module 'no_such_reward_module' "
     r"importable from the working directory or PYTHONPATH"),
    ("no_attribute", ["--reward", f"{ME}:nosuch"], rf"module '{ME}' has no attribute 'nosuch'"),
    ("not_callable", ["--reward", f"{ME}:NOT_CALLABLE"], r"NOT_CALLABLE' is not callable \(its"),
    ("signature", ["--reward", f"{ME}:wrong_signature"],
     r"is called as wrong_signature\(prompts=list\[str\], .* its signature is wrong_signature\("),
    ("dry_run_reward", ["--dry-run", "--reward", "no_such_reward_module:f"], r"no module 'no_su"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "pattern"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])  # fmt: skip
def test_cli_refuses_before_the_model_loads(extra, pattern, prompts, tmp_path, capsys):
    refused(base_argv(prompts / "six.jsonl", tmp_path, *extra), tmp_path, capsys, pattern)


def test_aot_grad_accum_refused_on_the_pairs_cli(tmp_path, capsys):
    argv = ["--objective", "aot", "--grad-accum", "2", "--batch-size", "2", "--eval-data", "None"]
    argv += ["--out-dir", str(tmp_path / "runs"), "--no-progress"]
    refused(argv, tmp_path, capsys, r"TrainConfig.grad_accum: 'aot' is batch-coupled")


PROMPT_ROWS = [
    ("role", [{"prompt": "ok"}, {"prompt": [{"role": "human", "content": "Hi"}]}],
     r"p.jsonl: row 1: 'prompt' message 0 has role 'human'; accepted: system, developer, user"),
    ("assistant_last", [{"prompt": [{"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Hello"}]}],
     r"p.jsonl: row 0: 'prompt' ends with an assistant message \(message 1\)"),
    ("no_role", [{"prompt": [{"content": "Hi"}]}], r"row 0: 'prompt' message 0 must be a dict wi"),
    ("empty_list", [{"prompt": "ok"}, {"prompt": []}], r"row 1: empty 'prompt' message list"),
    ("pairs_layout", [{"chosen": "a b", "rejected": "a c"}],
     r"p.jsonl: no 'prompt' column \(columns \['chosen', 'rejected'\]: implicit-prompt prefer"),
    ("lm_layout", [{"messages": [{"role": "user", "content": "Hi"}]}], r"\(text or messages\) r"),
]  # fmt: skip


@pytest.mark.parametrize(("rows", "pattern"), [c[1:] for c in PROMPT_ROWS],
                         ids=[c[0] for c in PROMPT_ROWS])  # fmt: skip
def test_prompt_rows_with_unknown_roles_or_layouts_are_refused(rows, pattern, tmp_path, capsys):
    path = write_prompts(tmp_path, rows)
    argv = base_argv(path, tmp_path, "--prompts-per-round", "1")
    refused(argv, tmp_path, capsys, pattern)


def test_a_chat_template_that_refuses_the_messages_names_the_row(tmp_path):
    """A template's raise_exception (roles must alternate) is the row's problem on both paths."""
    from llm import tiny
    from llm.data import DataError, tokenize_rows
    from llm.prompts import tokenize_prompts

    tok = tiny.build_tokenizer(["Hi there", "Hello you"])
    tok.chat_template = (
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    twice = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "there"}]
    with pytest.raises(DataError, match=r"f: row 1: the chat template refuses the messages \(rol"):
        tokenize_prompts([{"prompt": "Hi"}, {"prompt": twice}], tok, path="f", max_prompt_len=50)
    row = {"prompt": twice, "chosen": [{"role": "assistant", "content": "Hello"}],
           "rejected": [{"role": "assistant", "content": "you"}]}  # fmt: skip
    with pytest.raises(DataError, match=r"g: row 0: the chat template refuses the messages"):
        tokenize_rows([row], tok, path="g", max_len=50, max_prompt_len=40)


# ---- B: the reward is the user's code --------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("raise RuntimeError('boom at import')\n",
         r"importing '(\w+)' raised RuntimeError: boom at import"),
        ("import not_installed_dependency_xyz\n",
         r"importing '\w+' failed: No module named 'not_installed_dependency_xyz'"),
        ("def f(prompts, responses, token_ids:\n", r"importing '\w+' raised SyntaxError"),
    ],
    ids=["raises", "missing_dependency", "syntax"],
)  # fmt: skip
def test_reward_module_failing_at_import_is_one_line(
    source, pattern, prompts, tmp_path, capsys, monkeypatch, request
):
    name = f"reward_mod_{request.node.callspec.id}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = base_argv(prompts / "six.jsonl", tmp_path, "--reward", f"{name}:f")
    refused(argv, tmp_path, capsys, rf"error: TrainConfig.reward: '{name}:f': " + pattern)


def failed_run(argv, tmp_path, capsys, pattern) -> str:
    """Exit 2 with one line matching ``pattern``; FAILED holds it, COMPLETE is absent."""
    code, err = cli(argv, capsys)
    assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
    run_dir = tmp_path / "runs" / "r"
    assert err[0].endswith(f"[{run_dir}/FAILED]")
    assert re.search(pattern, (run_dir / "FAILED").read_text())
    assert not (run_dir / "COMPLETE").exists()
    return str(run_dir)


def test_reward_raising_names_function_round_and_prompt_row(prompts, tmp_path, capsys):
    """Row 3 of bad_row.jsonl makes the reward raise: drawn in round 0 with 7 prompts."""
    argv = base_argv(prompts / "bad_row.jsonl", tmp_path, "--prompts-per-round", "7")
    argv += ["--reward", f"{ME}:raises_on_one_prompt"]
    pattern = (
        rf"round 0: reward {ME}:raises_on_one_prompt raised ValueError: cannot score this "
        r"prompt on the samples of prompt row 3 of .*bad_row.jsonl \(no update was made"
    )
    run_dir = failed_run(argv, tmp_path, capsys, pattern)
    assert not os.path.exists(os.path.join(run_dir, "metrics.jsonl"))
    assert not os.path.exists(os.path.join(run_dir, "generations.jsonl"))


def test_reward_raising_in_a_later_round_keeps_finished_rounds_only(prompts, tmp_path, capsys):
    CALLS["n"] = 0
    argv = base_argv(prompts / "six.jsonl", tmp_path, "--rounds", "3")
    argv += ["--reward", f"{ME}:raises_from_second_call"]
    run_dir = failed_run(argv, tmp_path, capsys, r"round 1: reward .* raised RuntimeError: the s")
    recs = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    gens = [json.loads(x) for x in open(os.path.join(run_dir, "generations.jsonl"))]
    assert [r["round"] for r in recs] == [0] and {g["round"] for g in gens} == {0}
    assert len(gens) == 4 and recs[0]["rounds/without_pairs"] == 0


def test_reward_returning_the_wrong_count_names_the_rows(prompts, tmp_path, capsys):
    argv = base_argv(prompts / "six.jsonl", tmp_path, "--reward", f"{ME}:two_values")
    failed_run(argv, tmp_path, capsys, r"round 0: reward .*two_values: returned 2 values for 6 r")


def test_rounds_without_pairs_warn_once_and_are_counted(prompts, tmp_path, capsys):
    """A constant reward never pairs: a pairwise objective's rounds run (nothing to train on),
    one warning line, pairs/valid 0 and rounds/without_pairs counting them."""
    argv = base_argv(prompts / "six.jsonl", tmp_path, "--reward", f"{ME}:constant_reward")
    code, err = cli(argv, capsys)
    assert code == 0 and len(err) == 1, err
    assert re.match(r"\[llm\] warning: round 0: no pair formed .* rounds/without_pairs", err[0])
    recs = [json.loads(x) for x in open(tmp_path / "runs" / "r" / "metrics.jsonl")]
    assert [(r["pairs/valid"], r["rounds/without_pairs"]) for r in recs] == [(0, 1), (0, 2)]
    assert (tmp_path / "runs" / "r" / "COMPLETE").exists()


def test_rounds_with_pairs_count_zero_and_groups_have_no_counter(prompts, tmp_path):
    c = TrainConfig(**{**PY_RUN, "prompts": str(prompts / "six.jsonl")}, out_dir=str(tmp_path))
    assert run(c.replace(name="dpo"))["rounds/without_pairs"] == 0
    assert "rounds/without_pairs" not in run(c.replace(name="rf", objective="reinforce"))


def test_resume_counts_rounds_without_pairs_from_the_kept_metrics(tmp_path):
    from llm.round_log import rounds_without_pairs

    recs = [{"round": 0, "pairs/valid": 0}, {"round": 1, "pairs/valid": 3},
            {"round": 2, "pairs/valid": 0}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert [rounds_without_pairs(tmp_path, k) for k in (0, 1, 2, 3)] == [0, 1, 1, 2]


PY_RUN = dict(
    mode="on_policy", reward=f"{ME}:token_reward", rounds=1, prompts_per_round=2,
    samples_per_prompt=3, steps_per_round=1, max_new_tokens=4, max_len=140, max_prompt_len=110,
    progress=False, save_final=False,
)  # fmt: skip


def test_python_run_of_a_bad_reward_creates_no_run_directory(prompts, tmp_path):
    c = TrainConfig(**{**PY_RUN, "prompts": str(prompts / "six.jsonl")}, out_dir=str(tmp_path))
    for spec, pattern in [(f"{ME}:nosuch", "has no attribute"), ("no_mod_q:f", "no module")]:
        with pytest.raises(UserError, match=pattern):
            run(c.replace(reward=spec))
    assert list(tmp_path.iterdir()) == []
