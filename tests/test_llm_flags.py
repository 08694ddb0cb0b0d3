"""HF/TRL flag spellings map onto llm.train's (and llm.diagnose's) flags; TRL's loss names bring
TRL's conventions; flags without a counterpart are one-line errors naming the equivalent; errors
name the flag the user typed; --help lists the aliases."""

import os
import re

import pytest

from llm.flags import DIAGNOSE, translate, translate_all
from runio import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_hf_and_trl_spellings_become_our_flags():
    argv = ["--model_name_or_path", "m", "--learning-rate=5e-6", "--per_device_train_batch_size",
            "2", "--gradient_accumulation_steps", "4", "--num_train_epochs", "3", "--max_length",
            "512", "--max_prompt_length", "128", "--output_dir", "out", "--loss_type", "sigmoid",
            "--beta", "0.2", "--use_peft", "--lora_r", "16", "--seed", "3", "--bf16", "false",
            "--gradient_checkpointing", "--dataset_name", "d.jsonl"]  # fmt: skip
    assert translate(argv) == [
        "--model", "m", "--lr=5e-6", "--batch-size", "2", "--grad-accum", "4", "--epochs", "3",
        "--max-len", "512", "--max-prompt-len", "128", "--out-dir", "out", "--objective", "dpo",
        "--lora", "--lora-r", "16", "--seed", "3", "--precision", "fp32",
        "--gradient-checkpointing", "--data", "d.jsonl", "--hp", "beta=0.2",
    ]  # fmt: skip


def test_own_flags_pass_through_unchanged():
    argv = ["--data", "x", "--no-progress", "--hp", "beta=0.1", "--dry-run", "--bf16"]
    assert translate(argv) == ["--data", "x", "--no-progress", "--dry-run", "--precision", "bf16",
                               "--hp", "beta=0.1"]  # fmt: skip


def test_more_hf_spellings_are_aliases():
    argv = ["--per_device_eval_batch_size", "2", "--lr_scheduler_type", "cosine",
            "--lora_target_modules", "q_proj", "v_proj", "--precompute_ref_log_probs"]  # fmt: skip
    assert translate(argv) == ["--eval-batch-size", "2", "--lr-scheduler", "cosine",
                               "--lora-targets", "q_proj", "v_proj", "--ref",
                               "precomputed"]  # fmt: skip
    assert translate(["--precompute_ref_log_probs", "false"]) == []


def test_step_intervals_warmup_and_strategies():
    argv = ["--save_steps", "10", "--logging_steps=5", "--eval_steps", "20.0"]
    assert translate(argv) == ["--save-every", "10", "--log-every", "5", "--eval-every", "20"]
    with pytest.raises(UserError, match=r"--save_steps 0.1: HF's fraction of the total steps"):
        translate(["--save_steps", "0.1"])
    # HF's warmup_ratio, and transformers 5's warmup_steps below 1, are ratios of the total
    assert translate(["--warmup_ratio", "0.1"]) == ["--warmup-ratio", "0.1"]
    assert translate(["--warmup_steps", "0.25"]) == ["--warmup-ratio", "0.25"]
    assert translate(["--warmup_steps", "3"]) == ["--warmup-steps", "3"]
    # "steps" is what the *-every flags do; "no" translates; "epoch" names the step flag
    assert translate(["--eval_strategy", "steps", "--eval_steps", "5"]) == ["--eval-every", "5"]
    assert translate(["--eval_strategy", "no"]) == ["--eval-data", ""]
    assert translate(["--save_strategy=no"]) == ["--save-every", "0"]
    with pytest.raises(UserError, match=r"--eval_strategy epoch: .*--eval-every N"):
        translate(["--eval_strategy", "epoch"])
    # generation length: rounds modes only
    argv = ["--mode", "on_policy", "--max_completion_length", "20"]
    assert translate(argv) == ["--mode", "on_policy", "--max-new-tokens", "20"]
    with pytest.raises(UserError, match=r"--max_completion_length: no counterpart in the pairs"):
        translate(["--max_completion_length", "20"])


def test_unknown_flag_suggests_the_real_equivalent():
    with pytest.raises(UserError, match=r"unknown flag --learnig_rate; did you mean "
                       r"--learning-rate \(= --lr\)\?"):  # fmt: skip
        translate(["--learnig_rate", "1e-5"])
    with pytest.raises(UserError, match=r"did you mean --save-steps \(= --save-every\)\?"):
        translate(["--save_step", "10"])
    with pytest.raises(UserError, match=r"did you mean --batch-size\?"):
        translate(["--batch-sise", "2"])
    with pytest.raises(UserError, match="unknown flag --zzz; see --help"):
        translate(["--zzz"])
    with pytest.raises(UserError, match=r"--fp16: no counterpart here; .*--bf16"):
        translate(["--fp16"])
    with pytest.raises(UserError, match=r"--run_name: no counterpart here; .* --name"):
        translate(["--run_name", "x"])


