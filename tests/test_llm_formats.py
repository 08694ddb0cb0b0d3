"""Every TRL dataset layout, detected from the columns: implicit-prompt pairs (HH transcripts and
message lists), unpaired KTO rows, prompt/completion and language-modelling rows for chosen-only
objectives, hub datasets by name (offline, from the local cache) and local dataset directories;
one-line errors listing the accepted layouts; and one training step per layout from the CLI."""

import functools
import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from llm import tiny
from llm.data import (
    DataError,
    collate,
    detect_layout,
    read_rows,
    split_shared_prefix,
    tokenize_rows,
)
from llm.train import main
from runio import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data", "shakespeare_prefs", "train.jsonl")
PAIRS = [json.loads(x) for x in open(DATA, encoding="utf-8").read().splitlines()[:8]]


def hh(text: str, reply: str) -> str:
    return f"\n\nHuman: {text}\n\nAssistant: {reply}"


HH_ROWS = [
    {"chosen": hh(p["prompt"], p["chosen"]), "rejected": hh(p["prompt"], p["rejected"])}
    for p in PAIRS
]
MESSAGES_ROWS = [
    {"messages": [{"role": "user", "content": p["prompt"]},
                  {"role": "assistant", "content": p["chosen"]}]}
    for p in PAIRS
]  # fmt: skip
COMPLETION_ROWS = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
KTO_ROWS = [
    {"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
    for p in PAIRS[:4]
    for side in ("chosen", "rejected")
] + [{"prompt": PAIRS[5]["prompt"], "completion": PAIRS[5]["chosen"], "label": True}]
ACCEPTED = "accepted layouts: prompt/chosen/rejected, or chosen/rejected"


@functools.lru_cache
def tok():
    texts = [v for p in PAIRS for v in p.values()] + ["Human:", "Assistant:", "Hi there"]
    return tiny.build_tokenizer(texts * 3)


def tokenize(rows, **kw):
    kw = {"path": "f.jsonl", "max_len": 200, "max_prompt_len": 150, **kw}
    return tokenize_rows(rows, tok(), **kw)


def test_shared_prefix_snaps_to_the_last_assistant_turn_or_whitespace():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name?\n\nAssistant: Ann, sir."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name?\n\nAssistant: Ann is it."
    prompt, c, r = split_shared_prefix(chosen, rejected)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Name?\n\nAssistant:"
    assert (c, r) == (" Ann, sir.", " Ann is it.")
    assert split_shared_prefix("The cat sat on the mat", "The cat sat on the rug") == (
        "The cat sat on the",
        " mat",
        " rug",
    )
    # one text a prefix of the other: never an empty response
    assert split_shared_prefix("I like it", "I like it a lot") == ("I like", " it", " it a lot")
    assert split_shared_prefix("abc", "abd") == ("ab", "c", "d")  # no whitespace: exact prefix


def test_layouts_are_detected_from_the_columns():
    assert detect_layout(PAIRS) == "preference"
    assert detect_layout(HH_ROWS) == "implicit"
    assert detect_layout(KTO_ROWS) == "unpaired"
    assert detect_layout(COMPLETION_ROWS) == "completion"
    assert detect_layout([{"prompt": "p", "chosen": "c"}]) == "chosen_only"
    assert detect_layout(MESSAGES_ROWS) == "lm" == detect_layout([{"text": "t"}])
    assert detect_layout([{"question": "q"}]) == "unknown"


def test_hh_transcripts_split_at_the_final_assistant_turn():
    t = tok()
    (ex, *_), report = tokenize(HH_ROWS, chat_template="off")
    assert report.layout == "implicit" and report.kept == len(HH_ROWS)
    assert t.decode(ex.prompt_ids) == "<|bos|>" + hh(PAIRS[0]["prompt"], "").rstrip()
    assert ex.prompt_text.endswith("\n\nAssistant:")
    assert t.decode(ex.chosen_ids[:-1]).strip() == PAIRS[0]["chosen"]
    assert t.decode(ex.rejected_ids[:-1]).strip() == PAIRS[0]["rejected"]
    (templated, *_), _ = tokenize(HH_ROWS)  # with the chat template: a user and an assistant turn
    assert t.decode(templated.prompt_ids).endswith("Assistant:<|end|>\n<|assistant|>\n")


def test_chosen_only_layouts_for_sft():
    t = tok()
    (m, *_), rep = tokenize(MESSAGES_ROWS, objective="sft")
    assert rep.layout == "lm" and rep.identical == 0
    assert t.decode(m.chosen_ids) == PAIRS[0]["chosen"] + "<|end|>\n"
    assert m.rejected_ids == m.chosen_ids and PAIRS[0]["prompt"] in t.decode(m.prompt_ids)
    (c, *_), _ = tokenize(COMPLETION_ROWS, objective="sft")
    assert (c.prompt_ids, c.chosen_ids) == (m.prompt_ids, m.chosen_ids)  # same conversation
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"]} for p in PAIRS]
    (pc, *_), _ = tokenize(rows, objective="sft")
    assert pc.chosen_ids == c.chosen_ids
    (text, *_), _ = tokenize([{"text": PAIRS[0]["chosen"]}], objective="sft")
    assert t.decode(text.prompt_ids) == "<|bos|>"  # never templated: the whole text is trained
    assert text.chosen_ids[-1] == t.eos_token_id and text.chosen_text == PAIRS[0]["chosen"]
    multi = {"messages": MESSAGES_ROWS[0]["messages"] + MESSAGES_ROWS[1]["messages"]}
    (mt,), _ = tokenize([multi], objective="sft")  # the last assistant turn is the response
    assert t.decode(mt.chosen_ids) == PAIRS[1]["chosen"] + "<|end|>\n"
    assert PAIRS[0]["chosen"] in t.decode(mt.prompt_ids)


def test_unpaired_rows_are_matched_into_kto_pairs():
    t = tok()
    examples, rep = tokenize(KTO_ROWS, objective="kto", chat_template="off")
    assert rep.unpaired == {"desirable": 5, "undesirable": 4, "pairs": 5}
    assert [t.decode(e.chosen_ids[:-1]) for e in examples[:4]] == [p["chosen"] for p in PAIRS[:4]]
    # the 5th desirable row (another prompt) is matched with the first undesirable one, reused
    last = examples[4]
    assert t.decode(last.rejected_ids[:-1]) == PAIRS[0]["rejected"]
    assert last.rejected_prompt_ids == examples[0].prompt_ids != last.prompt_ids
    batch = collate([last], t.pad_token_id)
    n = len(last.rejected_prompt_ids) + len(last.rejected_ids)
    assert batch["input_ids"][1, :n].tolist() == list(last.rejected_prompt_ids + last.rejected_ids)
    assert batch["loss_mask"][1].sum() == len(last.rejected_ids)
    csv_like = [{**r, "label": str(r["label"])} for r in KTO_ROWS]  # CSV cells are strings
    assert tokenize(csv_like, objective="kto")[1].unpaired == rep.unpaired


BAD_LAYOUTS = [
    # (rows, objective, message)
    (KTO_ROWS, "dpo", "unpaired preference rows (prompt/completion/label) train only --objective"),
    (MESSAGES_ROWS, "dpo", "language-modelling (text or messages) rows have no rejected"),
    (COMPLETION_ROWS, "kto", "prompt/completion rows have no rejected response, which 'kto'"),
    (KTO_ROWS, "sft", "train only --objective kto; 'sft' needs a response to imitate"),
]


@pytest.mark.parametrize(("rows", "objective", "message"), BAD_LAYOUTS)
def test_layout_the_objective_cannot_use_is_one_line(rows, objective, message):
    with pytest.raises(UserError) as err:
        tokenize(rows, objective=objective, skip_invalid=True)
    text = str(err.value)
    assert "\n" not in text and message in text and ACCEPTED in text
    assert "prompt/completion/label (unpaired: kto)" in text and "text or messages (sft)" in text


BAD_ROWS = [
    ({"question": "q", "answer": "a"}, "dpo", "columns ['answer', 'question'] match no layout"),
    ({"prompt": "p", "chosen": "c"}, "dpo", "missing column 'rejected' (accepted layouts:"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, "sft", "no assistant message to train"),
    ({"prompt": "p", "completion": "c", "label": "maybe"}, "kto", "'label' must be true or false"),
    ({"prompt": "p", "completion": " ", "label": True}, "kto", "empty 'completion' response"),
    ({"chosen": "same text", "rejected": "same text!"}, "dpo", None),  # valid: snapped back
    ({"chosen": "abc", "rejected": "abc"}, "dpo", "empty 'chosen' response (all of it is"),
]


@pytest.mark.parametrize(("bad", "objective", "problem"), BAD_ROWS)
def test_bad_rows_name_file_row_and_problem(bad, objective, problem):
    if problem is None:
        (ex,), _ = tokenize([bad], objective=objective)
        assert tok().decode(ex.rejected_ids).startswith(" text!")
        return
    with pytest.raises(DataError) as err:
        tokenize([bad], objective=objective)
    assert str(err.value).startswith("f.jsonl: row 0: ") and problem in str(err.value)
    assert "\n" not in str(err.value)


def test_unpaired_rows_need_both_labels():
    rows = [r for r in KTO_ROWS if r["label"]]
    with pytest.raises(UserError, match=r"need both labels for KTO: 5 desirable .* and 0 undes"):
        tokenize(rows, objective="kto")


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """A private, offline ``datasets`` cache (nothing is downloaded)."""
    import datasets

    cache = tmp_path / "hf_datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


def cache_hub_dataset(cache, repo_id: str, rows: list[dict], tmp_path) -> None:
    """Put ``rows`` in the ``datasets`` cache exactly where an earlier online
    ``load_dataset(repo_id)`` would have left them (``<owner>___<name>/default/...``)."""
    from datasets.packaged_modules.json.json import Json

    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    owner, name = repo_id.split("/")
    builder = Json(cache_dir=str(cache), dataset_name=name, data_files={"train": str(src)},
                   hash="0123456789abcdef")  # fmt: skip
    builder.download_and_prepare()
    (built,) = (cache / name).iterdir()  # default-<hash of the data files>
    shutil.move(str(built), str(cache / f"{owner}___{name}" / "default"))


def test_hub_dataset_by_name_and_local_dataset_directories(datasets_cache, tmp_path):
    import datasets

    cache_hub_dataset(datasets_cache, "someorg/prefs", PAIRS, tmp_path)
    assert read_rows("someorg/prefs", "train") == PAIRS  # offline, from the cache
    with pytest.raises(UserError) as err:
        read_rows("someorg/not-cached", "train")
    assert "\n" not in str(err.value)
    assert "data 'someorg/not-cached': not a local file or directory" in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        read_rows("no/such.jsonl")  # a file name, not a hub name
    raw = tmp_path / "raw"  # a dataset repository's files, read by `load_dataset(dir)`
    raw.mkdir()
    (raw / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HH_ROWS))
    (raw / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HH_ROWS[:2]))
    assert read_rows(str(raw), "test") == HH_ROWS[:2]
    with pytest.raises(UserError, match=r"Unknown split \"dev\""):
        read_rows(str(raw), "dev")
    datasets.Dataset.from_list(KTO_ROWS).save_to_disk(str(tmp_path / "saved"))
    assert read_rows(str(tmp_path / "saved")) == KTO_ROWS


