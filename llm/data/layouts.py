"""TRL data layouts: detecting a file's layout, checking it against the objective, and
splitting each row into its prompt and response(s), with the per-row checks (see the package
docstring, ``llm.data``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def check_messages(msgs: object, key: str) -> str | None:
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
        if problem := check_messages(row[key], key):
            return problem
    chosen, rejected = row["chosen"], row["rejected"]
    if row.get("prompt") is not None:
        if problem := check_messages(row["prompt"], "prompt"):
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
        if problem := check_messages(row[k], k):
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
    if problem := check_messages(value, key):
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
