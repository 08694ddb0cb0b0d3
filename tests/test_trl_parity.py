"""Parity with the installed TRL's own loss code, for every loss the registry shares with it.

TRL 1.16 computes its DPO and KTO losses inline in ``DPOTrainer._compute_loss`` and
``KTOTrainer._compute_loss``, not in standalone functions, so the tests call those methods on a
trainer made with ``object.__new__`` (no ``__init__``: no model loading, no dataset) with the
attributes the methods read, and a stand-in model whose forward returns per-token log-probs
built from chosen sequence log-probs (each response's ℓ spread evenly over its tokens). The
reference log-probs are passed as precomputed (``precompute_ref_logps``), as TRL allows. TRL's
returned batch loss (the mean over the batch) and its gradient with respect to each sequence's
ℓ are compared with the mean of our per-example loss and our closed-form partials / B.

ORPO and SimPO (via CPO) live in ``trl.experimental``, whose loss methods are standalone
(``odds_ratio_loss``, ``cpo_loss``); ORPO with TRL's NLL over all tokens is also compared end
to end: TRL's ``ORPOTrainer.get_batch_loss_metrics`` on a tiny random model against
``llm.step.batch_loss`` with ``nll="all"``.

Where TRL's convention differs from our default, the test sets our switch to TRL's:
``length_norm="mean"`` (TRL's ``ipo``, ``sigmoid_norm`` and ``sft``), ``form="unpaired"`` and
``z0="mismatched"`` (KTO), ``nll="all"`` (ORPO); the last tests check that ``llm.train``
parses TRL's own flags (``--loss_type ipo --beta 0.3``, ``--loss_type kto``, ...) into exactly
those settings. Documented differences that remain: TRL's
``sft`` and ORPO NLL average over all tokens of the batch, ours per example (equal here by
using equal lengths); TRL's ``exo_pair`` builds ε as a float32 tensor (agreement to ~1e-7
relative in float64) and ORPO's ``odds_ratio_loss`` casts to float32 (compared in float32).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import objectives

pytestmark = pytest.mark.slow
trl = pytest.importorskip("trl")

B = 6


class _Accelerator:
    """The single-process accelerator methods the loss code calls."""

    device = torch.device("cpu")

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x


def _metrics_state(trainer) -> None:
    trainer.accelerator = _Accelerator()
    trainer.aux_loss_enabled = False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1


def _outputs(per_token):
    zeros = torch.zeros_like(per_token.detach())
    return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros > 0)


def _completion_mask(lengths):
    """(R, T) mask with a one-token prompt at position 0 and the completion at 1..n."""
    pos = torch.arange(int(lengths.max()) + 1)
    return ((pos >= 1) & (pos <= lengths[:, None])).long()


def _spread(seq_logps, lengths, mask):
    """Per-token log-probs (R, T-1) summing to ``seq_logps`` over the shifted completion mask."""
    return seq_logps[:, None] / lengths[:, None].to(seq_logps.dtype) * mask[:, 1:]


def trl_dpo(loss_type, c, r, rc, rr, n_c, n_r, *, beta=0.1, label_smoothing=0.0, tau=0.05):
    """(batch loss, ∂/∂ℓ_w, ∂/∂ℓ_l) from ``DPOTrainer._compute_loss`` for summed log-probs."""
    from trl import DPOTrainer

    seq = torch.cat([c, r]).detach().clone().requires_grad_(True)
    lengths = torch.cat([n_c, n_r])
    mask = _completion_mask(lengths)
    out = _outputs(_spread(seq, lengths, mask))

    def model(**_):
        return out

    model.training = True
    t = object.__new__(DPOTrainer)
    _metrics_state(t)
    t.model = model
    t.ld_alpha = None
    t.precompute_ref_logps = True
    t.f_divergence_type = "reverse_kl"
    t.loss_types, t.loss_weights = [loss_type], [1.0]
    t.beta, t.label_smoothing, t.use_weighting = beta, label_smoothing, False
    t.args = SimpleNamespace(discopop_tau=tau)
    rows = mask.shape[0]
    inputs = {
        "input_ids": torch.zeros_like(mask),
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    loss = t._compute_loss(model, inputs, return_outputs=False)
    (g,) = torch.autograd.grad(loss, seq)
    return loss, g[: rows // 2], g[rows // 2 :]


def ours(name, c, r, rc, rr, n_c, n_r, **hp):
    """(batch mean loss, ∂/∂ℓ_w, ∂/∂ℓ_l) of our objective, given summed log-probs: divided by
    the lengths where the objective uses means (and the partials mapped back to sums)."""
    obj = objectives.OBJECTIVES[name]
    mean = obj.uses_mean_logps(hp)
    n_c, n_r = n_c.to(c.dtype), n_r.to(c.dtype)
    kw = {
        "chosen_logps": c / n_c if mean else c,
        "rejected_logps": r / n_r if mean else r,
        "ref_chosen_logps": rc / n_c if mean else rc,
        "ref_rejected_logps": rr / n_r if mean else rr,
    }
    kw = {k: v for k, v in kw.items() if k in obj.inputs}
    loss = obj(**kw, **hp).mean()
    g = obj.partials(**kw, **hp)
    g_w, g_l = g["chosen_logps"] / len(c), g.get("rejected_logps", torch.zeros_like(r)) / len(c)
    if mean:
        g_w, g_l = g_w / n_c, g_l / n_r
    return loss, g_w, g_l


def _inputs(seed, dtype=torch.float64, equal_chosen_lengths=False):
    g = torch.Generator().manual_seed(seed)
    c, r, rc, rr = (-1 - 25 * torch.rand(B, generator=g, dtype=dtype) for _ in range(4))
    n_c = torch.randint(1, 12, (B,), generator=g)
    n_r = torch.randint(1, 12, (B,), generator=g)
    if equal_chosen_lengths:
        n_c = torch.full((B,), 7)
    return c, r, rc, rr, n_c, n_r


# TRL loss_type -> (our name, our hyperparameters, TRL's keyword values)
DPO_CASES = {
    "sigmoid": ("dpo", {"beta": 0.3}, {"beta": 0.3}),
    "sigmoid_norm": ("dpo", {"beta": 0.3, "length_norm": "mean"}, {"beta": 0.3}),
    "ipo": ("ipo", {"tau": 0.3, "length_norm": "mean"}, {"beta": 0.3}),
    "hinge": ("hinge", {"beta": 0.05}, {"beta": 0.05}),
    "exo_pair": ("exo_pair", {"beta": 0.2, "eps": 1e-3}, {"beta": 0.2, "label_smoothing": 1e-3}),
    "nca_pair": ("nca_pair", {"beta": 0.2}, {"beta": 0.2}),
    "robust": ("robust", {"beta": 0.2, "eps": 0.1}, {"beta": 0.2, "label_smoothing": 0.1}),
    "bco_pair": ("bco_pair", {"beta": 0.2}, {"beta": 0.2}),
    "sppo_hard": ("sppo_hard", {"beta": 0.2}, {"beta": 0.2}),
    "aot": ("aot", {"beta": 0.2, "eps": 0.1}, {"beta": 0.2, "label_smoothing": 0.1}),
    "aot_unpaired": ("aot_unpaired", {"beta": 0.2}, {"beta": 0.2}),
    "apo_zero": ("apo_zero", {"beta": 0.2}, {"beta": 0.2}),
    "apo_down": ("apo_down", {"beta": 0.2}, {"beta": 0.2}),
    "discopop": ("discopop", {"beta": 0.1}, {"beta": 0.1}),
    "sft": ("sft", {"length_norm": "mean"}, {}),
}


def test_every_trl_dpo_loss_type_is_covered():
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    listed = set(re.findall(r"`'([a-z_]+)'`", help_text))
    assert listed == set(DPO_CASES), listed ^ set(DPO_CASES)


@pytest.mark.parametrize("loss_type", sorted(DPO_CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_dpo_trainer_loss_types_match(loss_type, seed):
    name, hp, trl_kw = DPO_CASES[loss_type]
    args = _inputs(seed, equal_chosen_lengths=loss_type == "sft")
    loss_trl, gw_trl, gl_trl = trl_dpo(loss_type, *args, **trl_kw)
    loss, gw, gl = ours(name, *args, **hp)
    tol = dict(rtol=1e-6, atol=1e-9) if loss_type == "exo_pair" else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, loss_trl.detach(), **tol)
    torch.testing.assert_close(gw, gw_trl, **tol)
    torch.testing.assert_close(gl, gl_trl, **tol)


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_discopop_tau_matches(tau):
    args = _inputs(3)
    loss_trl, gw_trl, _ = trl_dpo("discopop", *args, beta=0.3, tau=tau)
    loss, gw, _ = ours("discopop", *args, beta=0.3, tau=tau)
    torch.testing.assert_close(loss, loss_trl.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, gw_trl, rtol=1e-12, atol=1e-12)


def test_float32_inputs_match_to_rounding():
    for loss_type in ("sigmoid", "ipo", "exo_pair", "aot", "discopop"):
        name, hp, trl_kw = DPO_CASES[loss_type]
        args = _inputs(4, dtype=torch.float32)
        loss_trl, gw_trl, _ = trl_dpo(loss_type, *args, **trl_kw)
        loss, gw, _ = ours(name, *args, **hp)
        torch.testing.assert_close(loss, loss_trl.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gw, gw_trl, rtol=1e-5, atol=1e-7)


def test_conventions_differ_without_the_switch():
    """The defaults are the papers' forms: with responses of different lengths they differ
    from TRL's ipo and sigmoid_norm, so the switch is what makes them match."""
    args = _inputs(5)
    assert not torch.isclose(ours("ipo", *args, tau=0.3)[0], trl_dpo("ipo", *args, beta=0.3)[0])
    a, b = ours("dpo", *args, beta=0.3)[0], trl_dpo("sigmoid_norm", *args, beta=0.3)[0]
    assert not torch.isclose(a, b)


