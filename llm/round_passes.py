"""Which no-grad scoring passes a round of the rounds modes needs, and the reference it builds.

A round may score its samples twice before its update: once under π_ref (the reference
forward) and once under the collecting policy (the "old" log-probs). Each pass is skipped
when nothing reads it, and a skipped pass changes no loss, gradient or metric value:

- **Reference** (``needs_ref_logps``): needed when ``kl_penalty`` or ``kl_reward`` is not 0,
  when the objective reads reference log-probs (``Objective.needs_ref``, a required ``ref_*``
  input, or the optional ``ref_logps`` with a non-zero ``kl_coef``/``beta``), or when samples
  are drawn from π_ref after round 0 (``offline``/``hybrid``: their old log-probs are π_ref's).
  Otherwise no reference is built at all (no frozen copy; ``config.json``'s ``reference`` is
  ``none``): round 0's samples, which come from π_ref, are drawn from the policy, which is π_ref
  until the first update (same weights, same seed: the same samples), and their reference
  log-probs are the policy's. ``policy/kl_ref`` is then left out of metrics.jsonl (there is
  no reference to compare with); ``--ref copy`` (or ``adapter`` with LoRA) builds the reference
  anyway, for that metric.
- **Policy** (``defer_policy_pass``): with one optimiser step per round and no ``kl_reward``
  (which folds the old log-probs into the rewards before any loss), the old log-probs are the
  current policy's, detached, so they are taken from the training forward itself (each
  micro-batch's rows before its loss) instead of a separate pass.
"""

from __future__ import annotations

import objectives
from llm.config import TrainConfig

REF_COEFS = ("kl_coef", "beta")
"""Hyperparameters that make an objective's optional ``ref_logps`` matter when non-zero."""


def objective_reads_ref(obj: objectives.Objective, hp: dict) -> bool:
    """Whether the objective's loss with ``hp`` depends on reference log-probs."""
    if obj.needs_ref or any(k.startswith("ref_") for k in obj.required_inputs(hp)):
        return True
    if "ref_logps" not in obj.optional_inputs:
        return False
    resolved = {**obj.defaults, **hp}
    return any(float(resolved.get(k) or 0.0) != 0.0 for k in REF_COEFS if k in resolved)


def needs_ref_logps(cfg: TrainConfig, obj: objectives.Objective, hp: dict) -> bool:
    """Whether the rounds need π_ref's log-probs (and so a reference model): see the module
    docstring."""
    asked = cfg.ref != "auto"  # a reference strategy named explicitly: built, and its KL logged
    return bool(
        asked
        or cfg.kl_penalty
        or cfg.kl_reward
        or cfg.mode != "on_policy"
        or objective_reads_ref(obj, hp)
    )


def defer_policy_pass(cfg: TrainConfig) -> bool:
    """Whether the old log-probs come from the training forward (one step per round, no
    ``kl_reward``) rather than a no-grad pass at collection."""
    return cfg.steps_per_round == 1 and not cfg.kl_reward
