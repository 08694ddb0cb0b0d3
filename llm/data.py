"""Training data: loading, layout detection, validation, tokenisation and collation.

Sources: a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, a saved ``datasets`` directory
(``Dataset.save_to_disk``), a local dataset directory ``datasets.load_dataset`` reads (data files,
e.g. a downloaded hub repository), or a hub dataset name (``datasets.load_dataset(name,
split=...)``; offline it loads from the local ``datasets`` cache).

Layouts (TRL's dataset types), detected from the file's columns (the keys of all rows together):

- preference, explicit prompt: ``prompt``, ``chosen``, ``rejected``: strings (standard) or lists
  of ``{"role", "content"}`` messages (conversational; there the ``prompt`` is optional per row);
- preference, implicit prompt: ``chosen`` and ``rejected`` only, the prompt being their shared
  prefix. Message lists: the shared leading messages. Strings (e.g. Anthropic-HH transcripts):
  the longest common prefix, snapped back to a boundary (``split_shared_prefix``): just after the
  last ``"\\n\\nAssistant:"`` in it, else to the start of its last whitespace run (so each
  response begins with its own whitespace, as BPE tokens do), else the exact character prefix;
- unpaired preference: ``prompt``, ``completion``, ``label`` (true = desirable): KTO only. Rows are
  matched into (desirable, undesirable) pairs in file order, the smaller side cycled so every row
  is used (``match_unpaired``); a pair's two rows may have different prompts;
- prompt–completion: ``prompt`` + ``completion`` (or ``prompt`` + ``chosen`` without
  ``rejected``), and language modelling: ``text`` (a string, never templated, the whole text is
  the response) or ``messages`` (the last assistant message onwards is the response, the earlier
  messages the prompt) — for chosen-only objectives (registry ``data == "chosen"``, e.g. sft),
  which also accept both preference layouts (they use the chosen response).

With a chat template (``chat_template="on"``, or ``"auto"`` and the tokenizer has one) a standard
row becomes ``[user: prompt]`` → ``[assistant: response]``. The template is applied once to the
whole conversation and the prompt/response split is made on tokens: the prompt rendered with the
generation prompt must be a token prefix of the full rendering (BOS, system prompt appear once).
Without a template: ``tokenizer(prompt)`` (its special tokens, e.g. BOS) + response tokens + EOS.
A row without a prompt whose tokenizer adds no BOS gets the response's first token as its prompt
(that token has no context and is never scored anyway).

Truncation policy: a prompt longer than ``max_prompt_len`` tokens makes the row invalid; responses
are cut from the right so prompt + response ≤ ``max_len`` (counted in ``DataReport.truncated``).
Labels: only response tokens count (``loss_mask``); prompt and padding are masked. A row with one
response (chosen-only layouts) is collated with that response on the rejected side as well; the
chosen-only loss ignores it, and the rejected-side metrics then repeat the chosen ones.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

import objectives
from runio import UserError

UNPAIRED_OBJECTIVES = ("kto",)
"""Objectives that train on unpaired preference rows (matched into pairs, see ``match_unpaired``):
their loss is a desirable term plus an undesirable term coupled only through the detached
batch reference point, so a pair of unrelated rows is as good as a true pair."""


def chosen_only_objectives() -> list[str]:
    return sorted(k for k, o in objectives.OBJECTIVES.items() if o.data == "chosen")


def accepted_layouts() -> str:
    """The one-line list of accepted layouts, ending every layout error."""
    return (
        "accepted layouts: prompt/chosen/rejected, or chosen/rejected with their shared prefix as "
        "the prompt (strings or message lists; every offline objective); prompt/completion/label "
        f"(unpaired: {', '.join(UNPAIRED_OBJECTIVES)}); prompt/completion, prompt/chosen, text or "
        f"messages ({', '.join(chosen_only_objectives())})"
    )


LAYOUT_NAMES = {
    "preference": "preference (prompt/chosen/rejected)",
    "implicit": "implicit-prompt preference (chosen/rejected)",
    "unpaired": "unpaired preference (prompt/completion/label)",
    "completion": "prompt/completion",
    "chosen_only": "prompt/chosen (no rejected)",
    "lm": "language-modelling (text or messages)",
    "unknown": "unrecognised",
}


def detect_layout(rows: list) -> str:
    """The layout of a file from its columns (the keys of all its dict rows): one of
    ``LAYOUT_NAMES``."""
    cols: set = set()
    for row in rows:
        if isinstance(row, dict):
            cols.update(row)
    if {"chosen", "rejected"} <= cols:
        return "preference" if "prompt" in cols else "implicit"
    if {"completion", "label"} <= cols:
        return "unpaired"
    if "completion" in cols:
        return "completion"
    if "chosen" in cols:
        return "chosen_only"
    if cols & {"text", "messages"}:
        return "lm"
    return "unknown"


def check_layout(layout: str, objective: str, path: str) -> None:
    """A one-line ``UserError`` when ``objective`` cannot train on a file of ``layout``
    (per-row problems, e.g. a missing ``rejected``, are reported per row instead)."""
    obj = objectives.get(objective)
    if layout == "unpaired" and objective not in UNPAIRED_OBJECTIVES:
        need = "pairs" if obj.data == "pairs" else "a response to imitate per row"
        raise UserError(
            f"{path}: unpaired preference rows (prompt/completion/label) train only "
            f"--objective {' / '.join(UNPAIRED_OBJECTIVES)}; {objective!r} needs {need}; "
            f"{accepted_layouts()}"
        )
    if layout in ("completion", "lm") and obj.data != "chosen":
        raise UserError(
            f"{path}: {LAYOUT_NAMES[layout]} rows have no rejected response, which "
            f"{objective!r} needs (they train only chosen-only objectives: "
            f"{', '.join(chosen_only_objectives())}); {accepted_layouts()}"
        )


class DataError(UserError):
    """An invalid row: names the file, the row (0-based) and the problem."""

    def __init__(self, path: str, row: int, problem: str):
        super().__init__(f"{path}: row {row}: {problem}")
        self.path, self.row, self.problem = path, row, problem


@dataclass(frozen=True)
class Example:
    """One tokenised pair. ``*_ids`` of responses exclude the prompt. ``rejected_prompt_ids``:
    the rejected response's own prompt when it differs (unpaired rows matched into a pair),
    else None (the shared ``prompt_ids``)."""

    idx: int
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    prompt_text: str = ""
    chosen_text: str = ""
    rejected_prompt_ids: tuple[int, ...] | None = None


@dataclass
class DataReport:
    rows: int = 0
    kept: int = 0
    """Examples kept (pairs; for unpaired rows, the matched pairs)."""
    truncated: int = 0
    identical: int = 0
    """Rows whose chosen and rejected responses tokenise identically (kept; they carry no
    preference signal and give every pairwise objective a zero gradient)."""
    skipped: Counter = field(default_factory=Counter)
    layout: str = ""
    unpaired: dict = field(default_factory=dict)
    """Unpaired rows: counts of desirable and undesirable rows and of the pairs matched."""


FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def is_hub_name(path: str) -> bool:
    """Whether ``path`` (not an existing file) reads as a hub dataset name, ``name`` or
    ``owner/name``, rather than a missing file."""
    return bool(_HUB_NAME.match(path)) and not path.lower().endswith(FILE_SUFFIXES)


def read_rows(path: str, split: str = "train") -> list[dict]:
    """Rows of a JSONL / JSON / CSV / parquet file, a ``datasets`` directory (``split`` of a
    DatasetDict) or a hub dataset name (``split`` of it). Unreadable files are a ``UserError``
    naming the file and line."""
    p = Path(path).expanduser()
    if not p.exists():
        if is_hub_name(path):
            return _read_hub(path, split)
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
    raise UserError(
        f"{path}: unsupported format {suffix!r} (jsonl, json, csv, parquet, a dataset directory "
        "or a hub dataset name)"
    )


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
    except FileNotFoundError:  # not saved by save_to_disk: a directory of data files?
        return _load_dataset(str(p), split, f"{path}: a directory but neither a saved `datasets` "
                             "Dataset/DatasetDict nor a dataset directory `datasets.load_dataset` "
                             "reads")  # fmt: skip
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"{path}: no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    return ds.to_list()


def _read_hub(name: str, split: str) -> list[dict]:
    return _load_dataset(name, split, f"data {name!r}: not a local file or directory, and "
                         "`datasets.load_dataset` could not load it as a hub dataset (offline, "
                         "only datasets in the local cache load)")  # fmt: skip


def _load_dataset(name: str, split: str, context: str) -> list[dict]:
    """``datasets.load_dataset(name, split=split)`` as rows; any failure one ``UserError`` line."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # not found, offline and not cached, unknown split, bad files
        raise UserError(f"{context} ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(ds, datasets.Dataset):
        raise UserError(f"{context} (got a {type(ds).__name__}, not a Dataset split)")
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


ASSISTANT_TURN = "\n\nAssistant:"
"""Where Anthropic-HH transcripts start an assistant turn (TRL's ``extract_anthropic_prompt``)."""


def split_shared_prefix(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response) of two full texts with an implicit prompt.

    The prompt is their longest common prefix snapped back to a boundary: just after the last
    ``"\\n\\nAssistant:"`` it contains (HH transcripts: the prompt ends with the final assistant
    turn's marker, as in TRL); else at the start of its last whitespace run past position 0, so
    each response begins with its own whitespace (as BPE tokens do) and never ends up empty when
    one text is a prefix of the other; else the exact character prefix."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    shared = chosen[:n]
    k = shared.rfind(ASSISTANT_TURN)
    if k >= 0:
        cut = k + len(ASSISTANT_TURN)
    else:
        runs = [m.start() for m in re.finditer(r"\s+", shared) if m.start() > 0]
        cut = runs[-1] if runs else n
    return chosen[:cut], chosen[cut:], rejected[cut:]


@dataclass
class _Parts:
    """A row before tokenisation: the prompt (string, message list, or None for a ``text`` row)
    and one or two (column, response) pairs, all strings or all message lists."""

    prompt: str | list | None
    responses: list[tuple[str, str | list]]
    label: bool | None = None


def _missing(row: dict, key: str) -> str | None:
    if key not in row:
        return f"missing column {key!r} ({accepted_layouts()})"
    if row[key] is None:
        return f"null value in column {key!r} (a {key} string or message list is required)"
    return None


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _check_response(key: str, resp: list) -> str | None:
    if not resp or not any(m["content"].strip() for m in resp):
        return f"empty {key!r} response"
    if resp[0]["role"] != "assistant":
        return f"{key!r} response must start with an assistant message"
    return None


def _pair_parts(row: dict, explicit: bool) -> _Parts | str:
    """A preference row (``chosen``/``rejected``, with ``prompt`` when ``explicit``)."""
    for key in ("chosen", "rejected"):
        if problem := _missing(row, key):
            return problem
    if isinstance(row["chosen"], str) or isinstance(row["rejected"], str):
        keys = ("prompt", "chosen", "rejected") if explicit else ("chosen", "rejected")
        for key in keys:
            if problem := _missing(row, key):
                return problem
            if not isinstance(row[key], str):
                return f"{key!r} must be a string, got {type(row[key]).__name__}"
        if explicit:
            prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
        else:
            prompt, chosen, rejected = split_shared_prefix(row["chosen"], row["rejected"])
        for key, resp in (("chosen", chosen), ("rejected", rejected)):
            if not resp.strip():
                shared = "" if explicit else " (all of it is the prefix shared with the other)"
                return f"empty {key!r} response{shared}"
        return _Parts(prompt, [("chosen", chosen), ("rejected", rejected)])
    for key in ("chosen", "rejected"):
        if problem := _check_messages(row[key], key):
            return problem
    chosen, rejected = row["chosen"], row["rejected"]
    if row.get("prompt") is not None:
        if problem := _check_messages(row["prompt"], "prompt"):
            return problem
        prompt = row["prompt"]
    else:  # implicit prompt: the longest shared prefix of messages
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    for key, resp in (("chosen", chosen), ("rejected", rejected)):
        if problem := _check_response(key, resp):
            return problem
    return _Parts(prompt, [("chosen", chosen), ("rejected", rejected)])


def _single_parts(row: dict, key: str, prompt_optional: bool) -> _Parts | str:
    """A row with one response in column ``key`` and a ``prompt`` (optional: without one, a
    string response is a ``text`` row and a message list a ``messages`` one)."""
    if prompt_optional and row.get("prompt") is None:
        if problem := _missing(row, key):
            return problem
        return _lm_parts(row, key)
    for k in ("prompt", key):
        if problem := _missing(row, k):
            return problem
    prompt, resp = row["prompt"], row[key]
    if isinstance(prompt, str) or isinstance(resp, str):
        for k in ("prompt", key):
            if not isinstance(row[k], str):
                return f"{k!r} must be a string, got {type(row[k]).__name__}"
        if not resp.strip():
            return f"empty {key!r} response"
        return _Parts(prompt, [(key, resp)])
    for k in ("prompt", key):
        if problem := _check_messages(row[k], k):
            return problem
    if problem := _check_response(key, resp):
        return problem
    return _Parts(prompt, [(key, resp)])


def _lm_parts(row: dict, key: str | None = None) -> _Parts | str:
    """A language-modelling row: ``text`` (string) or ``messages`` (list); ``key`` forces the
    column."""
    if key is None:
        key = "messages" if row.get("messages") is not None else "text"
        if key not in row:
            return f"missing column 'text' or 'messages' ({accepted_layouts()})"
    if problem := _missing(row, key):
        return problem
    value = row[key]
    if isinstance(value, str):
        if not value.strip():
            return f"empty {key!r} text"
        return _Parts(None, [(key, value)])
    if problem := _check_messages(value, key):
        return problem
    last = max((j for j, m in enumerate(value) if m["role"] == "assistant"), default=None)
    if last is None:
        return f"{key!r} has no assistant message to train on"
    prompt, resp = value[:last], value[last:]
    if not any(m["content"].strip() for m in resp):
        return f"empty {key!r} response (its last assistant message)"
    return _Parts(prompt, [(key, resp)])


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _label(value: object) -> bool | None:
    """A ``label`` as a bool: true/false, 1/0 (CSV cells: "True", "false", "1", ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    return None


def row_parts(row: dict, layout: str) -> _Parts | str:
    """The prompt and response(s) of a row of ``layout``, or a problem description."""
    if layout in ("preference", "implicit"):
        return _pair_parts(row, explicit=layout == "preference")
    if layout == "unpaired":
        parts = _single_parts(row, "completion", prompt_optional=False)
        if isinstance(parts, str):
            return parts
        if problem := _missing(row, "label"):
            return problem
        if (label := _label(row["label"])) is None:
            return f"'label' must be true or false, got {row['label']!r}"
        parts.label = label
        return parts
    if layout == "completion":
        return _single_parts(row, "completion", prompt_optional=False)
    if layout == "chosen_only":
        return _single_parts(row, "chosen", prompt_optional=True)
    if layout == "lm":
        return _lm_parts(row)
    return f"columns {sorted(row)} match no layout ({accepted_layouts()})"


def to_conversation(row: dict) -> tuple[list, list, list] | str:
    """(prompt, chosen, rejected) message lists of a preference row, or a problem description."""
    parts = _pair_parts(row, explicit="prompt" in row)
    if isinstance(parts, str):
        return parts
    (_, chosen), (_, rejected) = parts.responses
    if isinstance(chosen, str):
        prompt = [{"role": "user", "content": parts.prompt}]
        return prompt, [_assistant(chosen)], [_assistant(rejected)]
    return parts.prompt, chosen, rejected


def _render(tokenizer, messages: list, generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _template_ids(tokenizer, prompt: list, responses: list) -> tuple[list, list] | str:
    prompt_ids = _render(tokenizer, prompt, generation_prompt=True)
    out = []
    for key, resp in responses:
        full = _render(tokenizer, prompt + resp, generation_prompt=False)
        if full[: len(prompt_ids)] != prompt_ids:
            return f"chat template: the rendered prompt is not a token prefix of the {key} one"
        out.append(full[len(prompt_ids) :])
        if not out[-1]:
            return f"empty {key!r} response after tokenisation"
    return prompt_ids, out


def _plain_ids(tokenizer, prompt: str, responses: list) -> tuple[list, list]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    prompt_ids = tokenizer(prompt)["input_ids"]
    out = [tokenizer(r, add_special_tokens=False)["input_ids"] + eos for _, r in responses]
    return prompt_ids, out


def _parts_ids(tokenizer, parts: _Parts, use_template: bool) -> tuple[list, list] | str:
    if isinstance(parts.responses[0][1], list):
        if not use_template:
            return "conversational row (message lists) but no chat template is in use"
        return _template_ids(tokenizer, parts.prompt, parts.responses)
    if parts.prompt is None:  # a `text` row: the whole text is the response, never templated
        return _plain_ids(tokenizer, "", parts.responses)
    if use_template:
        prompt = [{"role": "user", "content": parts.prompt}]
        responses = [(key, [_assistant(r)]) for key, r in parts.responses]
        return _template_ids(tokenizer, prompt, responses)
    return _plain_ids(tokenizer, parts.prompt, parts.responses)


def _response_text(resp: str | list) -> str:
    return resp if isinstance(resp, str) else "".join(m["content"] for m in resp)


@dataclass
class _Tokenised:
    prompt_ids: list
    responses: list
    truncated: int
    prompt_text: str
    response_text: str
    label: bool | None


def _tokenize_row(tokenizer, row, layout, use_template, max_len, max_prompt_len):
    if not isinstance(row, dict):
        return f"row must be an object/dict, got {type(row).__name__}"
    parts = row_parts(row, layout)
    if isinstance(parts, str):
        return parts
    ids = _parts_ids(tokenizer, parts, use_template)
    if isinstance(ids, str):
        return ids
    prompt, responses = ids
    if not prompt:  # no prompt text and no BOS: the first token has no context to predict it
        if len(responses) > 1 or len(responses[0]) < 2:
            return "empty prompt after tokenisation (no shared prefix and no BOS token)"
        prompt, responses = responses[0][:1], [responses[0][1:]]
    if len(prompt) > max_prompt_len:
        return f"prompt longer than the limit ({len(prompt)} > max_prompt_len={max_prompt_len})"
    room = max_len - len(prompt)
    truncated = int(any(len(r) > room for r in responses))
    prompt_text = parts.prompt if isinstance(parts.prompt, str) else ""
    text = _response_text(parts.responses[0][1])
    return _Tokenised(prompt, [r[:room] for r in responses], truncated, prompt_text, text,
                      parts.label)  # fmt: skip


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
    objective: str = "dpo",
) -> tuple[list[Example], DataReport]:
    """Validate and tokenise ``rows`` for ``objective`` (its layouts: see the module docstring);
    invalid rows raise ``DataError`` unless ``skip_invalid`` (then they are counted per problem
    in the report). A layout the objective cannot train on, or no valid row at all, is an error
    (the latter unless ``require_rows`` is False)."""
    use_template = chat_template == "on" or (
        chat_template == "auto" and getattr(tokenizer, "chat_template", None)
    )
    if chat_template == "on" and not getattr(tokenizer, "chat_template", None):
        raise UserError("TrainConfig.chat_template: 'on' but the tokenizer has no chat template")
    layout = detect_layout(rows)
    check_layout(layout, objective, path)
    if layout == "chosen_only" and objectives.get(objective).data != "chosen":
        layout = "preference"  # each row then names its missing 'rejected'
    report, examples, unpaired = DataReport(rows=len(rows), layout=layout), [], []
    for i, row in enumerate(rows):
        result = _tokenize_row(tokenizer, row, layout, use_template, max_len, max_prompt_len)
        if isinstance(result, str):
            if not skip_invalid:
                raise DataError(path, i, result)
            report.skipped[problem_kind(result)] += 1
            continue
        report.truncated += result.truncated
        prompt = tuple(result.prompt_ids)
        if layout == "unpaired":
            unpaired.append(result)
            continue
        chosen = tuple(result.responses[0])
        if len(result.responses) == 2:
            rejected = tuple(result.responses[1])
            report.identical += chosen == rejected
        else:  # one response: the rejected side repeats it (chosen-only objectives ignore it)
            rejected = chosen
        text = result.response_text
        examples.append(Example(len(examples), prompt, chosen, rejected, result.prompt_text, text))
    if layout == "unpaired" and unpaired:
        examples = match_unpaired(unpaired, report, path)
    report.kept = len(examples)
    if not examples and require_rows:
        raise UserError(f"{path}: no valid rows ({dict(report.skipped)} skipped)")
    return examples, report


def match_unpaired(rows: list[_Tokenised], report: DataReport, path: str) -> list[Example]:
    """KTO pairs from unpaired rows: the k-th desirable row (label true) with the k-th
    undesirable one, in file order, the smaller side cycled so that every row is used (the two
    sides then weigh equally per epoch; ``--hp lam_d=… lam_u=…`` reweights them). KTO's loss is
    a desirable term plus an undesirable term coupled only by the detached batch reference
    point z0, so such a pair trains as the two rows would on their own."""
    good = [r for r in rows if r.label]
    bad = [r for r in rows if not r.label]
    if not good or not bad:
        raise UserError(
            f"{path}: unpaired rows need both labels for KTO: {len(good)} desirable (label true) "
            f"and {len(bad)} undesirable (label false) valid rows"
        )
    n = max(len(good), len(bad))
    report.unpaired = {"desirable": len(good), "undesirable": len(bad), "pairs": n}
    out = []
    for k in range(n):
        d, u = good[k % len(good)], bad[k % len(bad)]
        other = None if u.prompt_ids == d.prompt_ids else tuple(u.prompt_ids)
        out.append(Example(k, tuple(d.prompt_ids), tuple(d.responses[0]), tuple(u.responses[0]),
                           d.prompt_text, d.response_text, other))  # fmt: skip
    return out


def problem_kind(problem: str) -> str:
    """A row problem without its row-specific details (the key problems are counted under)."""
    return problem.split(" (")[0].split(":")[0]


def collate(examples: list[Example], pad_id: int) -> dict[str, Tensor]:
    """Right-padded concatenated batch: rows 0..B-1 are prompt+chosen, rows B..2B-1
    prompt+rejected (the rejected response's own prompt where it has one). Returns
    ``input_ids`` (2B, T), ``attention_mask`` (2B, T), ``loss_mask`` (2B, T) (1 on response
    tokens only) and ``idx`` (B,) row indices."""
    seqs = [(e.prompt_ids, e.chosen_ids) for e in examples]
    seqs += [(e.rejected_prompt_ids or e.prompt_ids, e.rejected_ids) for e in examples]
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
