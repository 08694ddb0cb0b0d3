"""How figures name and colour the objectives: one colour per objective, the same in every
figure (``analysis`` and ``llm.diagnose``'s plot), and the names the papers use."""

from __future__ import annotations

# One colour per objective, the same in every figure.
PALETTE = {
    "sft": "#7f7f7f",
    "bon": "#1f77b4",
    "bon_pushdown": "#17becf",
    "rwr": "#bcbd22",
    "reinforce": "#9467bd",
    "ppo": "#e377c2",
    "dpo": "#d62728",
    "ipo": "#ff7f0e",
    "slic": "#8c564b",
    "orpo": "#393b79",
    "simpo": "#637939",
    "asft": "#2ca02c",
    "kto": "#e7ba52",
}
# The names the papers use, for legends and titles (docs/science.md's objectives table; TRL's
# loss types by their papers' names). Figures never print a registry key: ``display_name(key)``.
DISPLAY_NAMES = {
    "sft": "SFT (Pref-FT)",
    "bon": "BoN (filtered BC)",
    "bon_pushdown": "BoN + push-down",
    "rwr": "RWR",
    "reinforce": "REINFORCE",
    "ppo": "PPO",
    "dpo": "DPO",
    "ipo": "IPO",
    "slic": "SLiC-HF",
    "orpo": "ORPO",
    "simpo": "SimPO",
    "asft": "ASFT",
    "kto": "KTO",
    "hinge": "hinge (RSO)",
    "nca_pair": "NCA",
    "bco_pair": "BCO",
    "robust": "robust DPO",
    "exo_pair": "EXO",
    "sppo_hard": "SPPO (hard)",
    "aot": "AOT",
    "aot_unpaired": "AOT (unpaired)",
    "apo_zero": "APO-zero",
    "apo_down": "APO-down",
    "discopop": "DiscoPOP",
    "grpo": "GRPO (TRL)",
    "rloo": "RLOO (TRL)",
}


def display_name(key: str) -> str:
    """The paper's name of objective ``key`` (the key itself when it has none)."""
    return DISPLAY_NAMES.get(key, key)
