"""Before training: predict, per preference pair, what one gradient step of each objective does to
log π(y_w) and log π(y_l) on *this* model, and (``--verify``) take the step to check.

``python -m llm.diagnose`` (``llm.diagnose.cli``'s docstring describes the command and its
quantities). The package:

- ``config``: ``DiagnoseConfig`` and its validation;
- ``gradients``: ℓ, CHES and the per-pair gradient inner products and norms (the model side);
- ``prediction``: the objectives' partials and the first-order Δℓ prediction (pure);
- ``verification``: ``--verify``'s real steps (one pair, or ``--batch-step``'s batch);
- ``pairs``: the per pair × objective table (``diagnose_pairs``);
- ``summary``: the summary, its printed table, reading a table back;
- ``plot``: the drawing of ``diagnose.png`` (figure 15), imported only when drawing;
- ``cli``: ``parse``, ``run`` and ``main``, the command line's entry.
"""

from llm.diagnose.cli import check_layout, main, parse, run
from llm.diagnose.config import (
    PAIR_KINDS,
    TABLE_NAMES,
    DiagnoseConfig,
    check_objective,
    parse_hp,
    validate,
)
from llm.diagnose.gradients import (
    ches,
    gram,
    pair_quantities,
    rejected_prompt,
    response_forward,
    select_params,
    transformer_blocks,
)
from llm.diagnose.pairs import diagnose_pairs
from llm.diagnose.prediction import loss_partials, objective_loss, objective_terms
from llm.diagnose.summary import (
    SUMMARY_COLUMNS,
    auc,
    format_summary,
    read_table,
    read_texts,
    spearman,
    summarize,
)
from llm.diagnose.verification import batch_terms, verify_pair

__all__ = [
    "PAIR_KINDS",
    "SUMMARY_COLUMNS",
    "TABLE_NAMES",
    "DiagnoseConfig",
    "auc",
    "batch_terms",
    "check_layout",
    "check_objective",
    "ches",
    "diagnose_pairs",
    "format_summary",
    "gram",
    "loss_partials",
    "main",
    "objective_loss",
    "objective_terms",
    "pair_quantities",
    "parse",
    "parse_hp",
    "read_table",
    "read_texts",
    "rejected_prompt",
    "response_forward",
    "run",
    "select_params",
    "spearman",
    "summarize",
    "transformer_blocks",
    "validate",
    "verify_pair",
]