TRAIN = ["--eval-data", "None", "--max-steps", "1", "--batch-size", "2", "--max-len", "140",
         "--max-prompt-len", "110", "--gen-examples", "0", "--no-progress", "--no-save-final",
         "--lr", "1e-3"]  # fmt: skip


def train(argv: list[str], tmp_path, capsys) -> dict:
    """One training step from the command line; the run's metrics record and data report."""
    out = tmp_path / "runs"
    assert main([*TRAIN, *argv, "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    (run_dir,) = out.iterdir()
    (record,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    capsys.readouterr()
    return {**record, "report": config["data"]["train"]}


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    ("rows", "argv", "layout"),
    [
        (HH_ROWS, ["--objective", "dpo"], "implicit"),
        (MESSAGES_ROWS, ["--objective", "sft"], "lm"),
        (COMPLETION_ROWS, ["--loss_type", "sft"], "completion"),
        (KTO_ROWS, ["--objective", "kto"], "unpaired"),
    ],
    ids=["hh_dpo", "messages_sft", "completion_sft", "unpaired_kto"],
)
def test_each_layout_trains_one_step_with_one_command(rows, argv, layout, tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    rec = train(["--data", data, *argv], tmp_path, capsys)
    assert rec["step"] == 1 and rec["loss/train"] == rec["loss/train"]  # finite
    assert rec["report"]["layout"] == layout and rec["report"]["kept"] >= 2


def test_saved_and_hub_datasets_train_one_step(datasets_cache, tmp_path, capsys):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(HH_ROWS)}).save_to_disk(
        str(tmp_path / "saved")
    )
    rec = train(["--data", str(tmp_path / "saved"), "--data-split", "train"], tmp_path, capsys)
    assert rec["report"]["layout"] == "implicit"
    shutil.rmtree(tmp_path / "runs")
    cache_hub_dataset(datasets_cache, "someorg/prefs", PAIRS, tmp_path)
    argv = ["--dataset_name", "someorg/prefs", "--dataset_train_split", "train", "--objective",
            "ipo"]  # fmt: skip
    rec = train(argv, tmp_path, capsys)
    assert rec["report"]["layout"] == "preference" and rec["report"]["kept"] == len(PAIRS)


def test_cli_layout_error_is_one_line_exit_2(tmp_path, capsys):
    data = write_jsonl(tmp_path / "m.jsonl", MESSAGES_ROWS)
    assert main([*TRAIN, "--data", data, "--out-dir", str(tmp_path / "runs")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and ACCEPTED in err[0]
    assert not (tmp_path / "runs").exists()