# ---------------------------------------------------------------- KTO (KTOTrainer)


def trl_kto(loss_type, c, r, rc, rr, kl, ref_kl, *, beta, lam_d=1.0, lam_u=1.0):
    """(batch loss, ∂/∂ℓ_w, ∂/∂ℓ_l) from ``KTOTrainer._compute_loss`` on the pairs unpaired
    into B desirable (chosen) and B undesirable (rejected) examples, with mismatched-pair
    log-probs ``kl`` (policy) and ``ref_kl`` (reference) of the KL completions."""
    from trl import KTOTrainer

    seq = torch.cat([c, r]).detach().clone().requires_grad_(True)
    lengths = torch.full((2 * len(c),), 3)
    mask = _completion_mask(lengths)
    kl_lengths = torch.full((len(kl),), 4)
    kl_mask = _completion_mask(kl_lengths)
    kl_tokens = _spread(kl, kl_lengths, kl_mask)
    # row ids in the first token tell the stand-in model which sequences it is given
    ids = torch.arange(len(seq))[:, None].expand_as(mask).contiguous()
    kl_ids = (1000 + torch.arange(len(kl)))[:, None].expand_as(kl_mask).contiguous()

    def model(input_ids, **_):
        if int(input_ids[0, 0]) >= 1000:
            return _outputs(kl_tokens)
        return _outputs(_spread(seq, lengths, mask))

    model.training = True
    t = object.__new__(KTOTrainer)
    _metrics_state(t)
    t.model = model
    t.beta, t.loss_type = beta, loss_type
    t.desirable_weight, t.undesirable_weight = lam_d, lam_u
    t.precompute_ref_logps = True
    t.calculate_KL = loss_type == "kto"
    batch = {
        "label": torch.tensor([True] * len(c) + [False] * len(r)),
        "input_ids": ids,
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "KL_input_ids": kl_ids,
        "KL_attention_mask": torch.ones_like(kl_mask),
        "KL_completion_mask": kl_mask,
        "ref_logps": torch.cat([rc, rr]),
        "ref_KL_logps": ref_kl,
    }
    loss = t._compute_loss(model, batch, return_outputs=False)
    (g,) = torch.autograd.grad(loss, seq)
    return loss, g[: len(c)], g[len(c) :]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kto_trainer_matches_unpaired_form_with_mismatched_z0(seed):
    c, r, rc, rr, *_ = _inputs(seed)
    g = torch.Generator().manual_seed(100 + seed)
    # mismatched-pair log-probs: the 2B completions under other prompts (TRL rotates by one)
    kl = -1 - 25 * torch.rand(2 * B, generator=g, dtype=torch.float64)
    shift = 8 * torch.rand(2 * B, generator=g, dtype=torch.float64) - (2 if seed else 6)
    ref_kl = (kl - shift).clamp(max=0)  # z0 > 0 for seeds 1, 2; clamped to 0 for seed 0
    hp = {"beta": 0.3, "lam_d": 1.0, "lam_u": 1.3}
    loss_trl, gw_trl, gl_trl = trl_kto("kto", c, r, rc, rr, kl, ref_kl, **hp)
    obj = objectives.OBJECTIVES["kto"]
    ins = dict(chosen_logps=c, rejected_logps=r, ref_chosen_logps=rc, ref_rejected_logps=rr)
    ins |= dict(kl_logps=kl, ref_kl_logps=ref_kl)
    switch = dict(z0="mismatched", form="unpaired")
    loss = obj(**ins, **hp, **switch).mean()
    part = obj.partials(**ins, **hp, **switch)
    torch.testing.assert_close(loss, loss_trl.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(part["chosen_logps"] / B, gw_trl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(part["rejected_logps"] / B, gl_trl, rtol=1e-12, atol=1e-12)
    # the per-pair default differs: twice the loss, and z0 from the matched pairs
    assert not torch.isclose(obj(**ins, **hp).mean(), loss_trl)


def test_kto_trainer_end_to_end_matches_harness_mismatched_rows():
    """TRL's whole KTO loss on tiny random models (its collator building the KL sequences, its
    fused LM head scoring them) equals the harness's ``batch_loss`` with ``z0="mismatched"``,
    ``form="unpaired"``, on matched unpaired rows: TRL's batch is the harness's 2B rows in its
    order (B desirable, then B undesirable, each with its own prompt), and TRL's rotation of
    the completions by one (``KTOTrainer.__init__``'s ``add_kl_completion_ids``, applied here
    as written there) gives the harness's mismatched rows."""
    import copy

    from trl import KTOTrainer
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference
    from trl.trainer.utils import add_fused_lm_head

    from llm import step, tiny
    from llm.data import Example, collate
    from llm.logps import PolicyLogps
    from llm.reference import LiveReference

    tok = tiny.build_tokenizer(["the quick brown fox jumps over the lazy dog"] * 20)
    policy_lm = tiny.build_model("tiny-llama", tok, seed=4)
    ref_lm = copy.deepcopy(policy_lm).requires_grad_(False)
    with torch.no_grad():  # a reference near the policy, so that z0 > 0 is not clamped away
        for p in ref_lm.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    add_fused_lm_head(policy_lm, outputs=("log_probs", "entropy", "mean_logits"))
    add_fused_lm_head(ref_lm)
    examples = [
        Example(0, (1, 5, 9), (20, 21, 22), (30,), rejected_prompt_ids=(3, 4)),
        Example(1, (1, 6), (40, 41), (50, 51, 52), rejected_prompt_ids=(7, 8, 9, 10)),
        Example(2, (2, 7, 8), (60,), (70, 71), rejected_prompt_ids=(11,)),
    ]
    rows = [(e.prompt_ids, e.chosen_ids, True) for e in examples]
    rows += [(e.rejected_prompt_ids, e.rejected_ids, False) for e in examples]
    trl_rows = {"prompt_ids": [list(p) for p, _, _ in rows]}
    trl_rows["completion_ids"] = [list(y) for _, y, _ in rows]
    trl_rows["label"] = [lab for *_, lab in rows]
    # TRL's add_kl_completion_ids, on one batch of per_device_train_batch_size = 2B rows
    completions = trl_rows["completion_ids"]
    trl_rows["KL_completion_ids"] = [completions[-1]] + completions[:-1]  # noqa: RUF005
    trl_examples = [dict(zip(trl_rows, v)) for v in zip(*trl_rows.values())]
    trl_batch = DataCollatorForUnpairedPreference(pad_token_id=tok.pad_token_id)(trl_examples)
    ours = collate(examples, tok.pad_token_id)
    mb = step.mismatched_batch(ours)
    for r in range(len(rows)):  # the same mismatched sequences and completion masks
        a, m = trl_batch["KL_attention_mask"][r].bool(), mb["attention_mask"][r].bool()
        assert trl_batch["KL_input_ids"][r][a].tolist() == mb["input_ids"][r][m].tolist()
        assert trl_batch["KL_completion_mask"][r][a].tolist() == mb["loss_mask"][r][m].tolist()

    t = object.__new__(KTOTrainer)
    _metrics_state(t)
    policy_lm.train()
    t.model, t.ref_model = policy_lm, ref_lm
    t.args = SimpleNamespace(gradient_checkpointing_kwargs=None)
    t.beta, t.loss_type = 0.3, "kto"
    t.desirable_weight, t.undesirable_weight = 1.0, 1.4
    t.precompute_ref_logps, t.calculate_KL = False, True
    trl_loss = t._compute_loss(policy_lm, trl_batch, return_outputs=False)
    assert t._metrics["train"]["kl"][-1] > 0.01  # z0 is not clamped to 0

    obj = objectives.OBJECTIVES["kto"]
    ref = PolicyLogps(ref_lm)
    reference = LiveReference(lambda b: ref(b["input_ids"], b["attention_mask"], b["loss_mask"]))
    hp = {"beta": 0.3, "lam_d": 1.0, "lam_u": 1.4, "z0": "mismatched", "form": "unpaired"}
    loss_B, _ = step.batch_loss(PolicyLogps(policy_lm), reference, ours, obj, hp)
    kl_sums, _, ref_kl_sums, _ = step.mismatched_logps(
        PolicyLogps(policy_lm), reference, ours, "train"
    )
    z0 = (kl_sums - ref_kl_sums).mean().clamp(min=0)
    assert float(z0) == pytest.approx(t._metrics["train"]["kl"][-1], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(loss_B.mean(), trl_loss, rtol=1e-5, atol=1e-6)
    w = policy_lm.lm_head.weight
    (g_trl,) = torch.autograd.grad(trl_loss, w)
    (g,) = torch.autograd.grad(loss_B.mean(), w)
    torch.testing.assert_close(g, g_trl, rtol=1e-4, atol=1e-7)


def test_kto_trainer_apo_zero_unpaired_is_half_apo_zero():
    c, r, rc, rr, *_ = _inputs(7)
    kl = torch.full((2 * B,), -1.0, dtype=torch.float64)
    loss_trl, gw_trl, gl_trl = trl_kto("apo_zero_unpaired", c, r, rc, rr, kl, kl, beta=0.2)
    loss, gw, gl = ours("apo_zero", c, r, rc, rr, torch.ones(B), torch.ones(B), beta=0.2)
    torch.testing.assert_close(loss / 2, loss_trl.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw / 2, gw_trl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gl / 2, gl_trl, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- ORPO and SimPO (experimental)


def _means(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # per-token means, including values near 0 (P -> 1) where log1mexp matters
    c = -torch.cat([torch.rand(B - 1, generator=g, dtype=dtype) * 3, torch.tensor([1e-4])])
    r = -torch.cat([torch.rand(B - 1, generator=g, dtype=dtype) * 3, torch.tensor([2e-3])])
    return c.to(dtype).requires_grad_(True), r.to(dtype).requires_grad_(True)


@pytest.mark.parametrize("seed", [0, 1])
def test_orpo_odds_ratio_term_matches(seed):
    """TRL casts ORPO's log-probs to float32 inside ``odds_ratio_loss``: compared in float32."""
    from trl.experimental.orpo import ORPOTrainer

    t = object.__new__(ORPOTrainer)
    t.accelerator, t.beta = _Accelerator(), 0.25
    c, r = _means(seed, dtype=torch.float32)
    terms = t.odds_ratio_loss(c, r)[0]
    trl_loss = (-c - terms).mean()  # with our NLL convention (over the response tokens)
    loss = objectives.OBJECTIVES["orpo"](chosen_logps=c, rejected_logps=r, lam=0.25).mean()
    torch.testing.assert_close(loss, trl_loss, rtol=1e-6, atol=1e-7)
    g_trl = torch.autograd.grad(trl_loss, (c, r))
    g = torch.autograd.grad(loss, (c, r))
    for a, b in zip(g, g_trl):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_cpo_simpo_matches(seed):
    from trl.experimental.cpo import CPOTrainer

    t = object.__new__(CPOTrainer)
    t.accelerator, t.alpha, t.loss_type = _Accelerator(), 0.0, "simpo"
    t.beta, t.simpo_gamma, t.label_smoothing = 2.5, 0.7, 0.0
    c, r = _means(seed)
    trl_loss = t.cpo_loss(c, r)[0].mean()
    loss = objectives.OBJECTIVES["simpo"](chosen_logps=c, rejected_logps=r, beta=2.5, gamma=0.7)
    torch.testing.assert_close(loss.mean(), trl_loss, rtol=1e-12, atol=1e-12)
    g_trl = torch.autograd.grad(trl_loss, (c, r))
    g = torch.autograd.grad(loss.mean(), (c, r))
    for a, b in zip(g, g_trl):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_orpo_trainer_end_to_end_with_nll_over_all_tokens():
    """TRL's whole ORPO loss on a tiny random model (NLL over prompt and response tokens)
    equals the harness's ``batch_loss`` with ``nll="all"``; chosen sequences of equal length,
    where TRL's batch token mean is the mean of the per-example means."""
    from trl.experimental.orpo import ORPOTrainer

    from llm import tiny
    from llm.data import Example, collate
    from llm.logps import PolicyLogps
    from llm.reference import NoReference
    from llm.step import batch_loss

    tok = tiny.build_tokenizer(["the quick brown fox jumps over the lazy dog"] * 20)
    model = tiny.build_model("tiny-llama", tok, seed=3)
    examples = [
        Example(0, (1, 5, 9), (20, 21, 22), (30,)),
        Example(1, (1, 6), (40, 41, 42, 43), (50, 51, 52)),
    ]
    ours_batch = collate(examples, tok.pad_token_id)

    def side(key):
        seqs = [(e.prompt_ids, getattr(e, f"{key}_ids")) for e in examples]
        T = max(len(p) + len(y) for p, y in seqs)
        ids = torch.full((len(seqs), T), tok.pad_token_id)
        att = torch.zeros(len(seqs), T, dtype=torch.long)
        labels = torch.full((len(seqs), T), -100)
        for i, (p, y) in enumerate(seqs):
            ids[i, : len(p) + len(y)] = torch.tensor(p + y)
            att[i, : len(p) + len(y)] = 1
            labels[i, len(p) : len(p) + len(y)] = torch.tensor(y)
        return {f"{key}_input_ids": ids, f"{key}_attention_mask": att, f"{key}_labels": labels}

    trl_batch = side("chosen") | side("rejected")
    t = object.__new__(ORPOTrainer)
    t.accelerator, t.beta, t.aux_loss_enabled = _Accelerator(), 0.3, False
    t.is_encoder_decoder, t.padding_value = False, tok.pad_token_id
    trl_loss, _ = t.get_batch_loss_metrics(model, trl_batch)

    obj = objectives.OBJECTIVES["orpo"]
    loss_B, _ = batch_loss(
        PolicyLogps(model), NoReference(), ours_batch, obj, {"lam": 0.3, "nll": "all"}
    )
    torch.testing.assert_close(loss_B.mean(), trl_loss, rtol=1e-5, atol=1e-6)
    w = model.lm_head.weight
    (g_trl,) = torch.autograd.grad(trl_loss, w)
    (g,) = torch.autograd.grad(loss_B.mean(), w)
    torch.testing.assert_close(g, g_trl, rtol=1e-4, atol=1e-7)
    # the default (NLL over the response tokens) is a different loss
    default_B, _ = batch_loss(PolicyLogps(model), NoReference(), ours_batch, obj, {"lam": 0.3})
    assert not torch.isclose(default_B.mean(), trl_loss.detach(), rtol=1e-3)


# ---------------------------------------------------------------- TRL's flags, end to end


def _trl_argv(loss_type: str, trl_kw: dict) -> list[str]:
    """``llm.train``'s command line in TRL's own flags for a DPOTrainer configuration."""
    flags = {"beta": "--beta", "label_smoothing": "--label_smoothing", "tau": "--discopop_tau"}
    argv = ["--loss_type", loss_type]
    for key, value in trl_kw.items():
        argv += [flags[key], str(value)]
    return argv


@pytest.mark.parametrize("loss_type", sorted(DPO_CASES))
def test_trl_flags_resolve_to_trls_loss(loss_type):
    """``--loss_type T --beta B [--label_smoothing E]`` (TRL's flags, parsed by llm.train)
    resolves to the objective and hyperparameters whose loss and gradients are TRL's
    DPOTrainer's with those values: ``--loss_type ipo`` is IPO on per-token means with τ = β."""
    from llm.train import parse

    name, hp, trl_kw = DPO_CASES[loss_type]
    cfg = parse(_trl_argv(loss_type, trl_kw))
    assert cfg.objective == name
    assert cfg.resolved_hparams() == {**objectives.get(name).defaults, **hp}
    args = _inputs(8, equal_chosen_lengths=loss_type == "sft")
    loss_trl, gw_trl, gl_trl = trl_dpo(loss_type, *args, **trl_kw)
    loss, gw, gl = ours(name, *args, **cfg.resolved_hparams())
    tol = dict(rtol=1e-6, atol=1e-9) if loss_type == "exo_pair" else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, loss_trl.detach(), **tol)
    torch.testing.assert_close(gw, gw_trl, **tol)
    torch.testing.assert_close(gl, gl_trl, **tol)


def test_trl_ipo_flags_differ_from_the_papers_ipo():
    """``--loss_type ipo --beta 0.3`` is TRL's loss; ``--objective ipo --hp tau=0.3`` the paper's
    (summed log-probs), a different value on responses of different lengths."""
    from llm.train import parse

    assert parse(["--loss_type", "ipo", "--beta", "0.3"]).resolved_hparams() == {
        "tau": 0.3, "length_norm": "mean"
    }  # fmt: skip
    paper = parse(["--objective", "ipo", "--hp", "tau=0.3"]).resolved_hparams()
    args = _inputs(9)
    assert not torch.isclose(ours("ipo", *args, **paper)[0], trl_dpo("ipo", *args, beta=0.3)[0])


def test_trl_discopop_tau_flag_matches():
    from llm.train import parse

    cfg = parse(["--loss_type", "discopop", "--beta", "0.3", "--discopop_tau", "1.0"])
    args = _inputs(10)
    loss_trl, gw_trl, _ = trl_dpo("discopop", *args, beta=0.3, tau=1.0)
    loss, gw, _ = ours("discopop", *args, **cfg.resolved_hparams())
    torch.testing.assert_close(loss, loss_trl.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, gw_trl, rtol=1e-12, atol=1e-12)


def test_trl_kto_flags_resolve_to_trls_kto_trainer_loss():
    """``--loss_type kto --beta B --desirable_weight D --undesirable_weight U`` is TRL's
    KTOTrainer loss (responses unpaired, z0 from the mismatched pairs); ``--objective kto`` the
    paper's paired form with the batch z0, which differs."""
    from llm.train import parse

    argv = ["--loss_type", "kto", "--beta", "0.3", "--desirable_weight", "1.0",
            "--undesirable_weight", "1.3"]  # fmt: skip
    hp = parse(argv).resolved_hparams()
    assert (hp["form"], hp["z0"], hp["lam_u"]) == ("unpaired", "mismatched", 1.3)
    c, r, rc, rr, *_ = _inputs(11)
    g = torch.Generator().manual_seed(111)
    kl = -1 - 25 * torch.rand(2 * B, generator=g, dtype=torch.float64)
    ref_kl = (kl - 8 * torch.rand(2 * B, generator=g, dtype=torch.float64) + 2).clamp(max=0)
    loss_trl, gw_trl, gl_trl = trl_kto("kto", c, r, rc, rr, kl, ref_kl, beta=0.3, lam_u=1.3)
    obj = objectives.OBJECTIVES["kto"]
    ins = dict(chosen_logps=c, rejected_logps=r, ref_chosen_logps=rc, ref_rejected_logps=rr,
               kl_logps=kl, ref_kl_logps=ref_kl)  # fmt: skip
    torch.testing.assert_close(obj(**ins, **hp).mean(), loss_trl.detach(), rtol=1e-12, atol=1e-12)
    part = obj.partials(**ins, **hp)
    torch.testing.assert_close(part["chosen_logps"] / B, gw_trl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(part["rejected_logps"] / B, gl_trl, rtol=1e-12, atol=1e-12)
    paper = parse(["--objective", "kto", "--beta", "0.3", "--hp", "lam_u=1.3"]).resolved_hparams()
    assert not torch.isclose(obj(**ins, **paper).mean(), loss_trl)
