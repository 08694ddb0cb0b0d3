"""Tokenising validated rows into ``Example`` pairs (chat template or plain), matching unpaired
rows, and collating a right-padded batch with its masks. Layouts, templating and the truncation
policy: see the package docstring (``llm.data``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

import objectives
from llm.data.layouts import (
    DataError,
    _assistant,
    _Parts,
    check_layout,
    detect_layout,
    row_parts,
)
from runio import UserError


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


def render_row(tokenizer, messages: list, generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_checked(tokenizer, messages: list, generation_prompt: bool) -> list[int] | str:
    """``render_row``, or the row's problem when the chat template refuses the messages (a
    template's ``raise_exception``, e.g. roles that must alternate)."""
    from jinja2 import TemplateError

    try:
        return render_row(tokenizer, messages, generation_prompt)
    except TemplateError as e:
        return f"the chat template refuses the messages ({' '.join(str(e).split())})"


def _template_ids(tokenizer, prompt: list, responses: list) -> tuple[list, list] | str:
    prompt_ids = render_checked(tokenizer, prompt, generation_prompt=True)
    if isinstance(prompt_ids, str):
        return prompt_ids
    out = []
    for key, resp in responses:
        full = render_checked(tokenizer, prompt + resp, generation_prompt=False)
        if isinstance(full, str):
            return full
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
