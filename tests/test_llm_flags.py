"""HF/TRL flag spellings map onto llm.train's flags; unknown flags get a "did you mean"."""

import pytest

from llm.flags import translate
from runio import UserError


def test_hf_and_trl_spellings_become_our_flags():
    argv = ["--model_name_or_path", "m", "--learning-rate=5e-6", "--per_device_train_batch_size",
            "2", "--gradient_accumulation_steps", "4", "--num_train_epochs", "3", "--max_length",
            "512", "--max_prompt_length", "128", "--output_dir", "out", "--loss_type", "ipo",
            "--beta", "0.2", "--use_peft", "--lora_r", "16", "--seed", "3", "--bf16", "false",
            "--gradient_checkpointing", "--dataset_name", "d.jsonl"]  # fmt: skip
    assert translate(argv) == [
        "--model", "m", "--lr=5e-6", "--batch-size", "2", "--grad-accum", "4", "--epochs", "3",
        "--max-len", "512", "--max-prompt-len", "128", "--out-dir", "out", "--objective", "ipo",
        "--lora", "--lora-r", "16", "--seed", "3", "--precision", "fp32",
        "--gradient-checkpointing", "--data", "d.jsonl", "--hp", "beta=0.2",
    ]  # fmt: skip


def test_own_flags_pass_through_unchanged():
    argv = ["--data", "x", "--no-progress", "--hp", "beta=0.1", "--dry-run", "--bf16"]
    assert translate(argv) == ["--data", "x", "--no-progress", "--dry-run", "--precision", "bf16",
                               "--hp", "beta=0.1"]  # fmt: skip


def test_unknown_flag_suggests_the_closest():
    with pytest.raises(
        UserError, match=r"unknown flag --learnig_rate; did you mean --learning-rate\?"
    ):
        translate(["--learnig_rate", "1e-5"])
    with pytest.raises(UserError, match=r"did you mean --batch-size\?"):
        translate(["--batch-sise", "2"])
    with pytest.raises(UserError, match="unknown flag --zzz; see --help"):
        translate(["--zzz"])


def test_cli_one_line_error_and_help_lists_objectives(capsys):
    from llm.train import main

    assert main(["--learnig-rate", "1e-5"]) == 2
    assert "did you mean --learning-rate?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "asft" in capsys.readouterr().out


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
