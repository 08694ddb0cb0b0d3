"""Loading every format, chat-template tokenisation and the prompt/response split, truncation,
label masking, and a clear error (file, row, problem) for each kind of invalid row."""

import functools
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest

from llm import tiny
from llm.data import DataError, collate, read_rows, tokenize_rows
from runio import UserError

ROWS = [
    {"prompt": "To be, or not to be", "chosen": "that is the question", "rejected": "question"},
    {"prompt": "Now is the winter", "chosen": "of our discontent", "rejected": "winter is now"},
]
CONVO = {
    "chosen": [
        {"role": "system", "content": "Speak verse."},
        {"role": "user", "content": "To be, or not to be"},
        {"role": "assistant", "content": "that is the question"},
    ],
    "rejected": [
        {"role": "system", "content": "Speak verse."},
        {"role": "user", "content": "To be, or not to be"},
        {"role": "assistant", "content": "not the question"},
    ],
}


@functools.lru_cache
def tok():
    texts = [v for r in ROWS for v in r.values()] + ["Speak verse.", "not the question"]
    return tiny.build_tokenizer(texts * 5)


def tokenize(rows, **kw):
    kw = {"path": "f.jsonl", "max_len": 64, "max_prompt_len": 40, **kw}
    return tokenize_rows(rows, tok(), **kw)


def test_every_format_reads_the_same_rows(tmp_path):
    import datasets

    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    pd.DataFrame(ROWS).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "a.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "dsd")
    )
    for name in ("a.jsonl", "a.json", "a.csv", "a.parquet", "ds"):
        assert read_rows(str(tmp_path / name)) == ROWS, name
    assert read_rows(str(tmp_path / "dsd"), split="test") == ROWS
    with pytest.raises(ValueError, match=r"no split 'train'"):
        read_rows(str(tmp_path / "dsd"))
    (tmp_path / "c.parquet").write_bytes(b"")
    datasets.Dataset.from_list([CONVO]).to_parquet(str(tmp_path / "c.parquet"))
    assert read_rows(str(tmp_path / "c.parquet")) == [CONVO]


def test_template_split_no_doubled_bos_and_masks():
    t = tok()
    (ex,), report = tokenize([ROWS[0]])
    full = list(ex.prompt_ids + ex.chosen_ids)
    assert full.count(t.bos_token_id) == 1 and full[0] == t.bos_token_id
    text = t.apply_chat_template(
        [{"role": "user", "content": ROWS[0]["prompt"]}, {"role": "assistant", "content": "x"}],
        tokenize=False,
    )
    assert text.count("<|bos|>") == 1
    assert t.decode(ex.prompt_ids) == "<|bos|><|user|>\nTo be, or not to be<|end|>\n<|assistant|>\n"
    assert t.decode(ex.chosen_ids) == "that is the question<|end|>\n"
    assert report.kept == 1 and report.truncated == 0
    batch = collate([ex], t.pad_token_id)
    n_p, n_c, n_r = len(ex.prompt_ids), len(ex.chosen_ids), len(ex.rejected_ids)
    assert batch["input_ids"].shape == (2, n_p + max(n_c, n_r))
    assert batch["loss_mask"][0].tolist() == [0] * n_p + [1] * n_c + [0] * (max(n_c, n_r) - n_c)
    assert batch["loss_mask"][1].sum() == n_r and batch["loss_mask"][:, :n_p].sum() == 0
    assert batch["attention_mask"].sum(1).tolist() == [n_p + n_c, n_p + n_r]


def test_conversational_implicit_prompt_and_plain_mode():
    t = tok()
    (ex,), _ = tokenize([CONVO])
    assert t.decode(ex.prompt_ids).count("Speak verse.") == 1
    assert t.decode(ex.prompt_ids).endswith("<|assistant|>\n")
    assert t.decode(ex.rejected_ids) == "not the question<|end|>\n"
    (plain,), _ = tokenize([ROWS[0]], chat_template="off")
    assert t.decode(plain.prompt_ids) == "<|bos|>To be, or not to be"
    assert plain.chosen_ids[-1] == t.eos_token_id
    with pytest.raises(DataError, match=r"row 0: conversational row .* no chat template"):
        tokenize([CONVO], chat_template="off")


def test_truncation_policy():
    (ex,), report = tokenize([ROWS[0]], max_len=18, max_prompt_len=17)
    assert len(ex.prompt_ids) + len(ex.chosen_ids) == 18 and report.truncated == 1
    with pytest.raises(DataError, match=r"f.jsonl: row 1: prompt longer than the limit"):
        tokenize([ROWS[0], {**ROWS[0], "prompt": "long " * 40}])


BAD = [
    ({"prompt": "p", "chosen": "c"}, "missing column 'rejected'"),
    ({"chosen": "c", "rejected": "r"}, "missing column 'prompt'"),
    ({"prompt": "p", "chosen": "  ", "rejected": "r"}, "empty 'chosen' response"),
    ({"prompt": "p", "chosen": 3, "rejected": "r"}, "'chosen' must be a string, got int"),
    ({"prompt": ["p"], "chosen": "c", "rejected": "r"}, "'prompt' must be a string"),
    (
        {"chosen": [{"role": "assistant", "content": 5}], "rejected": CONVO["rejected"]},
        "'chosen' message 0 has non-string role/content",
    ),
    ({"chosen": CONVO["chosen"], "rejected": CONVO["chosen"]}, "empty 'chosen' response"),
    ({"prompt": "p " * 50, "chosen": "c", "rejected": "r"}, "prompt longer than the limit"),
]


@pytest.mark.parametrize(("bad", "problem"), BAD)
def test_bad_row_names_file_row_and_problem(bad, problem):
    with pytest.raises(DataError) as err:
        tokenize([ROWS[0], ROWS[1], bad])
    assert err.value.path == "f.jsonl" and err.value.row == 2
    assert str(err.value).startswith("f.jsonl: row 2: ") and problem in str(err.value)
    examples, report = tokenize([ROWS[0], bad, ROWS[1]], skip_invalid=True)
    assert len(examples) == 2 and report.rows == 3 and sum(report.skipped.values()) == 1
    assert [e.idx for e in examples] == [0, 1]


def test_bad_files(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"x.jsonl: line 2: invalid JSON"):
        read_rows(str(tmp_path / "x.jsonl"))
    with pytest.raises(UserError, match=r"does not exist"):
        read_rows(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match=r"unsupported format '.txt'"):
        (tmp_path / "x.txt").write_text("")
        read_rows(str(tmp_path / "x.txt"))
    with pytest.raises(ValueError, match=r"no valid rows"):
        tokenize([{"prompt": "p"}], skip_invalid=True)
