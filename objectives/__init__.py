"""modeseek's shared objectives: pure torch losses of per-example log-probs, a registry with the
metadata callers dispatch on, hand-derived partials, and closed-form tabular/probability-space
gradients. Imported by ``toy/`` (the bandit), ``llm/`` (Hugging Face models) and the analysis.

>>> import objectives
>>> loss_B = objectives.OBJECTIVES["dpo"](chosen_logps=..., rejected_logps=...,
...                                      ref_chosen_logps=..., ref_rejected_logps=..., beta=0.1)
"""

from objectives._checks import values_checked_once
from objectives._math import log1mexp, log_odds
from objectives.gradients import (
    prob_partials,
    pushdown_ratio,
    softmax_logit_grad,
    tabular_inputs,
    tabular_logit_grad,
)
from objectives.online import group_advantages, grpo, rloo, tempered_logps
from objectives.pairwise import asft, dpo, implicit_rewards, ipo, kto, orpo, sft, simpo, slic
from objectives.registry import OBJECTIVES, Objective, get
from objectives.sampled import (
    advantages,
    bon,
    bon_pushdown,
    ppo,
    reinforce,
    rwr,
    rwr_weights,
    shaped_rewards,
)
from objectives.trl_pairwise import (
    aot,
    aot_unpaired,
    apo_down,
    apo_zero,
    bco_pair,
    discopop,
    exo_pair,
    hinge,
    nca_pair,
    robust,
    sppo_hard,
)

__all__ = [
    "OBJECTIVES",
    "Objective",
    "advantages",
    "aot",
    "aot_unpaired",
    "apo_down",
    "apo_zero",
    "asft",
    "bco_pair",
    "bon",
    "bon_pushdown",
    "discopop",
    "dpo",
    "exo_pair",
    "get",
    "group_advantages",
    "grpo",
    "hinge",
    "implicit_rewards",
    "ipo",
    "kto",
    "log1mexp",
    "log_odds",
    "nca_pair",
    "orpo",
    "ppo",
    "prob_partials",
    "pushdown_ratio",
    "reinforce",
    "rloo",
    "robust",
    "rwr",
    "rwr_weights",
    "sft",
    "shaped_rewards",
    "simpo",
    "slic",
    "softmax_logit_grad",
    "sppo_hard",
    "tabular_inputs",
    "tabular_logit_grad",
    "tempered_logps",
    "values_checked_once",
]
