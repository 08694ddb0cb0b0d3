"""Several rewards and TRL-style reward functions for the rounds modes.

``--reward`` takes one spec or several (``--reward a b``); each is a built-in length reward, a
``module:function`` or a reward-model directory (``llm.rewards``). With several, the reward is
TRL's weighted sum ``Σ_i w_i r_i`` (``--reward-weights``, one per reward, default all 1), and
each reward's mean per round is logged as ``reward/<name>/mean`` (``reward_names``).

A ``module:function`` is called in one of two conventions, told apart by its signature:

- ours: ``f(prompts=list[str], responses=list[str], token_ids=list[list[int]])``;
- TRL's (a ``completions`` parameter, or ``**kwargs`` without ``responses``):
  ``f(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns)`` as
  ``GRPOTrainer`` calls it. ``prompts`` are the file's prompts (strings, or message lists for a
  conversational file), ``completions`` strings (or ``[{"role": "assistant", "content": ...}]``
  for a conversational file), ``completion_ids`` the response token ids, and every other column
  of the prompt rows (e.g. a reference answer ``solution``) is a list with one entry per sample,
  as are the others. ``trainer_state`` holds ``round`` (the round index) and ``global_step``
  (the optimiser updates before the round). A function without ``**kwargs`` is given only the
  keywords it names.

A TRL-style function may return ``None`` for a sample it does not apply to: the weighted sum
skips it (TRL's nansum); a sample for which every reward returns ``None`` is a ``UserError``
naming the rewards. A returned NaN, a non-number or the wrong count is a ``UserError`` naming
the function (``llm.rewards.score`` adds the round and prompt row).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor

from llm.rewards import (
    LENGTH_REWARDS,
    build_reward,
    check_reward_spec,
    is_trl_style,
    load_function,
    specs_of,
)
from runio import UserError


def reward_names(reward: str | Sequence[str]) -> list[str]:
    """The metric names of the rewards: a function's name, a model directory's name, a built-in's
    name; the whole spec where two would coincide."""
    specs = specs_of(reward)
    short = [s.partition(":")[2] if ":" in s else Path(s).name or s for s in specs]
    return [s if short.count(n) > 1 else n for s, n in zip(specs, short)]


def _accepted(fn, kwargs: dict) -> dict:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _values(out: object, n: int, spec: str) -> tuple[Tensor, Tensor]:
    """(rewards, None mask) of what a function returned; a ``UserError`` naming it otherwise."""
    if isinstance(out, Tensor):
        out = out.detach().float().reshape(-1).tolist()
    try:
        values = list(out)
    except TypeError:
        raise UserError(f"reward {spec}: returned {type(out).__name__}, not a list") from None
    if len(values) != n:
        raise UserError(f"reward {spec}: returned {len(values)} values for {n} responses")
    none = torch.tensor([v is None for v in values], dtype=torch.bool)
    nums = []
    for k, v in enumerate(values):
        if v is None:
            nums.append(math.nan)
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise UserError(
                f"reward {spec}: returned {type(v).__name__} {v!r:.40} for response {k}, not a "
                "number (None: not applicable)"
            ) from None
        if not math.isfinite(x):
            raise UserError(
                f"reward {spec}: returned {x} for response {k}; rewards must be finite (None: "
                "not applicable)"
            )
        nums.append(x)
    return torch.tensor(nums, dtype=torch.float32), none


_NO_STATE = SimpleNamespace(round=None, global_step=None)


class Rewards:
    """The weighted sum of one or more rewards, ``f(prompts, responses, token_ids, lengths_B,
    context=None) -> rewards_B``; ``context`` (``llm.collect``) holds what TRL-style functions
    get besides the texts. ``last`` holds each reward's values (B,) of the latest call (NaN where
    a function returned None), by ``names``."""

    takes_context = True

    def __init__(self, fns: list, specs: Sequence[str], weights: Sequence[float]):
        self.fns, self.specs, self.weights = fns, list(specs), [float(w) for w in weights]
        self.names = reward_names(self.specs)
        self.spec = " + ".join(self.specs)
        self.last: dict[str, Tensor] = {}

    def _call(self, fn, spec, prompts, responses, token_ids, lengths_B, context):
        raw = getattr(fn, "trl_fn", None)
        if raw is None:
            return fn(prompts, responses, token_ids, lengths_B).float().reshape(-1), None
        ctx = context or {}
        kwargs = {
            "prompts": ctx.get("prompts", list(prompts)),
            "completions": ctx.get("completions", list(responses)),
            "completion_ids": [list(t) for t in token_ids],
            **ctx.get("columns", {}),
            "trainer_state": ctx.get("trainer_state", _NO_STATE),
        }
        return _values(raw(**_accepted(raw, kwargs)), len(responses), spec)

    def __call__(self, prompts, responses, token_ids, lengths_B, context=None) -> Tensor:
        parts, nones = [], []
        for fn, spec in zip(self.fns, self.specs):
            try:
                values, none = self._call(fn, spec, prompts, responses, token_ids, lengths_B,
                                          context)  # fmt: skip
            except UserError:
                raise
            except Exception as e:  # llm.rewards.score names the function and the prompt row
                with contextlib.suppress(AttributeError, TypeError):
                    e.reward_spec = spec
                raise
            if values.numel() != len(responses):
                raise UserError(
                    f"reward {spec}: returned {values.numel()} values for {len(responses)} "
                    "responses"
                )
            parts.append(values)
            nones.append(torch.zeros(len(responses), dtype=torch.bool) if none is None else none)
        stack, none_BK = torch.stack(parts, 1), torch.stack(nones, 1)
        self.last = dict(zip(self.names, parts))
        if bool(none_BK.all(1).any()):
            b = int(none_BK.all(1).nonzero()[0, 0])
            raise UserError(
                f"every reward ({', '.join(self.specs)}) returned None for response {b}: at least "
                "one must score each sample"
            )
        w = torch.tensor(self.weights, dtype=torch.float32)
        # TRL's nansum over the Nones only: a NaN a function computed stays (check_finite)
        return torch.where(none_BK, 0.0, stack * w).sum(1)


def load_trl(spec: str):
    """A TRL-style ``module:function`` reward (``Rewards`` calls it with TRL's keywords)."""
    fn = load_function(spec)

    def reward(prompts, responses, token_ids, lengths_B):  # not called: Rewards uses trl_fn
        raise AssertionError

    reward.trl_fn = fn
    return reward


def build_rewards(
    reward: str | Sequence[str],
    items: Sequence[str],
    weights: Sequence[float] | None = None,
    batch_size: int = 16,
    device="cpu",
) -> Rewards:
    """The ``Rewards`` of ``--reward`` (one or several) and ``--reward-weights``."""
    specs = specs_of(reward)
    fns = []
    for spec in specs:
        if spec not in LENGTH_REWARDS and not Path(spec).expanduser().is_dir():
            if is_trl_style(load_function(spec)):
                fns.append(load_trl(spec))
                continue
        fns.append(build_reward(spec, items if spec in LENGTH_REWARDS else (), batch_size, device))
    return Rewards(fns, specs, weights or [1.0] * len(specs))


def check_rewards(reward, items: Sequence[str], weights: Sequence[float] | None) -> None:
    """Validate ``--reward`` (one or several), ``--reward-args`` and ``--reward-weights`` without
    importing anything. With several rewards, ``--reward-args`` go to the built-in ones."""
    specs = specs_of(reward)
    if not specs:
        raise UserError("TrainConfig.reward: needs at least one reward")
    if len(specs) > 1 and items and not any(s in LENGTH_REWARDS for s in specs):
        raise UserError("TrainConfig.reward_args: only the built-in length rewards take arguments")
    for spec in specs:
        check_reward_spec(spec, items if len(specs) == 1 or spec in LENGTH_REWARDS else ())
    if weights is not None:
        if len(weights) != len(specs):
            raise UserError(
                f"TrainConfig.reward_weights: {len(weights)} weights for {len(specs)} rewards "
                "(one per --reward)"
            )
        bad = [w for w in weights if not math.isfinite(w)]
        if bad:
            raise UserError(f"TrainConfig.reward_weights: must be finite, got {bad[0]}")


def trl_context(prompts: Sequence, prompt_idx: Sequence[int], n: int, texts: Sequence[str],
                round_index: int, global_step: int | None = None) -> dict:  # fmt: skip
    """The keywords a TRL-style function gets for P prompts' N samples each (``Rewards``): the
    prompts as the file holds them, the completions (assistant messages for a conversational
    file), the rows' other columns and ``trainer_state``, each repeated per sample."""
    rows = [prompts[i] for i in prompt_idx for _ in range(n)]
    raw = [p.raw if p.raw is not None else p.text for p in rows]
    chat = bool(raw) and all(isinstance(p, list) for p in raw)
    keys = list(dict.fromkeys(k for p in rows for k in p.columns))
    return {
        "prompts": raw,
        "completions": [[{"role": "assistant", "content": t}] for t in texts] if chat
        else list(texts),
        "columns": {k: [p.columns.get(k) for p in rows] for k in keys},
        "trainer_state": SimpleNamespace(round=round_index, global_step=global_step),
    }  # fmt: skip


def parts_of(reward_fn, p: int, n: int) -> dict[str, Tensor]:
    """Each reward's values (P, N) of the latest call when there are several (else none)."""
    last = getattr(reward_fn, "last", {})
    return {k: v.view(p, n) for k, v in last.items()} if len(last) > 1 else {}
