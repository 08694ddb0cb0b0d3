"""TRL's GRPO flags in ``llm.train``'s rounds modes (``--mode on_policy | offline | hybrid``),
where they mean what ``GRPOTrainer`` means by them; ``llm.flags.translate_all`` asks
``rounds_flag`` about each flag once the mode is known (``--mode`` anywhere on the line).

| GRPO flag | ours (rounds modes) | notes |
|---|---|---|
| dataset_name, data | prompts | the prompts file; with --prompts too: an error |
| max_steps | max_steps | optimiser updates in all; the round loop stops when reached |
| num_generations | samples_per_prompt | N |
| num_iterations | steps_per_round | updates per round on its samples |
| per_device_train_batch_size B | prompts_per_round B·W / N | completions per process (W of them) |
| max_completion_length | max_new_tokens | |
| temperature | temperature | |
| beta | hp beta (objectives with a β: rwr, dpo, ...) else kl_penalty | β·KL(π‖π_ref) |
| epsilon, epsilon_high | hp clip_eps, clip_eps_high | the objectives that clip (ppo, ...) |

Refused in the rounds modes (one line naming the flag and the equivalent): the pairs mode's
max_length, num_train_epochs, gradient_accumulation_steps, per_device_eval_batch_size,
dataset_test_split, logging_steps, save_steps (``--save-every`` counts rounds here), the
*_strategy flags, precompute_ref_log_probs, and TRL's GRPO flags without a counterpart.
"""

from __future__ import annotations

import os

from runio import UserError

ROUNDS_MODES = ("on_policy", "offline", "hybrid")

RENAMED = {
    "dataset_name": "prompts",
    "data": "prompts",
    "num_generations": "samples_per_prompt",
    "num_iterations": "steps_per_round",
}
"""GRPO flag → our rounds field, the value unchanged."""

CLIP_FLAGS = {"epsilon": ("clip_eps", 0.2), "epsilon_high": ("clip_eps_high", None)}
"""GRPO's clipping flags → (the objective hyperparameter, TRL's default)."""

REFUSED = {
    "max_length": "the rounds modes bound --max_prompt_length and --max_completion_length "
    "(--max-len is only their sum's limit)",
    "num_train_epochs": "rounds are not epochs: --rounds N (or --max_steps)",
    "gradient_accumulation_steps": "each update sees the whole round; split its memory with "
    "--micro-prompts",
    "per_device_eval_batch_size": "evaluation samples --eval-prompts prompts × N",
    "dataset_test_split": "the rounds modes evaluate on the first --eval-prompts prompts",
    "eval_strategy": "evaluation: --eval-prompts K with --eval-every N (steps)",
    "evaluation_strategy": "evaluation: --eval-prompts K with --eval-every N (steps)",
    "save_strategy": "checkpoints: --save-every N (rounds)",
    "logging_strategy": "one metrics record per round",
    "logging_steps": "one metrics record per round",
    "save_steps": "--save-every N counts rounds in the rounds modes",
    "precompute_ref_log_probs": "the samples are new every round",
    "steps_per_generation": "one generation per round: --num_iterations updates on it",
    "generation_batch_size": "the generation batch is the round: --per_device_train_batch_size",
    "scale_rewards": "use --hp scale=... (grpo)",
    "reward_funcs": "use --reward (several: their weighted sum, --reward-weights)",
    "use_vllm": "sampling is transformers' generate",
    "top_entropy_quantile": "no counterpart",
    "mask_truncated_completions": "no counterpart",
}
"""Flags without a meaning in the rounds modes → the one-line error's hint."""


def _has(objective: str, key: str) -> bool:
    import objectives

    o = objectives.OBJECTIVES.get(objective)
    return o is not None and key in o.defaults


_N_FLAGS = ("num_generations", "samples_per_prompt")


def _per_prompt(argv: list[str], fields: dict) -> int:
    """N as the command line sets it (``--num_generations``/``--samples-per-prompt``), else our
    default."""
    n = fields["samples_per_prompt"].default
    for i, token in enumerate(argv):
        name, eq, inline = token[2:].partition("=")
        if token.startswith("--") and name.replace("-", "_") in _N_FLAGS:
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                n = int(value)
            except ValueError:
                pass  # tyro reports it
    return n


def rounds_flag(flag: str, value: str, argv: list[str], chosen: list[str], fields: dict):
    """``(tokens, hp items, our field)`` of a GRPO flag in the rounds modes, or None when the
    pairs-mode translation applies; ``UserError`` for a flag refused here."""
    name = flag.replace("-", "_")
    if name in REFUSED:
        raise UserError(f"--{flag}: no counterpart in the rounds modes; {REFUSED[name]}")
    if name in RENAMED:
        target = RENAMED[name]
        if target == "prompts" and any(t.split("=")[0] == "--prompts" for t in argv):
            raise UserError(f"--{flag} and --prompts both name the prompts file; give one")
        return [f"--{target.replace('_', '-')}", value], [], target
    if name == "per_device_train_batch_size":
        n = _per_prompt(argv, fields)
        try:
            b = int(value)
        except ValueError:
            return None
        if n < 1 or b % n:
            raise UserError(
                f"--{flag} {value}: TRL's batch counts completions, {n} per prompt "
                f"(--num_generations): it must be a multiple of {n} (prompts per round = "
                "batch / N)"
            )
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)  # per device: the round is W of them
        return ["--prompts-per-round", str(b * world // n)], [], "prompts_per_round"
    if name == "beta":
        takers = [o for o in chosen if _has(o, "beta")]
        if takers:
            return None  # the objective's own β (llm.flags' hyperparameter flags)
        return ["--kl-penalty", value], [], "kl_penalty"
    if name in CLIP_FLAGS:
        key, default = CLIP_FLAGS[name]
        if any(_has(o, key) for o in chosen):
            return [], [f"{key}={value}"], f"hp:{key}"
        try:
            if default is not None and float(value) == default:
                return [], [], None  # TRL's default, which these objectives ignore too
        except ValueError:
            pass
        import objectives

        takers = sorted(o for o in objectives.OBJECTIVES if _has(o, key))
        raise UserError(
            f"--{flag} {value}: {', '.join(chosen)} has no {key} (--{flag} is {key} of "
            f"{', '.join(takers) or 'no objective'}); choose one of those with --objective"
        )
    return None


GRPO_ONLY = ("num_generations", "num_iterations", "epsilon", "epsilon_high")
"""GRPO flags with a meaning in the rounds modes only."""


def apply(flag, value, argv, chosen, fields, mode, out, hp, spelled) -> bool:
    """Translate ``--flag value`` into ``out``/``hp`` and remember its spelling when it is a
    GRPO flag of the rounds modes (True: done); a GRPO-only flag in the pairs mode is an
    error."""
    name = flag.replace("-", "_")
    if mode not in ROUNDS_MODES:
        if name in GRPO_ONLY:
            raise UserError(
                f"--{flag}: TRL's GRPO flag has no counterpart in the pairs mode; it applies in "
                "the rounds modes (--mode on_policy, offline or hybrid)"
            )
        return False
    got = rounds_flag(flag, value, argv, chosen, fields)
    if got is None:
        return False
    tokens, items, field = got
    out += tokens
    hp += items
    if field is not None and field != name:
        spelled[field] = f"--{flag}"
    return True
