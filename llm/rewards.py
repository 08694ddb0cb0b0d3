"""Rewards of sampled responses: one float per response, shape (B,).

``--reward`` is one of:

- a built-in length reward (paper A's synthetic tasks, docs/science.md §5), where ``len`` is the
  number of generated response tokens *excluding* the EOS token (a response cut at
  max_new_tokens counts all its tokens):

  - ``length_min``:  r = -len                    (shorter is better)
  - ``length_mode``: r = -|len - m|              (``--reward-args m=20``; m defaults to 20)
  - ``length_skew``: r = -len                    (the Min reward; the task's skew lies in its
    offline preference data, not in the reward)

- ``module:function``: ``function(prompts=list[str], responses=list[str],
  token_ids=list[list[int]])`` returning one float per response (a sequence or tensor). The
  module is imported from the working directory or PYTHONPATH when the run starts, before the
  model loads (``load_function``: a missing module, a missing or non-callable attribute, or a
  signature that does not take those keywords is one line); an exception it raises then, or
  while scoring, is a ``UserError`` naming the function (and, while scoring, the prompt row);
- a local directory holding a ``transformers`` sequence-classification model with one label: the
  reward is its logit on ``prompt + response`` (rendered with the reward model's own chat template
  when it has one), scored in batches with its own tokenizer.

A NaN or infinite reward is a ``UserError`` naming the prompt and the sample (``check_finite``),
raised by the caller before any update; ``score`` calls a reward on a round's samples with both
checks.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from runio import UserError

RewardFn = Callable[[Sequence[str], Sequence[str], Sequence[Sequence[int]], Tensor], Tensor]

LENGTH_REWARDS: dict[str, tuple[tuple[str, ...], Callable[..., Tensor]]] = {
    "length_min": ((), lambda len_B: -len_B),
    "length_mode": (("m",), lambda len_B, m=20.0: -(len_B - m).abs()),
    "length_skew": ((), lambda len_B: -len_B),
}
"""name → (argument names, f(len_B, **args)); len_B float (B,)."""


def parse_args(spec: str, items: Sequence[str]) -> dict[str, float]:
    """``key=value`` reward arguments → floats; a ``UserError`` names a bad item."""
    out = {}
    allowed = LENGTH_REWARDS[spec][0] if spec in LENGTH_REWARDS else None
    for item in items:
        key, sep, raw = str(item).partition("=")
        if not sep:
            raise UserError(f"TrainConfig.reward_args: expected key=value, got {item!r}")
        if allowed is not None and key not in allowed:
            raise UserError(
                f"TrainConfig.reward_args: reward {spec!r} takes {list(allowed) or 'no arguments'}"
                f", got {key!r}"
            )
        try:
            out[key] = float(raw)
        except ValueError:
            msg = f"TrainConfig.reward_args: {key} must be a number, got {raw!r}"
            raise UserError(msg) from None
        if not math.isfinite(out[key]):
            raise UserError(f"TrainConfig.reward_args: {key} must be finite, got {raw!r}")
    return out


def check_reward_spec(spec: str, items: Sequence[str]) -> None:
    """Validate ``--reward`` and ``--reward-args`` without importing or loading anything."""
    if spec in LENGTH_REWARDS:
        parse_args(spec, items)
        return
    if Path(spec).expanduser().is_dir():
        if items:
            raise UserError("TrainConfig.reward_args: a reward model takes no arguments")
        return
    module, sep, name = spec.partition(":")
    if not (sep and module and name.isidentifier()):
        raise UserError(
            f"TrainConfig.reward: {spec!r} is not a built-in ({sorted(LENGTH_REWARDS)}), a "
            "module:function, or an existing reward model directory"
        )
    if items:
        raise UserError("TrainConfig.reward_args: a module:function reward takes no arguments")


def _as_rewards(values: object, n: int, spec: str) -> Tensor:
    try:
        out = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as e:
        msg = f"reward {spec}: returned {type(values).__name__}, not floats ({e})"
        raise UserError(msg) from None
    if out.numel() != n:
        raise UserError(f"reward {spec}: returned {out.numel()} values for {n} responses")
    return out


def _import(module_name: str, spec: str):
    """The reward's module, from sys.path or else the working directory (a console script's
    sys.path lacks it); any failure is one ``UserError`` line."""
    where = "the working directory or PYTHONPATH"
    try:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            top = module_name.split(".")[0]
            if e.name != top or os.getcwd() in sys.path or "" in sys.path:
                raise
            sys.path.append(os.getcwd())
            try:
                return importlib.import_module(module_name)
            finally:
                sys.path.remove(os.getcwd())
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            msg = f"TrainConfig.reward: {spec!r}: no module {e.name!r} importable from {where}"
            raise UserError(msg) from None
        msg = f"TrainConfig.reward: {spec!r}: importing {module_name!r} failed: {e}"
        raise UserError(msg) from None
    except Exception as e:  # the module's own code raised at import
        msg = f"TrainConfig.reward: {spec!r}: importing {module_name!r} raised {_what(e)}"
        raise UserError(msg) from None


def _what(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def specs_of(reward: str | Sequence[str]) -> tuple[str, ...]:
    """``--reward``'s specs: one string or several."""
    return (reward,) if isinstance(reward, str) else tuple(reward)


