"""Prompt-only data for the rounds modes: read, checked and tokenised before any model loads.

A row holds ``prompt``: a string, or a list of ``{"role", "content"}`` messages (other columns
are kept for TRL-style reward functions, ``Prompt.columns``, and otherwise unused, so a
preference-pairs file is also a prompts file). Formats and errors are those of
the pairs data (``llm.data.read_rows``; ``DataError`` naming the file, the 0-based row and the
problem). A message list holds the roles of ``CHAT_ROLES`` and does not end with the assistant's
message (the model writes that turn); a file without a ``prompt`` column is refused at once,
naming the layout its columns make. With a chat template (``chat_template="on"``, or ``"auto"``
and the tokenizer has one) the prompt is rendered with the generation prompt, exactly as the
pairs path renders its prompts (a template that refuses the messages makes the row invalid);
without one, ``tokenizer(prompt)`` (with its special tokens, e.g. BOS). A prompt longer than
``max_prompt_len`` tokens makes the row invalid (``skip_invalid`` skips it instead). The file
must hold ``prompts_per_round`` and ``eval_prompts`` valid prompts (a request is never trimmed).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from llm import models
from llm.data import (
    LAYOUT_NAMES,
    DataError,
    check_messages,
    detect_layout,
    problem_kind,
    read_rows,
    render_checked,
)
from runio import UserError

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
"""The roles a prompt's messages may have."""


@dataclass(frozen=True)
class Prompt:
    """One tokenised prompt; ``idx`` is its row in the prompts file."""

    idx: int
    ids: tuple[int, ...]
    text: str
    raw: object = field(default=None, compare=False, repr=False)
    """The row's ``prompt`` as the file holds it (a string or a message list)."""
    columns: dict = field(default_factory=dict, compare=False, repr=False)
    """The row's other columns (a TRL-style reward gets them: ``llm.reward_fns``)."""


def prompt_texts(rows: list[dict]):
    """Every prompt string and message content (a tiny model's tokenizer corpus)."""
    for row in rows:
        p = row.get("prompt") if isinstance(row, dict) else None
        if isinstance(p, str):
            yield p
        elif isinstance(p, list):
            yield from (m["content"] for m in p if isinstance(m, dict) and "content" in m)


def _check_roles(messages: list) -> str | None:
    if not messages:
        return "empty 'prompt' message list"
    for j, m in enumerate(messages):
        if m["role"] not in CHAT_ROLES:
            return f"'prompt' message {j} has role {m['role']!r}; accepted: {', '.join(CHAT_ROLES)}"
    if messages[-1]["role"] == "assistant":
        return (
            f"'prompt' ends with an assistant message (message {len(messages) - 1}); a prompt is "
            "the conversation up to the model's turn"
        )
    return None


def _check_columns(rows: list, path: str) -> None:
    """A file none of whose rows has a ``prompt``: one line naming the layout it has."""
    if any(isinstance(r, dict) and "prompt" in r for r in rows) or not rows:
        return
    cols = sorted({k for r in rows if isinstance(r, dict) for k in r})
    layout = LAYOUT_NAMES[detect_layout(rows)]
    raise UserError(
        f"{path}: no 'prompt' column (columns {cols}: {layout} rows); a prompts file needs a "
        "'prompt' string or list of {role, content} messages per row"
    )


def _tokenize(tokenizer, row, use_template: bool, max_prompt_len: int):
    if not isinstance(row, dict):
        return f"row must be an object/dict, got {type(row).__name__}"
    if "prompt" not in row or row["prompt"] is None:
        return "missing column 'prompt' (a prompt string or a list of {role, content} messages)"
    p = row["prompt"]
    if isinstance(p, str):
        if not p.strip():
            return "empty 'prompt'"
        messages = [{"role": "user", "content": p}]
        text = p
    else:
        if problem := check_messages(p, "prompt") or _check_roles(p):
            return problem
        if not use_template:
            return "conversational prompt (message list) but no chat template is in use"
        messages, text = p, "\n".join(m["content"] for m in p)
    ids = render_checked(tokenizer, messages, True) if use_template else tokenizer(p)["input_ids"]
    if isinstance(ids, str):
        return ids
    if not ids:
        return "empty prompt after tokenisation"
    if len(ids) > max_prompt_len:
        return f"prompt longer than the limit ({len(ids)} > max_prompt_len={max_prompt_len})"
    return Prompt(0, tuple(ids), text)


def tokenize_prompts(
    rows: list[dict],
    tokenizer,
    *,
    path: str,
    max_prompt_len: int,
    chat_template: str = "auto",
    skip_invalid: bool = False,
) -> tuple[list[Prompt], dict]:
    """Check and tokenise every row; returns the prompts and a report (rows, kept, skipped)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "on" and not has_template:
        raise UserError("TrainConfig.chat_template: 'on' but the tokenizer has no chat template")
    use_template = chat_template == "on" or (chat_template == "auto" and has_template)
    _check_columns(rows, path)
    out, skipped = [], Counter()
    for i, row in enumerate(rows):
        result = _tokenize(tokenizer, row, use_template, max_prompt_len)
        if isinstance(result, str):
            if not skip_invalid:
                raise DataError(path, i, result)
            skipped[problem_kind(result)] += 1
            continue
        extra = {k: v for k, v in row.items() if k != "prompt"}
        out.append(Prompt(i, result.ids, result.text, row["prompt"], extra))
    if not out:
        raise UserError(f"{path}: no valid prompts ({dict(skipped)} skipped)")
    return out, {"rows": len(rows), "kept": len(out), "skipped": dict(skipped)}


def load_prompt_rows(path: str, split: str = "train") -> list[dict]:
    """The rows of a prompts file (any format ``llm.data.read_rows`` reads)."""
    return read_rows(path, split)


def load_prompts(cfg):
    """(tokenizer, prompts, report): read, checked and tokenised before any weights load."""
    rows = load_prompt_rows(cfg.prompts, cfg.data_split)
    tokenizer = models.load_tokenizer(
        cfg.model, corpus=lambda: prompt_texts(rows), gguf_file=cfg.gguf_file,
        cache_dir=cfg.cache_dir,
    )  # fmt: skip
    limit = models.max_positions(cfg.model, cfg.gguf_file, cfg.cache_dir)
    if limit is not None and cfg.max_prompt_len + cfg.max_new_tokens > limit:
        raise UserError(
            f"TrainConfig.max_new_tokens: max_prompt_len + max_new_tokens = "
            f"{cfg.max_prompt_len + cfg.max_new_tokens} exceeds the model's {limit} positions"
        )
    prompts, report = tokenize_prompts(
        rows, tokenizer, path=cfg.prompts, max_prompt_len=cfg.max_prompt_len,
        chat_template=cfg.chat_template, skip_invalid=cfg.skip_invalid,
    )  # fmt: skip
    for name in ("prompts_per_round", "eval_prompts"):
        if getattr(cfg, name) > len(prompts):
            skipped = f", {report['rows'] - len(prompts)} rows skipped" if cfg.skip_invalid else ""
            raise UserError(
                f"TrainConfig.{name}: {getattr(cfg, name)} exceeds the {len(prompts)} valid "
                f"prompts of {cfg.prompts}{skipped}"
            )
    return tokenizer, prompts, report
