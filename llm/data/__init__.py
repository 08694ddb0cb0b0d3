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

from llm.data.layouts import (
    ASSISTANT_TURN,
    LAYOUT_NAMES,
    UNPAIRED_OBJECTIVES,
    DataError,
    accepted_layouts,
    check_layout,
    check_messages,
    chosen_only_objectives,
    detect_layout,
    row_parts,
    split_shared_prefix,
    to_conversation,
)
from llm.data.sources import FILE_SUFFIXES, is_hub_name, read_rows
from llm.data.tokenising import (
    DataReport,
    Example,
    collate,
    match_unpaired,
    problem_kind,
    render_checked,
    render_row,
    tokenize_rows,
)

__all__ = [
    "ASSISTANT_TURN",
    "FILE_SUFFIXES",
    "LAYOUT_NAMES",
    "UNPAIRED_OBJECTIVES",
    "DataError",
    "DataReport",
    "Example",
    "accepted_layouts",
    "check_layout",
    "check_messages",
    "chosen_only_objectives",
    "collate",
    "detect_layout",
    "is_hub_name",
    "match_unpaired",
    "problem_kind",
    "read_rows",
    "render_checked",
    "render_row",
    "row_parts",
    "split_shared_prefix",
    "to_conversation",
    "tokenize_rows",
]