def is_trl_style(fn) -> bool:
    """Whether ``fn`` takes TRL's keywords: a ``completions`` parameter, or ``**kwargs`` and no
    ``responses`` parameter."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return "completions" in params or (var_kw and "responses" not in params)


REWARD_KEYWORDS = ("prompts", "responses", "token_ids")
"""The keyword arguments a ``module:function`` reward is called with."""


def load_function(spec: str) -> Callable:
    """The function of a ``module:function`` reward, checked before anything loads: the module
    imports, the attribute exists and is callable, and its signature takes ``REWARD_KEYWORDS``
    (as keywords). A ``UserError`` naming the reward otherwise."""
    module_name, _, name = spec.partition(":")
    module = _import(module_name, spec)
    try:
        fn = getattr(module, name)
    except AttributeError:
        msg = f"TrainConfig.reward: {spec!r}: module {module_name!r} has no attribute {name!r}"
        raise UserError(msg) from None
    if not callable(fn):
        msg = f"TrainConfig.reward: {spec!r} is not callable (its type is {type(fn).__name__})"
        raise UserError(msg)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: the first call tells
        return fn
    if is_trl_style(fn):  # TRL's f(prompts, completions, **kwargs): llm.reward_fns
        return fn
    try:
        sig.bind(**{k: [] for k in REWARD_KEYWORDS})
    except TypeError as e:
        raise UserError(
            f"TrainConfig.reward: {spec!r} is called as {name}(prompts=list[str], "
            f"responses=list[str], token_ids=list[list[int]]) but its signature is {name}{sig} "
            f"({e})"
        ) from None
    return fn


def _callable(spec: str) -> RewardFn:
    fn = load_function(spec)

    def reward(prompts, responses, token_ids, lengths_B):
        values = fn(prompts=list(prompts), responses=list(responses), token_ids=token_ids)
        return _as_rewards(values, len(responses), spec)

    reward.spec = spec
    return reward


def check_loadable(reward: str | Sequence[str]) -> None:
    """``--dry-run``'s check of ``module:function`` rewards (``load_function``); built-in and
    reward-model rewards are not loaded."""
    for spec in specs_of(reward):
        if spec not in LENGTH_REWARDS and not Path(spec).expanduser().is_dir():
            load_function(spec)


def reward_gap_bound(spec: str, items: Sequence[str], max_new_tokens: int) -> float | None:
    """The largest reward gap a built-in length reward can give between two responses of at
    most ``max_new_tokens`` tokens (None for other rewards: unknown before they run)."""
    if spec not in LENGTH_REWARDS:
        return None
    lengths = torch.arange(max_new_tokens + 1, dtype=torch.float32)
    r = LENGTH_REWARDS[spec][1](lengths, **parse_args(spec, items))
    return float(r.max() - r.min())


class RewardModel:
    """A sequence-classification model with one label, on CPU or the given device, no grad."""

    def __init__(self, path: str, batch_size: int, device: torch.device | str = "cpu"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=torch.float32
            )
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            msg = f"TrainConfig.reward: cannot load reward model {path} ({first})"
            raise UserError(msg) from None
        if self.model.config.num_labels != 1:
            raise UserError(
                f"TrainConfig.reward: {path} has {self.model.config.num_labels} labels; a reward "
                "model needs exactly one"
            )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()
        self.path, self.batch_size, self.device = path, batch_size, device
        self.spec = f"model {path}"

    def _texts(self, prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
        if getattr(self.tokenizer, "chat_template", None):
            return [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                    tokenize=False,
                )
                for p, r in zip(prompts, responses)
            ]
        return [p + r for p, r in zip(prompts, responses)]

    @torch.no_grad()
    def __call__(self, prompts, responses, token_ids, lengths_B) -> Tensor:
        texts, out = self._texts(prompts, responses), []
        self.tokenizer.padding_side = "right"
        for s in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[s : s + self.batch_size], return_tensors="pt", padding=True)
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            out.append(logits[:, 0].float().cpu())
        return torch.cat(out)


def build_reward(spec: str, items: Sequence[str], batch_size: int = 16, device="cpu") -> RewardFn:
    """The reward function ``f(prompts, responses, token_ids, lengths_B) -> rewards_B``."""
    check_reward_spec(spec, items)
    if spec in LENGTH_REWARDS:
        fn, args = LENGTH_REWARDS[spec][1], parse_args(spec, items)
        return lambda prompts, responses, token_ids, lengths_B: fn(lengths_B.float(), **args)
    if Path(spec).expanduser().is_dir():
        return RewardModel(str(Path(spec).expanduser()), batch_size, device)
    return _callable(spec)


def check_finite(rewards_PN: Tensor, prompt_idx: Sequence[int], prompts_file: str) -> None:
    """A ``UserError`` naming the first prompt (its row in the prompts file) and sample whose
    reward is NaN or infinite."""
    from rounds import first_nonfinite

    bad = first_nonfinite(rewards_PN)
    if bad is not None:
        p, n = bad
        raise UserError(
            f"reward {rewards_PN[p, n].item()} for sample {n} of prompt row {prompt_idx[p]} of "
            f"{prompts_file}: rewards must be finite (no update was made)"
        )


def score(
    reward_fn: Callable,
    prompt_texts: Sequence[str],
    texts: Sequence[str],
    token_ids: Sequence[Sequence[int]],
    lengths_B: Tensor,
    rows: Sequence[int],
    prompts_file: str,
    context: dict | None = None,
) -> Tensor:
    """The rewards (P, N) of P prompts' N samples each (``rows``: the prompts' rows in the
    prompts file), finite. Whatever the reward raises becomes one ``UserError`` line naming it
    (the function that raised, of several: ``llm.reward_fns``) and the prompt row whose samples
    make it raise (each prompt's samples are retried alone to find it; all rows when none raises
    alone). ``context``: per-sample keywords of TRL-style functions (``llm.collect``)."""
    p = len(rows)
    n = len(texts) // p

    def call(s: slice) -> Tensor:
        if context is None or not getattr(reward_fn, "takes_context", False):
            return reward_fn(prompt_texts[s], texts[s], token_ids[s], lengths_B[s])
        return reward_fn(prompt_texts[s], texts[s], token_ids[s], lengths_B[s],
                         context=_sliced(context, s))  # fmt: skip

    try:
        rewards = call(slice(None)).float().view(p, n)
    except UserError as e:  # a wrong number or type of values
        raise UserError(f"{e} (prompt rows {list(rows)} of {prompts_file})") from None
    except Exception as e:
        row, err = _failing_row(call, rows, n)
        where = f"prompt row {row}" if row is not None else f"prompt rows {list(rows)}"
        err = err or e
        name = getattr(err, "reward_spec", None) or getattr(reward_fn, "spec", None)
        raise UserError(
            f"reward {name or getattr(reward_fn, '__name__', 'reward')} raised {_what(err)} on "
            f"the samples of {where} of {prompts_file} (no update was made with them)"
        ) from None
    check_finite(rewards, rows, prompts_file)
    return rewards


def _sliced(context: dict, s: slice) -> dict:
    out = dict(context)
    for key in ("prompts", "completions"):
        if key in out:
            out[key] = out[key][s]
    out["columns"] = {k: v[s] for k, v in context.get("columns", {}).items()}
    return out


def _failing_row(call, rows, n):
    for k, row in enumerate(rows):
        try:
            call(slice(k * n, (k + 1) * n))
        except UserError:
            continue
        except Exception as e:
            return row, e
    return None, None