def test_values_trl_spells_differently():
    # TRL's loss_type names; the hyperparameters they imply come first, so explicit ones win
    assert translate(["--loss_type", "sigmoid"]) == ["--objective", "dpo"]
    assert translate(["--loss-type=sigmoid_norm", "--beta", "0.3"]) == [
        "--objective", "dpo", "--hp", "length_norm=mean", "beta=0.3"
    ]  # fmt: skip
    assert translate(["--hp", "length_norm=sum", "--loss_type", "sft"]) == [
        "--objective", "sft", "--hp", "length_norm=mean", "length_norm=sum"
    ]  # fmt: skip
    assert translate(["--loss_type", "robust"]) == ["--objective", "robust"]
    with pytest.raises(UserError, match=r"--loss_type sigmoid sft: one objective at a time"):
        translate(["--loss_type", "sigmoid", "sft"])
    assert translate(["--num_train_epochs", "3.0"]) == ["--epochs", "3"]
    with pytest.raises(UserError, match=r"fractional epochs .* use --max-steps"):
        translate(["--num_train_epochs=2.5"])
    assert translate(["--dataset_name", "org/prefs", "--dataset_train_split", "train",
                      "--dataset_test_split", "test"]) == [
        "--data", "org/prefs", "--data-split", "train", "--eval-data-split", "test"
    ]  # fmt: skip


def test_trl_hyperparameter_flags_follow_the_objective():
    # TRL's IPO β is our τ, ORPO's our λ
    assert translate(["--loss_type", "ipo", "--beta", "0.3"])[-2:] == [
        "length_norm=mean",
        "tau=0.3",
    ]
    assert translate(["--objective", "orpo", "--beta", "0.2"]) == ["--objective", "orpo", "--hp",
                                                                  "lam=0.2"]  # fmt: skip
    argv = ["--label_smoothing", "0.1", "--loss_type", "robust"]
    assert translate(argv) == ["--objective", "robust", "--hp", "eps=0.1"]
    argv = ["--loss_type", "discopop", "--discopop_tau", "0.2"]
    assert translate(argv) == ["--objective", "discopop", "--hp", "tau=0.2"]
    argv = ["--objective", "kto", "--desirable_weight", "1.5", "--undesirable_weight", "0.5"]
    assert translate(argv)[-2:] == ["lam_d=1.5", "lam_u=0.5"]
    # TRL's default, which TRL ignores for these losses too: dropped; another value: an error
    assert translate(["--loss_type", "sigmoid", "--label_smoothing", "0"]) == ["--objective", "dpo"]
    assert translate(["--loss_type", "sft", "--beta", "0.1"]) == ["--objective", "sft", "--hp",
                                                                  "length_norm=mean"]  # fmt: skip
    with pytest.raises(UserError, match=r"--label_smoothing 0.1: dpo has no such hyperparameter "
                       r"\(TRL uses it only for aot, aot_unpaired, exo_pair, "
                       r"robust\)"):  # fmt: skip
        translate(["--label_smoothing", "0.1"])


def test_trl_loss_types_bring_trl_conventions():
    """--loss_type ipo is TRL's IPO (per-token means, β as τ); --loss_type kto TRL's KTOTrainer
    (unpaired, z0 from mismatched pairs); --objective keeps the papers' conventions."""
    from llm.train import parse

    assert parse(["--loss_type", "ipo", "--beta", "0.3"]).resolved_hparams() == {
        "tau": 0.3, "length_norm": "mean"
    }  # fmt: skip
    assert parse(["--objective", "ipo"]).resolved_hparams() == {"tau": 0.1, "length_norm": "sum"}
    hp = parse(["--loss_type", "kto", "--beta", "0.2"]).resolved_hparams()
    assert (hp["z0"], hp["form"], hp["beta"]) == ("mismatched", "unpaired", 0.2)
    hp = parse(["--objective", "kto"]).resolved_hparams()
    assert (hp["z0"], hp["form"]) == ("batch", "paired")
    # an explicit --hp still wins over what --loss_type implies
    assert (
        parse(["--loss_type", "ipo", "--hp", "length_norm=sum"]).hparams()["length_norm"] == "sum"
    )


def test_kto_in_rounds_modes_warns_in_one_line(capsys):
    from llm.train import parse

    cfg = parse(["--loss_type", "kto", "--mode", "on_policy"])
    assert cfg.hparams() == {"form": "unpaired"}  # z0=mismatched is not computed there
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["[llm] note: --loss_type kto: TRL's z0 from mismatched prompt-completion pairs "
                   "is not computed in --mode on_policy; z0 is the batch's (z0=batch) "
                   "(form=unpaired as TRL's)"]  # fmt: skip


