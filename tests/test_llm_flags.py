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
        "--hp", "beta=0.2", "--lora", "--lora-r", "16", "--seed", "3", "--precision", "fp32",
        "--gradient-checkpointing", "--data", "d.jsonl",
    ]  # fmt: skip


def test_own_flags_pass_through_unchanged():
    argv = ["--data", "x", "--no-progress", "--hp", "beta=0.1", "--dry-run", "--bf16"]
    assert translate(argv) == ["--data", "x", "--no-progress", "--hp", "beta=0.1", "--dry-run",
                               "--precision", "bf16"]  # fmt: skip


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

    with pytest.raises(SystemExit) as e:
        main(["--learnig-rate", "1e-5"])
    assert e.value.code == 2
    assert "did you mean --learning-rate?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "asft" in capsys.readouterr().out
