"""Preference data: loading, validation, tokenisation and collation.

Two row forms are accepted:

- standard: ``prompt``, ``chosen``, ``rejected`` strings;
- conversational: ``chosen``/``rejected`` lists of ``{"role", "content"}`` messages, with an
  optional ``prompt`` message list; without it the implicit prompt is the longest shared prefix
  of the two conversations.

With a chat template (``chat_template="on"``, or ``"auto"`` and the tokenizer has one) a standard
row becomes ``[user: prompt]`` → ``[assistant: response]``. The template is applied once to the
whole conversation and the prompt/response split is made on tokens: the prompt rendered with the
generation prompt must be a token prefix of the full rendering (BOS, system prompt appear once).
Without a template: ``tokenizer(prompt)`` (its special tokens, e.g. BOS) + response tokens + EOS.

Truncation policy: a prompt longer than ``max_prompt_len`` tokens makes the row invalid; responses
are cut from the right so prompt + response ≤ ``max_len`` (counted in ``DataReport.truncated``).
Labels: only response tokens count (``loss_mask``); prompt and padding are masked.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from runio import UserError

ACCEPTED = (
    "a row needs 'prompt', 'chosen' and 'rejected' strings, or 'chosen'/'rejected' lists of "
    "{role, content} messages"
)


class DataError(UserError):
    """An invalid row: names the file, the row (0-based) and the problem."""

    def __init__(self, path: str, row: int, problem: str):
        super().__init__(f"{path}: row {row}: {problem}")
        self.path, self.row, self.problem = path, row, problem


@dataclass(frozen=True)
class Example:
    """One tokenised pair. ``*_ids`` of responses exclude the prompt."""

    idx: int
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    prompt_text: str = ""
    chosen_text: str = ""


@dataclass
class DataReport:
    rows: int = 0
    kept: int = 0
    truncated: int = 0
    identical: int = 0
    """Rows whose chosen and rejected responses tokenise identically (kept; they carry no
    preference signal and give every pairwise objective a zero gradient)."""
    skipped: Counter = field(default_factory=Counter)


def read_rows(path: str, split: str = "train") -> list[dict]:
    """Rows of a JSONL / JSON / CSV / parquet file or a ``datasets`` directory (``split`` of a
    DatasetDict). Unreadable files are a ``UserError`` naming the file and line."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"data file {path!r} does not exist")
    if p.is_dir():
        return _read_dataset_dir(p, path, split)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(_text(p, path).split("\n")):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: line {i + 1}: invalid JSON ({e.msg})") from None
        return rows
    if suffix == ".json":
        try:
            obj = json.loads(_text(p, path))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
        return _json_rows(obj, path)
    if suffix == ".csv":
        import pandas as pd

        _text(p, path)  # names the line of any non-UTF-8 byte
        try:
            frame = pd.read_csv(p, keep_default_na=False, dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise UserError(f"{path}: not a readable CSV file ({_first_line(e)})") from None
        return frame.to_dict("records")
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(p).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: not a readable parquet file ({_first_line(e)})") from None
    raise UserError(f"{path}: unsupported format {suffix!r} (jsonl, json, csv, parquet, dir)")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _text(p: Path, path: str) -> str:
    """The file as UTF-8 text; a non-UTF-8 byte is an error naming its line and column."""
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserError(
            f"{path}: line {line}, column {col}: byte 0x{raw[e.start]:02x} is not valid UTF-8 "
            "(data files must be UTF-8 text)"
        ) from None


def _json_rows(obj: object, path: str) -> list[dict]:
    """A .json file's rows: a list of row objects, or one object of equal-length column lists."""
    if isinstance(obj, list):
        return obj
    if not isinstance(obj, dict):
        raise UserError(
            f"{path}: top level is a {type(obj).__name__}; expected a list of row objects or "
            "an object of equal-length column lists"
        )
    accepted = "expected a list of row objects, or an object mapping each column to a list"
    if not obj:
        raise UserError(f"{path}: an empty object; {accepted}")
    not_lists = [k for k, v in obj.items() if not isinstance(v, list)]
    if not_lists:
        raise UserError(f"{path}: a single object (its {not_lists[0]!r} is not a list); {accepted}")
    lengths = {k: len(v) for k, v in obj.items()}
    if len(set(lengths.values())) > 1:
        raise UserError(
            f"{path}: columns have unequal lengths {lengths}; every column list needs one "
            "value per row"
        )
    keys = list(obj)
    return [dict(zip(keys, vals)) for vals in zip(*(obj[k] for k in keys))]


def _read_dataset_dir(p: Path, path: str, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError:
        raise UserError(
            f"{path}: a directory but not a saved `datasets` Dataset/DatasetDict"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"{path}: no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    return ds.to_list()


def _check_messages(msgs: object, key: str) -> str | None:
    if not isinstance(msgs, list):
        return f"{key!r} must be a string or a list of messages, got {type(msgs).__name__}"
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return f"{key!r} message {j} must be a dict with 'role' and 'content'"
        if not isinstance(m["role"], str) or not isinstance(m["content"], str):
            return f"{key!r} message {j} has non-string role/content"
    return None


def to_conversation(row: dict) -> tuple[list, list, list] | str:
    """(prompt, chosen, rejected) message lists of a row, or a problem description."""
    for key in ("chosen", "rejected"):
        if problem := _missing(row, key):
            return problem
    if isinstance(row["chosen"], str) or isinstance(row["rejected"], str):
        for key in ("prompt", "chosen", "rejected"):
            if problem := _missing(row, key):
                return problem
            if not isinstance(row[key], str):
                return f"{key!r} must be a string, got {type(row[key]).__name__}"
            if key != "prompt" and not row[key].strip():
                return f"empty {key!r} response"
        prompt = [{"role": "user", "content": row["prompt"]}]
        return prompt, [_assistant(row["chosen"])], [_assistant(row["rejected"])]
    for key in ("chosen", "rejected"):
        if problem := _check_messages(row[key], key):
            return problem
    chosen, rejected = row["chosen"], row["rejected"]
    if row.get("prompt") is not None:
        if problem := _check_messages(row["prompt"], "prompt"):
            return problem
        prompt = row["prompt"]
    else:  # implicit prompt: the longest shared prefix
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    for key, resp in (("chosen", chosen), ("rejected", rejected)):
        if not resp or not any(m["content"].strip() for m in resp):
            return f"empty {key!r} response"
        if resp[0]["role"] != "assistant":
            return f"{key!r} response must start with an assistant message"
    return prompt, chosen, rejected


def _missing(row: dict, key: str) -> str | None:
    if key not in row:
        return f"missing column {key!r} ({ACCEPTED})"
    if row[key] is None:
        return f"null value in column {key!r} (a {key} string or message list is required)"
    return None


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _standard_ids(tokenizer, row: dict) -> tuple[list[int], list[int], list[int]] | str:
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(row.get(key), str):
            return f"column {key!r} must be a string (no chat template to render messages)"
        if key != "prompt" and not row[key].strip():
            return f"empty {key!r} response"
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt = tokenizer(row["prompt"])["input_ids"]
    chosen = tokenizer(row["chosen"], add_special_tokens=False)["input_ids"] + eos
    rejected = tokenizer(row["rejected"], add_special_tokens=False)["input_ids"] + eos
    return prompt, chosen, rejected


def _render(tokenizer, messages: list, generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _template_ids(tokenizer, convo) -> tuple[list[int], list[int], list[int]] | str:
    prompt, chosen, rejected = convo
    prompt_ids = _render(tokenizer, prompt, generation_prompt=True)
    out = [prompt_ids]
    for key, resp in (("chosen", chosen), ("rejected", rejected)):
        full = _render(tokenizer, prompt + resp, generation_prompt=False)
        if full[: len(prompt_ids)] != prompt_ids:
            return f"chat template: the rendered prompt is not a token prefix of the {key} one"
        out.append(full[len(prompt_ids) :])
        if not out[-1]:
            return f"empty {key!r} response after tokenisation"
    return out[0], out[1], out[2]


def tokenize_rows(
    rows: list[dict],
    tokenizer,
    *,
    path: str,
    max_len: int,
    max_prompt_len: int,
    chat_template: str = "auto",
    skip_invalid: bool = False,
    require_rows: bool = True,
) -> tuple[list[Example], DataReport]:
    """Validate and tokenise ``rows``; invalid rows raise ``DataError`` unless ``skip_invalid``
    (then they are counted per problem in the report). No valid row at all is an error unless
    ``require_rows`` is False."""
    use_template = chat_template == "on" or (
        chat_template == "auto" and getattr(tokenizer, "chat_template", None)
    )
    if chat_template == "on" and not getattr(tokenizer, "chat_template", None):
        raise UserError("TrainConfig.chat_template: 'on' but the tokenizer has no chat template")
    report, examples = DataReport(rows=len(rows)), []
    for i, row in enumerate(rows):
        result = _tokenize_row(tokenizer, row, use_template, max_len, max_prompt_len)
        if isinstance(result, str):
            if not skip_invalid:
                raise DataError(path, i, result)
            report.skipped[problem_kind(result)] += 1
            continue
        prompt, chosen, rejected, truncated = result
        report.truncated += truncated
        report.identical += chosen == rejected
        chosen_text = row["chosen"] if isinstance(row["chosen"], str) else ""
        if not chosen_text:
            convo = to_conversation(row)
            chosen_text = "".join(m["content"] for m in convo[1])
        prompt_text = row.get("prompt") if isinstance(row.get("prompt"), str) else ""
        examples.append(
            Example(
                len(examples), *map(tuple, (prompt, chosen, rejected)), prompt_text, chosen_text
            )
        )
    report.kept = len(examples)
    if not examples and require_rows:
        raise UserError(f"{path}: no valid rows ({dict(report.skipped)} skipped)")
    return examples, report


def _tokenize_row(tokenizer, row, use_template: bool, max_len: int, max_prompt_len: int):
    if not isinstance(row, dict):
        return f"row must be an object/dict, got {type(row).__name__}"
    if use_template:
        convo = to_conversation(row)
        if isinstance(convo, str):
            return convo
        ids = _template_ids(tokenizer, convo)
    else:
        if isinstance(row.get("chosen"), list) or isinstance(row.get("rejected"), list):
            return "conversational row (message lists) but no chat template is in use"
        for key in ("prompt", "chosen", "rejected"):
            if problem := _missing(row, key):
                return problem
        ids = _standard_ids(tokenizer, row)
    if isinstance(ids, str):
        return ids
    prompt, chosen, rejected = ids
    if len(prompt) > max_prompt_len:
        return f"prompt longer than the limit ({len(prompt)} > max_prompt_len={max_prompt_len})"
    room = max_len - len(prompt)
    truncated = int(len(chosen) > room or len(rejected) > room)
    return prompt, chosen[:room], rejected[:room], truncated


def problem_kind(problem: str) -> str:
    """A row problem without its row-specific details (the key problems are counted under)."""
    return problem.split(" (")[0].split(":")[0]


def collate(examples: list[Example], pad_id: int) -> dict[str, Tensor]:
    """Right-padded concatenated batch: rows 0..B-1 are prompt+chosen, rows B..2B-1
    prompt+rejected. Returns ``input_ids`` (2B, T), ``attention_mask`` (2B, T), ``loss_mask``
    (2B, T) (1 on response tokens only) and ``idx`` (B,) row indices."""
    seqs = [(e.prompt_ids, e.chosen_ids) for e in examples]
    seqs += [(e.prompt_ids, e.rejected_ids) for e in examples]
    T = max(len(p) + len(r) for p, r in seqs)
    input_ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(seqs), T, dtype=torch.long)
    loss_mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, (p, r) in enumerate(seqs):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r)
        attention_mask[i, :n] = 1
        loss_mask[i, len(p) : n] = 1
    idx = torch.tensor([e.idx for e in examples], dtype=torch.long)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "idx": idx,
    }
