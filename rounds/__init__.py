"""The model-agnostic half of Algorithm 1 shared by ``toy/`` and ``llm/``: mixing of offline and
on-policy samples, pair construction, the inputs of each data kind, baselines (see
``rounds.core``), and the round knobs both worlds' configs share (``rounds.options``). Imports
only ``torch`` and the core; never ``toy/`` or ``llm/``."""

from rounds.core import (
    MODES,
    Round,
    build_pairs,
    first_nonfinite,
    fold_kl,
    kl_shaped,
    loss_denominator,
    loss_sum,
    make_round,
    masked_mean,
    objective_inputs,
    offline_count,
    offline_mask,
    round_loss,
    sampled_kl,
    sequence_logps,
    update_baseline,
)

__all__ = [
    "MODES",
    "Round",
    "build_pairs",
    "first_nonfinite",
    "fold_kl",
    "kl_shaped",
    "loss_denominator",
    "loss_sum",
    "make_round",
    "masked_mean",
    "objective_inputs",
    "offline_count",
    "offline_mask",
    "round_loss",
    "sampled_kl",
    "sequence_logps",
    "update_baseline",
]
