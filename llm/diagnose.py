"""Before training: predict, per preference pair, what one gradient step of each objective does to
log π(y_w) and log π(y_l) on *this* model, and (``--verify``) take the step to check.

    python -m llm.diagnose                            # tiny GPT-2, shipped pairs, dpo asft sft
    python -m llm.diagnose --model DIR --gguf-file F.gguf --lora --n-pairs 48 --verify
    python -m llm.diagnose --summary-of runs/diagnose # re-print a table's summary

The data and model options are the training harness's (``llm.train``: same loader, chat template,
truncation, GGUF, LoRA flags; unpaired prompt/completion/label rows are matched into pairs as
``llm.train`` does, each response scored under its own prompt). Per pair, with ℓ = log π(y|x)
summed over the response tokens, |y| its token count, ℓ̄ = ℓ/|y| and P = exp(ℓ̄):

- **probability-space partials** ∂L/∂x_w, ∂L/∂x_l and the push-down ratio |∂L/∂x_l|/|∂L/∂x_w|
  of each objective at the model's own values (``objectives.gradients``), x = P for objectives
  on per-token means (registry ``uses_mean_logps(hparams)``: ASFT, ORPO, SimPO, and SFT/DPO/IPO
  with ``length_norm=mean``), x = π(y|x) = exp(ℓ) otherwise; the reference is the model itself
  (π = π_ref before the first step);
- **CHES** (Razin et al. 2024, *Unintentional unalignment: likelihood displacement in direct
  preference optimization*): with h(x, y_<k) the last hidden layer's output at the position that
  predicts token k (what the LM head reads), S⁺ = Σ_k h(x, y⁺_<k), S⁻ = Σ_k h(x, y⁻_<k),
  CHES = ⟨S⁺, S⁻⟩ − ‖S⁺‖²; the length-normalised form uses S⁺/|y⁺| and S⁻/|y⁻|;
- **gradient inner products** ⟨∇ℓ_w, ∇ℓ_l⟩, ‖∇ℓ_w‖², ‖∇ℓ_l‖² over ``--params`` (LoRA adapters,
  the last k blocks, or every weight): one forward and one backward per response, two per pair
  (the cost of one training step on the pair; ``seconds_grads_per_pair`` in config.json);
- **first-order prediction** of one SGD step θ ← θ − η∇_θL on the pair (paper A's Lemma 6.2
  expression): with a = ∂L/∂ℓ_w, b = ∂L/∂ℓ_l from ``objectives.closed_form`` (chain rule
  ∂L/∂ℓ = (∂L/∂ℓ̄)/|y| for objectives on means),
  Δℓ_w ≈ −η(a‖∇ℓ_w‖² + b⟨∇ℓ_w,∇ℓ_l⟩),  Δℓ_l ≈ −η(a⟨∇ℓ_w,∇ℓ_l⟩ + b‖∇ℓ_l‖²);
  Δℓ_w < 0 predicts likelihood displacement.

``--verify`` takes that step (a, b by autograd through the objective itself, on the same
parameters, from the same start; the weights are restored after every pair and objective) and
measures Δℓ_w, Δℓ_l (and after ``--verify-steps`` k steps); the summary reports sign accuracy,
Spearman rank correlations of predicted vs measured, and the AUC with which CHES ranks the pairs
that displace. ``--batch-step`` does the same for one step on the mean loss of all the diagnosed
pairs (a training batch), from the Gram matrix of the per-response gradients.

Refused with a one-line error: batch-coupled objectives (registry ``batch_coupled``: AOT), whose
one-pair step is not training's; hyperparameters that need inputs beyond the pair's four
log-probs (``required_inputs``: ORPO ``nll=all``, KTO ``z0=mismatched``); files without rejected
responses. KTO's batch reference point z0 is the pair's own (0 at the start, as in any batch).

Outputs in ``--out-dir``: ``pairs.csv`` (or ``.parquet``; one row per pair × objective),
``texts.jsonl`` (each pair's decoded prompt and responses), ``summary.json``, ``config.json``
(config, resolved hyperparameters, versions, timing) and, with ``--plot``, ``diagnose.png``, each
written atomically. User errors print one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

import objectives
from llm.logps import _logit_transform, backbone_and_head
from runio import (
    UserError,
    atomic_write,
    deferred_validation,
    exit_on_error,
    git_sha,
    validation_deferred,
    versions,
)

PAIR_KINDS = ("pairs", "chosen")
TABLE_NAMES = ("pairs.csv", "pairs.parquet")


@dataclass(frozen=True)
class DiagnoseConfig:
    """Predict (and with --verify measure) each objective's one-step effect on log π(y_w),
    log π(y_l) per preference pair, with CHES and gradient inner products."""

    model: str = "tiny-gpt2"
    """As for llm.train: tiny-gpt2 / tiny-llama, a local model directory, or a hub id."""
    gguf_file: str | None = None
    """A GGUF file inside the --model directory (dequantised once, cached under --cache-dir)."""
    data: str = "data/shakespeare_prefs/train.jsonl"
    """Preference pairs (llm.train's formats)."""
    data_split: str = "train"
    """Split of a ``datasets`` DatasetDict directory."""
    max_len: int = 256
    """Maximum prompt + response tokens (responses cut from the right), as in training."""
    max_prompt_len: int = 128
    """Rows whose prompt has more tokens are invalid."""
    chat_template: Literal["auto", "on", "off"] = "auto"
    """Render rows with the tokenizer's chat template (auto: when it has one)."""
    skip_invalid: bool = False
    """Skip invalid rows instead of stopping at the first."""
    cache_dir: str = "~/.cache/modeseek"
    """Where converted GGUF models are cached."""
    lora: bool = False
    """Add fresh LoRA adapters (B = 0: the model is unchanged) and take gradients in them."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_targets: tuple[str, ...] = ("all-linear",)
    """Modules to adapt (peft target_modules)."""
    seed: int = 0
    """Tiny models' init, and the choice of the --n-pairs subset."""
    objective: tuple[str, ...] = ("dpo", "asft", "sft")
    """Objectives to diagnose (pairwise or chosen-only registry names)."""
    hp: tuple[str, ...] = ()
    """Hyperparameters: key=value (every listed objective that has the key) or
    objective.key=value (e.g. dpo.beta=0.2); unset ones keep registry defaults."""
    params: Literal["auto", "lora", "last-k", "all"] = "auto"
    """Parameters the gradients (and the verified step) are taken in: LoRA adapters, the last
    --last-k transformer blocks, or every weight; auto = lora under --lora, else all."""
    last_k: int = 1
    """Blocks for --params last-k."""
    eta: float = 1e-4
    """SGD step size η of the predicted (and verified) step."""
    n_pairs: int = 0
    """Diagnose a random subset of this many valid pairs (seeded by --seed); 0: all."""
    verify: bool = False
    """Take the step per pair and objective and measure Δℓ_w, Δℓ_l."""
    verify_steps: int = 1
    """With --verify, also measure after this many SGD steps on the pair (1: one step only)."""
    batch_step: bool = False
    """Also predict (and with --verify take) one SGD step on the mean loss of all diagnosed pairs
    together, as a training batch: every pair's Δℓ then includes the other pairs' pushes
    (columns batch_*). Stores two flattened gradients per pair (see --batch-max-gib)."""
    batch_max_gib: float = 8.0
    """Memory allowed for --batch-step's stored gradients (pairs × 2 × parameters × 4 bytes in
    float32)."""
    top: int = 10
    """At-risk pairs printed in the summary."""
    risk_objective: str | None = None
    """Objective whose predicted Δℓ_w ranks the at-risk pairs; None: dpo if listed, else the
    first listed."""
    device: str = "auto"
    """cpu, cuda, ...; auto: cuda when available."""
    out_dir: str = "runs/diagnose"
    """Directory for pairs.csv, texts.jsonl, summary.json, config.json."""
    format: Literal["csv", "parquet"] = "csv"
    """Format of the per-pair table."""
    overwrite: bool = False
    """Replace an existing table in --out-dir (without it an existing one is refused)."""
    plot: bool = False
    """Also draw diagnose.png in --out-dir (analysis.fig15_displacement_diagnostics)."""
    summary_of: str | None = None
    """Print the summary of an existing --out-dir's table (no model is loaded)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if not validation_deferred():
            validate(self)

    def hparams(self) -> dict[str, dict]:
        """{objective: its hyperparameters} from --hp (registry defaults for the unset ones)."""
        return parse_hp(self.objective, self.hp)

    def param_set(self) -> str:
        if self.params == "auto":
            return "lora" if self.lora else "all"
        return self.params

    def risk(self) -> str:
        if self.risk_objective:
            return self.risk_objective
        return "dpo" if "dpo" in self.objective else self.objective[0]

    def load_objective(self) -> str:
        """The objective the data are loaded for (``llm.train``'s layout rules): the first listed
        pairwise one, since those need a rejected response (KTO also reads unpaired rows);
        ``run`` then checks the file's layout against every listed objective."""
        pairwise = [n for n in self.objective if objectives.get(n).data == "pairs"]
        return (pairwise or list(self.objective))[0]

    def train_config(self):
        """The training config with the same data and model options (validated by it)."""
        from llm.config import TrainConfig

        names = {f.name for f in dataclasses.fields(TrainConfig)}
        shared = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        shared.pop("objective", None)
        shared.pop("hp", None)
        return TrainConfig(
            **shared, objective=self.load_objective(), eval_data=None, gen_examples=0
        )


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise UserError(f"DiagnoseConfig.{name}: {message}")


def parse_hp(names: tuple[str, ...], items: tuple[str, ...]) -> dict[str, dict]:
    """--hp items → {objective: validated hyperparameters}."""
    out: dict[str, dict] = {n: {} for n in names}
    for item in items:
        key, sep, value = str(item).partition("=")
        _require(bool(sep), "hp", f"expected key=value or objective.key=value, got {item!r}")
        target, dot, bare = key.partition(".")
        if dot:
            _require(target in out, "hp", f"{item!r} names {target!r}, not a listed objective")
            out[target].update(objectives.get(target).parse_hparams([f"{bare}={value}"]))
            continue
        takers = [n for n in names if key.strip() in objectives.get(n).defaults]
        _require(bool(takers), "hp", f"no listed objective {list(names)} has {key!r}")
        for n in takers:
            out[n].update(objectives.get(n).parse_hparams([f"{key}={value}"]))
    return {n: {**objectives.get(n).defaults, **hp} for n, hp in out.items()}


def check_objective(name: str, hp: dict) -> None:
    """A ``UserError`` unless a one-pair step of ``name`` with ``hp`` is what training does on
    that pair: batch-coupled objectives (AOT: a pair's loss depends on the other pairs of its
    batch) and settings that need inputs beyond the pair's four log-probs (ORPO ``nll=all``,
    KTO ``z0=mismatched``) are refused."""
    obj = objectives.get(name)
    _require(
        not obj.batch_coupled,
        "objective",
        f"{name!r} is batch-coupled (a pair's loss and gradient depend on the other pairs of its "
        "batch), so a one-pair step does not predict training; diagnose a per-pair objective",
    )
    extra = sorted(set(obj.required_inputs(hp)) - set(objectives.registry.PAIR_INPUTS))
    setting = ", ".join(f"{k}={hp[k]}" for k in obj.hp_inputs if k in hp)
    _require(
        not extra,
        "hp",
        f"{name!r} with {setting} needs {extra}, which llm.diagnose does not compute; "
        "diagnose it with its default for that hyperparameter",
    )


def validate(c: DiagnoseConfig) -> None:
    """Raise a ``UserError`` naming the first invalid field."""
    if c.summary_of is not None:
        return
    _require(bool(c.objective), "objective", "list at least one objective")
    for name in c.objective:
        _require(
            name in objectives.OBJECTIVES,
            "objective",
            f"unknown {name!r}; choose from {sorted(objectives.OBJECTIVES)}",
        )
        ok = [k for k, o in sorted(objectives.OBJECTIVES.items()) if o.data in PAIR_KINDS]
        _require(
            objectives.get(name).data in PAIR_KINDS,
            "objective",
            f"{name!r} consumes scored groups, not pairs; choose from {ok}",
        )
    _require(len(set(c.objective)) == len(c.objective), "objective", "listed twice")
    for name, hp in c.hparams().items():
        check_objective(name, hp)
    _require(math.isfinite(c.eta) and c.eta > 0, "eta", f"must be positive, got {c.eta}")
    for name in ("last_k", "verify_steps"):
        _require(getattr(c, name) >= 1, name, f"must be at least 1, got {getattr(c, name)}")
    _require(c.batch_max_gib > 0, "batch_max_gib", f"must be positive, got {c.batch_max_gib}")
    for name in ("n_pairs", "top"):
        _require(getattr(c, name) >= 0, name, f"must be non-negative, got {getattr(c, name)}")
    _require(
        c.risk_objective is None or c.risk_objective in c.objective,
        "risk_objective",
        f"{c.risk_objective!r} is not among --objective {list(c.objective)}",
    )
    if c.lora:
        _require(
            c.params in ("auto", "lora"),
            "params",
            f"under --lora the trained weights are the adapters: use lora, not {c.params!r}",
        )
    else:
        _require(c.params != "lora", "params", "'lora' needs --lora")
    c.train_config()  # the shared model/data fields, checked by TrainConfig's rules


# ---- the model side -------------------------------------------------------------------------


def response_forward(model: nn.Module, prompt: list[int], response: list[int], device):
    """(ℓ with its graph, |y|, S = Σ_k h(x, y_<k) in float64) for one prompt + response.

    h(x, y_<k) is the backbone's final hidden state at the position that predicts response token
    k (the LM head's input), as in ``llm.logps``; a response token at position 0 has no such
    position and is not counted (as there)."""
    backbone, head = backbone_and_head(model)
    ids = torch.tensor([list(prompt) + list(response)], device=device)
    hidden_TH = backbone(input_ids=ids, attention_mask=torch.ones_like(ids))[0][0]
    start = max(1, len(prompt))
    pos = torch.arange(start - 1, ids.shape[1] - 1, device=device)
    h_KH = hidden_TH[pos]
    logits_KV = head(h_KH)
    if logits_KV.dtype in (torch.float16, torch.bfloat16):
        logits_KV = logits_KV.float()
    scale, cap = _logit_transform(getattr(model, "config", None))
    if scale != 1.0:
        logits_KV = logits_KV * scale
    if cap:
        logits_KV = torch.tanh(logits_KV / cap) * cap
    targets = ids[0, start:]
    tok_K = logits_KV.gather(-1, targets[:, None])[:, 0] - torch.logsumexp(logits_KV, -1)
    return tok_K.sum(), len(targets), h_KH.detach().double().sum(0)


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder's list of transformer blocks (the ModuleList as long as the layer count)."""
    backbone, _ = backbone_and_head(model)
    config = getattr(model, "config", None)
    n = None
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        n = n or getattr(config, name, None)
    for module in backbone.modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 0
            and (n is None or len(module) == n)
        ):
            return module
    raise UserError("--params last-k: cannot find the model's list of transformer blocks")


def select_params(model: nn.Module, kind: str, last_k: int = 1) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the chosen set; every other parameter is frozen."""
    if kind == "lora":
        chosen = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    elif kind == "last-k":
        blocks = transformer_blocks(model)
        _require(last_k <= len(blocks), "last_k", f"the model has {len(blocks)} blocks")
        keep = {id(p) for b in list(blocks)[-last_k:] for p in b.parameters()}
        chosen = [(n, p) for n, p in model.named_parameters() if id(p) in keep]
    else:
        chosen = list(model.named_parameters())
    ids = {id(p) for _, p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    if not chosen:
        raise UserError(f"--params {kind}: the model has no such parameters")
    return chosen


def _grads(value: Tensor, params: list[Tensor]) -> list[Tensor]:
    gs = torch.autograd.grad(value, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def ches(s_w: Tensor, s_l: Tensor, n_w: int | None = None, n_l: int | None = None) -> float:
    """⟨S⁺, S⁻⟩ − ‖S⁺‖² (Razin et al. 2024); with token counts, of S⁺/|y⁺| and S⁻/|y⁻|."""
    if n_w is not None:
        s_w, s_l = s_w / n_w, s_l / n_l
    return float(s_w @ s_l - s_w @ s_w)


def rejected_prompt(ex) -> tuple[int, ...]:
    """The prompt the rejected response is scored under: its own for unpaired rows matched into
    a pair (``Example.rejected_prompt_ids``, as ``llm.data.collate`` does), else the pair's."""
    return getattr(ex, "rejected_prompt_ids", None) or ex.prompt_ids


def pair_quantities(model, params: list[Tensor], ex, device) -> dict:
    """ℓ, |y|, ℓ̄, P of both responses of ``ex`` (an ``llm.data.Example``), CHES (both forms)
    and the gradient inner products; also returns the two gradients (lists over ``params``)
    under ``_g_w``/``_g_l``. Cost: one forward and one backward per response."""
    lw, nw, s_w = response_forward(model, ex.prompt_ids, ex.chosen_ids, device)
    g_w = _grads(lw, params)
    ll, nl, s_l = response_forward(model, rejected_prompt(ex), ex.rejected_ids, device)
    g_l = _grads(ll, params)
    lw, ll = lw.item(), ll.item()
    return {
        "len_w": nw,
        "len_l": nl,
        "logp_w": lw,
        "logp_l": ll,
        "logp_mean_w": lw / nw,
        "logp_mean_l": ll / nl,
        "P_w": math.exp(lw / nw),
        "P_l": math.exp(ll / nl),
        "ches": ches(s_w, s_l),
        "ches_norm": ches(s_w, s_l, nw, nl),
        "grad_ww": _dot(g_w, g_w),
        "grad_ll": _dot(g_l, g_l),
        "grad_wl": _dot(g_w, g_l),
        "_g_w": g_w,
        "_g_l": g_l,
    }


# ---- the objective side (pure; shared with the tests' one-token softmax) -------------------


def _convention(obj, hp: dict, logp, n: int):
    """ℓ̄ = ℓ/|y| when the objective, with these hyperparameters, takes per-token means
    (``uses_mean_logps``: ASFT/ORPO/SimPO, or ``length_norm=mean``), else ℓ."""
    return logp / n if obj.uses_mean_logps(hp) else logp


def objective_terms(name: str, hp: dict, q: dict, eta: float) -> dict:
    """Partials, probability-space partials, push-down ratio and the first-order Δℓ of one SGD
    step of size ``eta`` on one pair, from its quantities ``q`` (``pair_quantities``'s keys)."""
    obj = objectives.get(name)
    mean = obj.uses_mean_logps(hp)
    dt = torch.float64
    v_w = _convention(obj, hp, q["logp_w"], q["len_w"])
    v_l = _convention(obj, hp, q["logp_l"], q["len_l"])
    t_w, t_l = torch.tensor([v_w], dtype=dt), torch.tensor([v_l], dtype=dt)
    inputs = {"chosen_logps": t_w, "rejected_logps": t_l}
    if obj.needs_ref:  # the model is its own reference before the first step
        inputs |= {"ref_chosen_logps": t_w.clone(), "ref_rejected_logps": t_l.clone()}
    g = obj.partials(**{k: v for k, v in inputs.items() if k in obj.inputs}, **hp)
    g_w = float(g["chosen_logps"][0])
    g_l = float(g["rejected_logps"][0]) if "rejected_logps" in g else 0.0
    a = g_w / q["len_w"] if mean else g_w  # chain rule: ∂L/∂ℓ = (∂L/∂ℓ̄)/|y|
    b = g_l / q["len_l"] if mean else g_l
    x_w, x_l = t_w.exp(), t_l.exp()
    refs = (x_w, x_l) if obj.needs_ref else (None, None)
    with np.errstate(all="ignore"):
        d_xw, d_xl = objectives.prob_partials(name, x_w, x_l, *refs, **hp)
        ratio = objectives.pushdown_ratio(name, x_w, x_l, *refs, **hp)
    log10_ratio = (
        (math.log(abs(g_l)) - math.log(abs(g_w)) + v_w - v_l) / math.log(10)
        if g_l != 0 and g_w != 0
        else (-math.inf if g_l == 0 else math.inf)
    )
    pred_w = -eta * (a * q["grad_ww"] + b * q["grad_wl"])
    pred_l = -eta * (a * q["grad_wl"] + b * q["grad_ll"])
    return {
        "objective": name,
        "x_kind": "P" if mean else "pi",
        "x_w": float(x_w[0]),
        "x_l": float(x_l[0]),
        "dL_dlogp_w": a,
        "dL_dlogp_l": b,
        "dL_dx_w": _finite(d_xw),
        "dL_dx_l": _finite(d_xl),
        "pushdown": _finite(ratio),
        "log10_pushdown": log10_ratio,
        "eta": eta,
        "pred_dlogp_w": pred_w,
        "pred_dlogp_l": pred_l,
        "pred_displace": pred_w < 0,
    }


def _finite(t: Tensor) -> float:
    v = float(t.reshape(-1)[0])
    return v if math.isfinite(v) else math.nan


def objective_loss(name: str, hp: dict, lw: Tensor, ll: Tensor, nw: int, nl: int, q0: dict):
    """The objective's loss on one pair from live summed log-probs ``lw``, ``ll`` (graphs kept);
    the reference is frozen at the starting values ``q0``."""
    obj = objectives.get(name)
    one = lambda v: torch.as_tensor(v, dtype=torch.float64).reshape(1)  # noqa: E731
    live_w = _convention(obj, hp, lw, nw).reshape(1)
    live_l = _convention(obj, hp, ll, nl).reshape(1)
    inputs = {"chosen_logps": live_w, "rejected_logps": live_l}
    if obj.needs_ref:
        inputs["ref_chosen_logps"] = one(_convention(obj, hp, q0["logp_w"], nw)).to(live_w)
        inputs["ref_rejected_logps"] = one(_convention(obj, hp, q0["logp_l"], nl)).to(live_l)
    wanted = set(obj.inputs) | set(obj.optional_inputs)
    return obj(**{k: v for k, v in inputs.items() if k in wanted}, **hp).sum()


def loss_partials(name: str, hp: dict, q0: dict) -> tuple[float, float]:
    """(∂L/∂ℓ_w, ∂L/∂ℓ_l) at the start by autograd through the objective itself (on scalar
    leaves ℓ_w, ℓ_l, the mean convention's 1/|y| included): independent of the closed forms."""
    lw = torch.tensor(float(q0["logp_w"]), dtype=torch.float64, requires_grad=True)
    ll = torch.tensor(float(q0["logp_l"]), dtype=torch.float64, requires_grad=True)
    loss = objective_loss(name, hp, lw, ll, q0["len_w"], q0["len_l"], q0)
    a, b = torch.autograd.grad(loss, (lw, ll), allow_unused=True)
    return (0.0 if a is None else float(a)), (0.0 if b is None else float(b))


def verify_pair(
    model,
    params: list[Tensor],
    ex,
    name: str,
    hp: dict,
    eta: float,
    steps: int,
    q0: dict,
    device,
    grads: tuple[list[Tensor], list[Tensor]] | None = None,
) -> dict:
    """Take ``steps`` plain SGD steps θ ← θ − η∇_θL on the pair, measure Δℓ_w, Δℓ_l after the
    first and the last, then restore the weights exactly.

    ∇_θL comes from autograd through the objective. With ``grads`` = (∇ℓ_w, ∇ℓ_l) already
    taken at the start (``pair_quantities``), the first step uses ∇_θL = a∇ℓ_w + b∇ℓ_l with
    (a, b) = ``loss_partials`` (the chain rule, exact), which saves its two backward passes;
    later steps always run the full backward."""
    saved = [p.detach().clone() for p in params]
    out: dict[str, float] = {}
    needs_l = objectives.get(name).data == "pairs"
    first = 0
    try:
        if grads is not None:
            a, b = loss_partials(name, hp, q0)
            with torch.no_grad():
                for p, g_w, g_l in zip(params, *grads):
                    p.add_(g_w, alpha=-eta * a).add_(g_l, alpha=-eta * b)
            first = 1
        for s in range(first, steps + 1):
            train = s < steps
            with torch.set_grad_enabled(train):
                lw, nw, _ = response_forward(model, ex.prompt_ids, ex.chosen_ids, device)
            with torch.set_grad_enabled(train and needs_l):
                ll, nl, _ = response_forward(model, rejected_prompt(ex), ex.rejected_ids, device)
            if s == 1:
                out["meas_dlogp_w"] = lw.item() - q0["logp_w"]
                out["meas_dlogp_l"] = ll.item() - q0["logp_l"]
            if s == steps and steps > 1:
                out["meas_dlogp_w_k"] = lw.item() - q0["logp_w"]
                out["meas_dlogp_l_k"] = ll.item() - q0["logp_l"]
            if train:
                loss = objective_loss(name, hp, lw, ll, nw, nl, q0)
                step = _grads(loss, params)
                with torch.no_grad():
                    for p, g in zip(params, step):
                        p.add_(g.to(p.dtype), alpha=-eta)
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
    out["meas_displace"] = out["meas_dlogp_w"] < 0
    return out


def diagnose_pairs(
    model,
    params: list[Tensor],
    examples,
    names: tuple[str, ...],
    hparams: dict[str, dict],
    eta: float,
    *,
    verify: bool = False,
    verify_steps: int = 1,
    batch_step: bool = False,
    batch_max_gib: float = 8.0,
    device="cpu",
    progress: bool = False,
    extra: dict[int, dict] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The per pair × objective table for ``examples`` (``llm.data.Example``) and a timing /
    Lemma 6.2 record. ``extra`` adds per-pair columns (e.g. the data's own labels);
    ``batch_step`` adds the batch_* columns (``batch_terms``)."""
    from tqdm.auto import tqdm

    rows, t_grad, t_verify = [], 0.0, 0.0
    sum_w = sum_l = None
    n_params = sum(p.numel() for p in params)
    if batch_step:
        size = torch.promote_types(params[0].dtype, torch.float32).itemsize
        need = len(examples) * 2 * n_params * size / 2**30
        _require(
            need <= batch_max_gib,
            "batch_step",
            f"stores 2 gradients per pair: {len(examples)} pairs × {n_params:,} parameters need "
            f"{need:.1f} GiB (--batch-max-gib {batch_max_gib:g}); lower --n-pairs or use "
            "--params lora / last-k",
        )
    flat = []  # batch_step: each pair's (∇ℓ_w, ∇ℓ_l) flattened, on the CPU
    for ex in tqdm(examples, disable=not progress, desc="diagnose"):
        t0 = time.perf_counter()
        q = pair_quantities(model, params, ex, device)
        g_w, g_l = q.pop("_g_w"), q.pop("_g_l")
        if batch_step:
            flat += [_flatten(g_w), _flatten(g_l)]
        if sum_w is None:
            sum_w, sum_l = [g.clone() for g in g_w], [g.clone() for g in g_l]
        else:
            for s, g in zip(sum_w + sum_l, g_w + g_l):
                s.add_(g)
        q["grad_cos"] = q["grad_wl"] / math.sqrt(q["grad_ww"] * q["grad_ll"] or math.nan)
        t_grad += time.perf_counter() - t0
        base = {"pair": ex.idx, **(extra or {}).get(ex.idx, {}), **q}
        for name in names:
            row = {**base, **objective_terms(name, hparams[name], q, eta)}
            if verify:
                t0 = time.perf_counter()
                row |= verify_pair(
                    model, params, ex, name, hparams[name], eta, verify_steps, q, device,
                    grads=(g_w, g_l),
                )  # fmt: skip
                t_verify += time.perf_counter() - t0
            rows.append(row)
        del g_w, g_l
    n = max(len(examples), 1)
    df = pd.DataFrame(rows)
    info = {
        "seconds_grads_per_pair": t_grad / n,
        "seconds_verify_per_pair_objective": t_verify / (n * len(names)) if verify else None,
        "lemma_6_2": _lemma(sum_w, sum_l, n) if sum_w is not None else None,
    }
    if batch_step and examples:
        t0 = time.perf_counter()
        df = batch_terms(
            df, torch.stack(flat), model, params, examples, names, hparams, eta, verify, device
        )
        info["seconds_batch_step"] = time.perf_counter() - t0
    return df, info


def _flatten(grads: list[Tensor]) -> Tensor:
    """One CPU vector of the gradients, in the parameters' floating dtype (at least float32)."""
    dtype = torch.promote_types(grads[0].dtype, torch.float32)
    return torch.cat([g.detach().reshape(-1).to("cpu", dtype) for g in grads])


def gram(M: Tensor, chunk: int = 1 << 20) -> Tensor:
    """M Mᵀ in float64, accumulated over column chunks of products in M's dtype (rows × P)."""
    K = torch.zeros(M.shape[0], M.shape[0], dtype=torch.float64)
    for c in range(0, M.shape[1], chunk):
        block = M[:, c : c + chunk]
        K += (block @ block.T).double()
    return K


def batch_terms(
    df: pd.DataFrame,
    M: Tensor,
    model,
    params: list[Tensor],
    examples,
    names: tuple[str, ...],
    hparams: dict[str, dict],
    eta: float,
    verify: bool,
    device,
) -> pd.DataFrame:
    """One SGD step on the batch's mean loss, θ ← θ − η(1/n)Σ_j (a_j∇ℓ_w,j + b_j∇ℓ_l,j), per
    objective. ``M`` stacks (∇ℓ_w,i, ∇ℓ_l,i) of pair i as rows 2i, 2i+1. First order, from
    the Gram matrix K = M Mᵀ: Δℓ_w,i ≈ −(η/n) Σ_j (a_j⟨∇ℓ_w,i,∇ℓ_w,j⟩ + b_j⟨∇ℓ_w,i,∇ℓ_l,j⟩)
    (a_j, b_j: the closed forms, as per pair); with ``verify`` the step is taken (a_j, b_j by
    autograd through the loss, ``loss_partials``) and every pair's Δℓ measured, then undone."""
    n = len(examples)
    K = gram(M)
    out = []
    for name in names:
        g = df[df.objective == name]
        coef = torch.zeros(2 * n, dtype=torch.float64)
        coef[0::2] = torch.tensor(g.dL_dlogp_w.to_numpy(), dtype=torch.float64)
        coef[1::2] = torch.tensor(g.dL_dlogp_l.to_numpy(), dtype=torch.float64)
        pred = -eta / n * (K @ coef)
        cols = {"batch_pred_dlogp_w": pred[0::2].numpy(), "batch_pred_dlogp_l": pred[1::2].numpy()}
        if verify:
            q0s = g.to_dict("records")
            for i, q0 in enumerate(q0s):
                coef[2 * i], coef[2 * i + 1] = loss_partials(name, hparams[name], q0)
            step = (coef.to(M.dtype) @ M) * (-eta / n)
            w, l = _measure_after(model, params, step, examples, device)
            cols["batch_meas_dlogp_w"] = w - g.logp_w.to_numpy()
            cols["batch_meas_dlogp_l"] = l - g.logp_l.to_numpy()
        out.append(g.assign(**cols))
    return pd.concat(out).sort_index()


def _measure_after(model, params, step: Tensor, examples, device) -> tuple[np.ndarray, ...]:
    """(ℓ_w, ℓ_l) of every pair after θ ← θ + ``step`` (flattened over ``params``); the weights
    are restored exactly afterwards."""
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            offset = 0
            for p in params:
                p.add_(step[offset : offset + p.numel()].view_as(p).to(p))
                offset += p.numel()
            w = [response_forward(model, e.prompt_ids, e.chosen_ids, device)[0] for e in examples]
            l = [
                response_forward(model, rejected_prompt(e), e.rejected_ids, device)[0]
                for e in examples
            ]
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
    return np.array([float(x) for x in w]), np.array([float(x) for x in l])


def _lemma(sum_w, sum_l, n: int) -> dict:
    """Paper A's Lemma 6.2 quantity over the diagnosed pairs: E[∇ℓ_w]ᵀE[∇ℓ_l] (and norms)."""
    ww, ll, wl = _dot(sum_w, sum_w) / n**2, _dot(sum_l, sum_l) / n**2, _dot(sum_w, sum_l) / n**2
    return {
        "mean_grad_wl": wl,
        "mean_grad_ww": ww,
        "mean_grad_ll": ll,
        "mean_grad_cos": wl / math.sqrt(ww * ll) if ww * ll > 0 else math.nan,
    }


# ---- summary --------------------------------------------------------------------------------


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's ρ: Pearson's correlation of average ranks (no scipy needed)."""
    ok = x.notna() & y.notna()
    if ok.sum() < 3:
        return math.nan
    return float(x[ok].rank().corr(y[ok].rank()))


def auc(score: pd.Series, label: pd.Series) -> float:
    """P(score of a positive > score of a negative), ties counting ½ (Mann–Whitney U)."""
    ok = score.notna() & label.notna()
    score, label = score[ok], label[ok].astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = score.rank()
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def summarize(df: pd.DataFrame, risk: str | None = None, top: int = 10, texts=None) -> dict:
    """Per objective: predicted (and measured) displacement shares, sign accuracy, Spearman,
    CHES AUCs; per data group if the table has a ``group`` column; the at-risk pairs."""
    out: dict = {"pairs": int(df.pair.nunique()), "objectives": {}}
    measured = "meas_dlogp_w" in df
    for name, g in df.groupby("objective", sort=False):
        r: dict = {
            "pred_displace_share": float((g.pred_dlogp_w < 0).mean()),
            "pred_rejected_down_share": float((g.pred_dlogp_l < 0).mean()),
            "median_pushdown": float(g.pushdown.median()),
            "median_log10_pushdown": float(g.log10_pushdown.median()),
            "auc_ches_pred": auc(g.ches, g.pred_dlogp_w < 0),
            "auc_ches_norm_pred": auc(g.ches_norm, g.pred_dlogp_w < 0),
            "spearman_ches_pred_w": spearman(g.ches, g.pred_dlogp_w),
        }
        if measured:
            label = g.meas_dlogp_w < 0
            rel = ((g.pred_dlogp_w - g.meas_dlogp_w).abs() / g.meas_dlogp_w.abs()).median()
            r |= {
                "meas_displace_share": float(label.mean()),
                "meas_rejected_down_share": float((g.meas_dlogp_l < 0).mean()),
                "sign_acc_w": float((np.sign(g.pred_dlogp_w) == np.sign(g.meas_dlogp_w)).mean()),
                "sign_acc_l": float((np.sign(g.pred_dlogp_l) == np.sign(g.meas_dlogp_l)).mean()),
                "spearman_w": spearman(g.pred_dlogp_w, g.meas_dlogp_w),
                "spearman_l": spearman(g.pred_dlogp_l, g.meas_dlogp_l),
                "median_rel_err_w": float(rel),
                "auc_ches_meas": auc(g.ches, label),
                "auc_ches_norm_meas": auc(g.ches_norm, label),
                "auc_pred_meas": auc(-g.pred_dlogp_w, label),
                "spearman_ches_w": spearman(g.ches, g.meas_dlogp_w),
                "spearman_ches_norm_w": spearman(g.ches_norm, g.meas_dlogp_w),
            }
            if "meas_dlogp_w_k" in g:
                r["meas_displace_share_k"] = float((g.meas_dlogp_w_k < 0).mean())
                r["spearman_w_k"] = spearman(g.pred_dlogp_w, g.meas_dlogp_w_k)
        if "batch_pred_dlogp_w" in g:
            r |= _batch_summary(g)
        out["objectives"][name] = r
    if "group" in df:
        col = "meas_dlogp_w" if measured else "pred_dlogp_w"
        out["displace_share_by_group"] = _shares_by_group(df, col)
        if "batch_pred_dlogp_w" in df:
            col = "batch_meas_dlogp_w" if "batch_meas_dlogp_w" in df else "batch_pred_dlogp_w"
            out["batch_displace_share_by_group"] = _shares_by_group(df, col)
        out["ches_by_group"] = {
            str(k): float(v)
            for k, v in df.drop_duplicates("pair").groupby("group").ches.median().items()
        }
    risk = risk if risk in set(df.objective) else df.objective.iloc[0]
    g = df[df.objective == risk]
    # a batch step is the training-time regime (displacement shows there first): rank by it
    # when --batch-step ran, else by the one-pair prediction
    rank_by = "batch_pred_dlogp_w" if "batch_pred_dlogp_w" in g else "pred_dlogp_w"
    g = g.sort_values(rank_by).head(top)
    texts = texts or {}
    cols = ["pair", *(["row"] if "row" in g else []), "pred_dlogp_w", "pred_dlogp_l", "ches"]
    cols += ["ches_norm", "grad_cos"]
    cols += ["meas_dlogp_w"] if measured else []
    cols += [c for c in ("batch_pred_dlogp_w", "batch_meas_dlogp_w", "group") if c in g]
    out["at_risk_objective"] = risk
    out["at_risk_ranked_by"] = rank_by
    out["at_risk"] = [
        {**{c: _plain(r[c]) for c in cols}, **texts.get(int(r["pair"]), {})}
        for _, r in g.iterrows()
    ]
    return out


def _shares_by_group(df: pd.DataFrame, col: str) -> dict[str, float]:
    """{"objective/group": share of the group's pairs with ``col`` < 0}."""
    shares = df.assign(d=df[col] < 0).groupby(["objective", "group"], sort=False).d.mean()
    return {f"{o}/{grp}": float(v) for (o, grp), v in shares.items()}


def _batch_summary(g: pd.DataFrame) -> dict:
    """--batch-step's statistics of one objective's rows (keys prefixed ``batch_``)."""
    pred_w, pred_l = g.batch_pred_dlogp_w, g.batch_pred_dlogp_l
    r = {
        "batch_pred_displace_share": float((pred_w < 0).mean()),
        "batch_pred_rejected_down_share": float((pred_l < 0).mean()),
        "batch_pred_mean_dlogp_w": float(pred_w.mean()),
        "batch_auc_ches_pred": auc(g.ches, pred_w < 0),
        "batch_spearman_ches_pred_w": spearman(g.ches, pred_w),
    }
    if "batch_meas_dlogp_w" not in g:
        return r
    meas_w, meas_l = g.batch_meas_dlogp_w, g.batch_meas_dlogp_l
    label = meas_w < 0
    return r | {
        "batch_meas_displace_share": float(label.mean()),
        "batch_meas_rejected_down_share": float((meas_l < 0).mean()),
        "batch_meas_mean_dlogp_w": float(meas_w.mean()),
        "batch_sign_acc_w": float((np.sign(pred_w) == np.sign(meas_w)).mean()),
        "batch_sign_acc_l": float((np.sign(pred_l) == np.sign(meas_l)).mean()),
        "batch_spearman_w": spearman(pred_w, meas_w),
        "batch_spearman_l": spearman(pred_l, meas_l),
        "batch_auc_ches_meas": auc(g.ches, label),
        "batch_auc_ches_norm_meas": auc(g.ches_norm, label),
        "batch_auc_pred_meas": auc(-pred_w, label),
        "batch_spearman_ches_w": spearman(g.ches, meas_w),
        "batch_spearman_ches_norm_w": spearman(g.ches_norm, meas_w),
    }


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _num(v) -> float:
    """A summary value for printing (None, JSON's NaN, as NaN)."""
    return math.nan if v is None else float(v)


SUMMARY_COLUMNS = {
    "one step on each pair alone": [
        ("pred_displace_share", "pred Δℓ_w<0"),
        ("meas_displace_share", "meas Δℓ_w<0"),
        ("meas_displace_share_k", "k steps Δℓ_w<0"),
        ("pred_rejected_down_share", "pred Δℓ_l<0"),
        ("meas_rejected_down_share", "meas Δℓ_l<0"),
        ("sign_acc_w", "sign acc w"),
        ("sign_acc_l", "sign acc l"),
        ("spearman_w", "Spearman w"),
        ("spearman_l", "Spearman l"),
        ("auc_ches_meas", "AUC CHES"),
        ("auc_ches_norm_meas", "AUC CHES/|y|"),
        ("auc_ches_pred", "AUC CHES (pred)"),
        ("spearman_ches_pred_w", "ρ(CHES,pred w)"),
        ("spearman_ches_w", "ρ(CHES,meas w)"),
        ("median_pushdown", "push-down"),
    ],
    "one step on the batch of all pairs": [
        ("batch_pred_displace_share", "pred Δℓ_w<0"),
        ("batch_meas_displace_share", "meas Δℓ_w<0"),
        ("batch_pred_rejected_down_share", "pred Δℓ_l<0"),
        ("batch_meas_rejected_down_share", "meas Δℓ_l<0"),
        ("batch_sign_acc_w", "sign acc w"),
        ("batch_sign_acc_l", "sign acc l"),
        ("batch_spearman_w", "Spearman w"),
        ("batch_spearman_l", "Spearman l"),
        ("batch_auc_ches_meas", "AUC CHES"),
        ("batch_auc_ches_norm_meas", "AUC CHES/|y|"),
        ("batch_auc_ches_pred", "AUC CHES (pred)"),
        ("batch_spearman_ches_pred_w", "ρ(CHES,pred w)"),
        ("batch_spearman_ches_w", "ρ(CHES,meas w)"),
    ],
}
"""The summary's printed tables: (key, label) per column, shown when some objective has it."""


def format_summary(s: dict, width: int = 100) -> str:
    lines = [f"pairs: {s['pairs']}"]
    for title, keys in SUMMARY_COLUMNS.items():
        present = [(k, lab) for k, lab in keys if any(k in r for r in s["objectives"].values())]
        if not present:
            continue
        widths = [max(len(lab), 7) for _, lab in present]
        lines.append(f"{title}:")
        head = " ".join(f"{lab:>{w}}" for (_, lab), w in zip(present, widths))
        lines.append(f"{'objective':<9} {head}")
        for name, r in s["objectives"].items():
            cells = [f"{_num(r.get(k)):>{w}.3g}" for (k, _), w in zip(present, widths)]
            lines.append(f"{name:<9} " + " ".join(cells))
    for key, what in (("displace_share_by_group", "one pair"), ("batch_displace_share_by_group",
                                                                 "batch")):  # fmt: skip
        if key in s:
            groups = ", ".join(f"{k} {v:.2f}" for k, v in s[key].items())
            lines.append(f"share with Δℓ_w < 0 by group ({what}): {groups}")
    how = (
        "one step on the batch"
        if s.get("at_risk_ranked_by", "").startswith("batch")
        else "one step"
    )
    lines.append(
        f"most at risk under {s['at_risk_objective']} (lowest predicted Δℓ_w after {how}):"
    )
    for r in s["at_risk"]:
        row = f" (row {r['row']})" if "row" in r else ""
        head = f"  pair {r['pair']}{row}: pred Δℓ_w {r['pred_dlogp_w']:.3g}, CHES {r['ches']:.3g}"
        if "meas_dlogp_w" in r:
            head += f", measured {r['meas_dlogp_w']:.3g}"
        if "batch_pred_dlogp_w" in r:
            head += f"; in the batch: pred {r['batch_pred_dlogp_w']:.3g}"
        if "batch_meas_dlogp_w" in r:
            head += f", measured {r['batch_meas_dlogp_w']:.3g}"
        if "group" in r:
            head += f" [{r['group']}]"
        lines.append(head)
        for key in ("prompt", "chosen", "rejected_prompt", "rejected"):
            if key in r:
                text, room = " ".join(str(r[key]).split()), width - 6 - len(key)
                if len(text) > room:  # a prompt's end is nearest the response
                    text = "…" + text[-room + 1 :] if "prompt" in key else text[: room - 1] + "…"
                lines.append(f"    {key}: {text}")
    return "\n".join(lines)


# ---- the command ----------------------------------------------------------------------------


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _subset(examples: list, n: int, seed: int) -> list:
    if not n or n >= len(examples):
        return examples
    gen = torch.Generator().manual_seed(seed)
    keep = sorted(torch.randperm(len(examples), generator=gen)[:n].tolist())
    return [examples[i] for i in keep]


def check_layout(cfg: DiagnoseConfig, report: dict) -> None:
    """The loaded file's layout against every listed objective (``llm.data.check_layout``'s
    errors), and pairs required: a layout without rejected responses is refused."""
    from llm.data import LAYOUT_NAMES
    from llm.data import check_layout as data_check_layout

    layout = report["layout"]
    for name in cfg.objective:
        data_check_layout(layout, name, cfg.data)
    if layout not in ("preference", "implicit", "unpaired"):
        raise UserError(
            f"{cfg.data}: {LAYOUT_NAMES.get(layout, layout)} rows have no rejected response; "
            "llm.diagnose compares chosen and rejected responses, so it needs preference pairs "
            "(prompt/chosen/rejected, chosen/rejected, or prompt/completion/label for kto)"
        )


def _row_labels(cfg: DiagnoseConfig, report: dict) -> dict[int, dict]:
    """Per pair: ``row``, its row in the data file, and ``group``, the row's own string label
    (e.g. the shipped ``corruption``), when pair i is row i: no row skipped, rows not unpaired
    (an unpaired pair is two rows, see ``llm.data.match_unpaired``)."""
    from llm.data import read_rows

    if report["kept"] != report["rows"] or report["layout"] == "unpaired":
        return {}
    rows = read_rows(cfg.data, cfg.data_split)
    keys = [k for k in ("corruption", "group", "source", "category") if k in rows[0]]
    out: dict[int, dict] = {i: {"row": i} for i in range(len(rows))}
    if keys:
        for i, r in enumerate(rows):
            if isinstance(r, dict) and isinstance(r.get(keys[0]), str):
                out[i]["group"] = r[keys[0]]
    return out


def _texts(tokenizer, examples) -> dict[int, dict]:
    """Each pair's decoded prompt and responses (``rejected_prompt`` too when it has its own)."""
    dec = lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True)  # noqa: E731
    out = {}
    for e in examples:
        out[e.idx] = {
            "prompt": dec(e.prompt_ids),
            "chosen": dec(e.chosen_ids),
            "rejected": dec(e.rejected_ids),
        }
        if rejected_prompt(e) != tuple(e.prompt_ids):
            out[e.idx]["rejected_prompt"] = dec(rejected_prompt(e))
    return out


def read_table(out_dir: Path) -> pd.DataFrame:
    for name in TABLE_NAMES:
        if (out_dir / name).exists():
            path = out_dir / name
            return pd.read_parquet(path) if name.endswith("parquet") else pd.read_csv(path)
    raise UserError(f"{out_dir}: no pairs.csv or pairs.parquet (run llm.diagnose first)")


def read_texts(out_dir: Path) -> dict[int, dict]:
    path = out_dir / "texts.jsonl"
    if not path.exists():
        return {}
    recs = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return {int(r.pop("pair")): r for r in recs}


def run(cfg: DiagnoseConfig) -> dict:
    """Diagnose as configured; writes the outputs and returns the summary (with ``out_dir``)."""
    out_dir = Path(cfg.out_dir).expanduser()
    if cfg.summary_of is not None:
        src = Path(cfg.summary_of).expanduser()
        meta = (
            json.loads((src / "summary.json").read_text())
            if (src / "summary.json").exists()
            else {}
        )
        summary = summarize(
            read_table(src), meta.get("at_risk_objective"), cfg.top, read_texts(src)
        )
        print(format_summary(summary))
        return summary
    existing = [n for n in TABLE_NAMES if (out_dir / n).exists()]
    if existing and not cfg.overwrite:
        raise UserError(f"{out_dir / existing[0]} exists; pass --overwrite or another --out-dir")
    from llm import models
    from llm.train import load_data

    t_start = time.perf_counter()
    tcfg = cfg.train_config()
    tokenizer, splits, reports = load_data(tcfg)
    check_layout(cfg, reports["train"])
    if u := reports["train"].get("unpaired"):
        print(
            f"[diagnose] unpaired rows: {u['desirable']} desirable and {u['undesirable']} "
            f"undesirable matched into {u['pairs']} pairs as llm.train does (each response "
            "scored under its own prompt)",
            file=sys.stderr,
        )
    examples = _subset(splits["train"], cfg.n_pairs, cfg.seed)
    device = _device(cfg.device)
    model = models.load_model(
        cfg.model, tokenizer, seed=cfg.seed, gguf_file=cfg.gguf_file, cache_dir=cfg.cache_dir
    )
    models.disable_dropout(model)
    if cfg.lora:
        model = models.add_lora(
            model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets
        )
    model = model.to(device).eval()
    named = select_params(model, cfg.param_set(), cfg.last_k)
    params = [p for _, p in named]
    t_load = time.perf_counter() - t_start
    hparams = cfg.hparams()
    df, info = diagnose_pairs(
        model, params, examples, cfg.objective, hparams, cfg.eta,
        verify=cfg.verify, verify_steps=cfg.verify_steps, batch_step=cfg.batch_step,
        batch_max_gib=cfg.batch_max_gib, device=device,
        progress=cfg.progress, extra=_row_labels(cfg, reports["train"]),
    )  # fmt: skip
    texts = _texts(tokenizer, examples)
    summary = summarize(df, cfg.risk(), cfg.top, texts)
    seconds = time.perf_counter() - t_start
    meta = {
        "config": dataclasses.asdict(cfg),
        "resolved_hparams": hparams,
        "param_set": cfg.param_set(),
        "n_params": int(sum(p.numel() for p in params)),
        "param_tensors": len(params),
        "pairs": len(examples),
        "data": reports["train"],
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seconds_total": seconds,
        "seconds_load": t_load,
        **{k: v for k, v in info.items() if k != "lemma_6_2"},
        "versions": versions("transformers", "peft", "tokenizers"),
        "git_sha": git_sha(),
    }
    summary |= {"lemma_6_2": info["lemma_6_2"], "timing": {
        k: meta[k] for k in ("seconds_total", "seconds_load", "seconds_grads_per_pair",
                             "seconds_verify_per_pair_objective", "seconds_batch_step",
                             "n_params", "device") if k in meta
    }}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / f"pairs.{cfg.format}"
    if cfg.format == "csv":
        atomic_write(table, lambda p: df.to_csv(p, index=False, float_format="%.9g"))
    else:
        atomic_write(table, lambda p: df.to_parquet(p, index=False))
    for stale in existing:
        if out_dir / stale != table:
            (out_dir / stale).unlink()
    lines = "".join(json.dumps({"pair": k, **v}) + "\n" for k, v in texts.items())
    atomic_write(out_dir / "texts.jsonl", lambda p: p.write_text(lines, encoding="utf-8"))
    for name, obj in (("summary.json", summary), ("config.json", meta)):
        text = json.dumps(_no_nan(obj), indent=1, default=_json_default) + "\n"
        atomic_write(out_dir / name, lambda p, t=text: p.write_text(t, encoding="utf-8"))
    if cfg.plot:
        from analysis.fig15_displacement_diagnostics import draw

        draw(df, out_dir / "diagnose.png")
    print(format_summary(summary))
    print(
        f"[diagnose] {len(examples)} pairs × {len(cfg.objective)} objectives, "
        f"{meta['n_params']:,} parameters ({cfg.param_set()}): {seconds:.1f} s "
        f"({info['seconds_grads_per_pair']:.2f} s/pair for the gradients"
        + (
            f", {info['seconds_verify_per_pair_objective']:.2f} s per pair and objective verified"
            if cfg.verify
            else ""
        )
        + f") → {table}",
        file=sys.stderr,
    )
    return {**summary, "out_dir": str(out_dir)}


def _no_nan(v):
    """NaN → None (JSON null), recursively: undefined statistics (e.g. an AUC with one class)."""
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nan(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _json_default(v):
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v).__name__)


def cli(argv: list[str]) -> dict:
    import tyro

    with deferred_validation():
        cfg = tyro.cli(DiagnoseConfig, args=argv, description=__doc__)
    validate(cfg)
    return run(cfg)


def main(argv: list[str] | None = None) -> None:
    """The command line: user errors print one line and exit 2 (``--debug``: traceback)."""
    exit_on_error(cli, argv)


if __name__ == "__main__":
    main()