def test_every_hp_value_lands_in_one_group():
    """tyro keeps only the last ``--hp`` group: ``--beta`` and ``--hp`` must not drop each
    other."""
    from llm.config import TrainConfig
    from llm.train import parse as _parse

    argv = ["--objective", "kto", "--beta", "0.2", "--hp", "lam_d=2", "--hp", "lam_u=0.5"]
    assert translate(argv)[-4:] == ["--hp", "beta=0.2", "lam_d=2", "lam_u=0.5"]
    cfg = _parse(argv)
    assert isinstance(cfg, TrainConfig)
    assert cfg.hparams() == {"beta": 0.2, "lam_d": 2.0, "lam_u": 0.5}
    assert _parse(["--num_train_epochs", "2.0", "--bf16", "--use_peft"]).epochs == 2
    cfg = _parse(["--save_steps", "3", "--warmup_steps", "0.5", "--eval_strategy", "no"])
    assert (cfg.save_every, cfg.warmup_ratio, cfg.eval_data) == (3, 0.5, "")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--max_length", "0"], "error: --max_length: must be at least 1, got 0"),
        (["--max_length", "x"], "error: Error parsing --max_length: invalid literal"),
        (["--max_length", "64", "--max_prompt_length", "64"],
         "error: --max_prompt_length: must be below --max_length"),
        (["--save_steps", "-1"], "error: --save_steps: must be non-negative"),
        (["--loss_type", "ipo", "--beta", "0"],
         "error: --beta: objective 'ipo': tau must be positive and finite, got 0.0"),
        (["--loss_type", "nope"], "error: --loss_type: unknown 'nope'"),
        (["--lr_scheduler_type", "cosine_with_restarts"],
         "error: invalid choice 'cosine_with_restarts' for argument '--lr_scheduler_type'"),
    ],
)  # fmt: skip
def test_errors_name_the_flag_the_user_typed(argv, expected, capsys):
    from llm.train import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected), err
    assert len(err.splitlines()) == 1
    assert not re.search(r"\bmax_len\b", err) and "TrainConfig" not in err


def test_errors_found_while_loading_name_the_flag_too(capsys):
    """A limit checked against the model, after parsing (the tiny model's positions): the
    message still names --max_length, also in its advice."""
    from llm.train import main

    assert main(["--max_length", "100000", "--max_prompt_length", "64", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: --max_length: 100000 exceeds the model's"), err
    assert "use --max_length" in err and not re.search(r"\bmax_len\b", err)


def test_help_lists_the_trl_spellings(capsys):
    from llm.train import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "asft" in out
    for line in ("--max_length = --max-len", "--save_steps N = --save-every N",
                 "--loss_type ipo = --objective ipo --hp length_norm=mean",
                 "--label_smoothing X = --hp eps=X"):  # fmt: skip
        assert line in out, line


# ---------------------------------------------------------------- llm.diagnose


def test_diagnose_takes_the_same_aliases():
    argv = ["--model_name_or_path", "m", "--dataset_name", "d.jsonl", "--max_length", "64",
            "--max_prompt_length", "32", "--output_dir", "o", "--use_peft", "--loss_type", "ipo",
            "--beta", "0.3"]  # fmt: skip
    t = translate_all(argv, DIAGNOSE)
    assert t.argv == ["--model", "m", "--data", "d.jsonl", "--max-len", "64", "--max-prompt-len",
                      "32", "--out-dir", "o", "--lora", "--objective", "ipo",
                      "--hp", "ipo.length_norm=mean", "ipo.tau=0.3"]  # fmt: skip
    assert t.spelled["max_len"] == "--max_length"
    # several objectives (diagnosed separately): --beta goes to each that has it
    assert translate(["--objective", "dpo", "ipo", "--beta", "0.2"], DIAGNOSE)[-2:] == [
        "dpo.beta=0.2", "ipo.tau=0.2"
    ]  # fmt: skip
    with pytest.raises(UserError, match=r"--learning_rate is llm.train's --lr; llm.diagnose has "
                       r"none \(its predicted SGD step's size is --eta\)"):  # fmt: skip
        translate(["--learning_rate", "1e-5"], DIAGNOSE)
    with pytest.raises(UserError, match=r"did you mean --max-length \(= --max-len\)\?"):
        translate(["--max_lenght", "64"], DIAGNOSE)


def test_diagnose_parses_aliases_and_names_them_in_errors(capsys):
    from llm.diagnose.cli import main, parse

    cfg = parse(["--loss_type", "ipo", "--beta", "0.3", "--max_length", "64",
                 "--max_prompt_length", "32"])  # fmt: skip
    assert (cfg.objective, cfg.max_len) == (("ipo",), 64)
    assert cfg.hparams() == {"ipo": {"tau": 0.3, "length_norm": "mean"}}
    cfg = parse(["--loss_type", "kto"])
    assert cfg.hparams()["kto"]["form"] == "unpaired" and cfg.hparams()["kto"]["z0"] == "batch"
    assert "z0 is the pair's own" in capsys.readouterr().err
    assert main(["--max_length", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max_length: must be at least 1, got 0"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "HF / TRL spellings llm.diagnose accepts" in out and "--max_length = --max-len" in out
