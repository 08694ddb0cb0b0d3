"""Parity of objectives.online (``grpo``, ``rloo``) and rounds.build_pairs(ties="first") with the
installed TRL's GRPOTrainer, RLOOTrainer and OnlineDPOTrainer (TRL 1.16).

As in tests/test_trl_parity.py, the trainers are made with ``object.__new__`` (no model, no
dataset, no generation) and given the attributes ``__init__`` would set from a real
``GRPOConfig`` / ``RLOOConfig``; the model's forward is replaced by a method returning fixed
per-token log-probs (a leaf tensor), so TRL's ``_compute_loss`` runs unchanged on one fixed batch
and its loss and gradient w.r.t. the per-token log-probs are compared with ours. TRL computes
its advantages inline in ``_generate_and_score_completions``; the tests run that block of TRL's
own source (cut out between two of its comments/lines, nothing rewritten) on fixed rewards.
Agreement is to 1e-7 relative (TRL's sample std
is float32-rounded, ``REL``). Each setting runs twice: π_old = π_θ (num_iterations=1, ratios 1)
and π_old ≠ π_θ (num_iterations=2, ratios ≠ 1, clipping active).
"""

from __future__ import annotations

import inspect
import os
import textwrap
from collections import defaultdict
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import objectives
from rounds import build_pairs

pytestmark = pytest.mark.slow
trl = pytest.importorskip("trl")
from trl.trainer.utils import nanstd  # noqa: E402

P, N, T = 3, 4, 5
F64 = torch.float64
REL = 1e-7
"""TRL's ``nanstd`` multiplies the variance by ``count / (count - 1)`` of two integer tensors,
a float32 division: its sample std carries a relative error ~1e-8 even in float64."""


class _Accelerator:
    device = torch.device("cpu")
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(P * N, T, generator=g, dtype=F64) * 2 - 0.05
    old = (lp + 0.5 * torch.randn(P * N, T, generator=g, dtype=F64)).clamp(max=-1e-3)
    ref = -torch.rand(P * N, T, generator=g, dtype=F64) * 2 - 0.05
    lengths = torch.tensor([5, 3, 1, 4, 5, 2, 5, 5, 3, 1, 4, 2])
    mask = (torch.arange(T) < lengths[:, None]).long()
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0, -1.0, 3.0, 0.0, 1.0], dtype=F64)
    return lp, old, ref, mask, rewards


def _trl_block(cls, method, start, end, namespace):
    """Run the lines of TRL's ``cls.method`` from the one containing ``start`` up to (not
    including) the one containing ``end``, in ``namespace``; returns the namespace."""
    lines = inspect.getsource(getattr(cls, method)).splitlines()
    i = next(k for k, x in enumerate(lines) if start in x)
    j = next(k for k in range(i + 1, len(lines)) if end in lines[k])
    exec(textwrap.dedent("\n".join(lines[i:j])), namespace)
    return namespace


def _trainer(cls, config, lp_leaf):
    t = object.__new__(cls)
    t.args = config
    t.accelerator = _Accelerator()
    t.model = SimpleNamespace(training=True)
    t.aux_loss_enabled = False
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t.current_gradient_accumulation_steps = 1
    t.beta = config.beta
    t.epsilon_low = config.epsilon
    t.epsilon_high = config.epsilon_high if config.epsilon_high is not None else config.epsilon
    zeros = torch.zeros_like(lp_leaf.detach())
    t._get_per_token_logps_and_entropies = lambda *a, **k: (lp_leaf, zeros, None)
    return t


def _inputs(mask, advantages, **extra):
    ids = torch.ones_like(mask)
    prompt = torch.ones(mask.shape[0], 1, dtype=torch.long)
    return dict(prompt_ids=prompt, prompt_mask=prompt, completion_ids=ids, completion_mask=mask,
                advantages=advantages, **extra)  # fmt: skip


def _grpo_trl(cfg, lp, old, ref, mask, rewards):
    """TRL's advantages (its block) and loss and ∂loss/∂per-token-logps."""
    self = SimpleNamespace(scale_rewards=cfg.scale_rewards, multi_objective_aggregation="x")
    ns = _trl_block(
        trl.GRPOTrainer, "_generate_and_score_completions",
        "mean_grouped_rewards = torch.nanmean", "is_std_zero = torch.isclose",
        dict(self=self, rewards=rewards.clone(), num_generations=N, torch=torch, nanstd=nanstd),
    )  # fmt: skip
    leaf = lp.clone().requires_grad_(True)
    t = _trainer(trl.GRPOTrainer, cfg, leaf)
    for name in ("loss_type", "importance_sampling_level", "max_completion_length",
                 "top_entropy_quantile", "off_policy_mask_threshold", "use_vllm"):  # fmt: skip
        setattr(t, name, getattr(cfg, name))
    t._entropy_bonus_enabled = False
    extra = dict(ref_per_token_logps=ref, num_items_in_batch=mask.sum())
    if old is not None:
        extra["old_per_token_logps"] = old
    loss = t._compute_loss(None, _inputs(mask, ns["advantages"], **extra))
    loss.backward()
    return ns["advantages"], loss.detach(), leaf.grad


SETTINGS = [
    *[(lt, sr, "token", 0.0, True) for lt in ("grpo", "bnpo", "dr_grpo", "dapo")
      for sr in ("group", "batch", "none")],
    *[(lt, "group", "sequence", b, c) for lt in ("grpo", "dapo") for b in (0.0, 0.04)
      for c in (True, False)],
    *[(lt, "batch", "token", 0.04, c) for lt in ("grpo", "bnpo", "dr_grpo", "dapo")
      for c in (True, False)],
]  # fmt: skip


@pytest.mark.parametrize("loss_type, scale_rewards, importance, beta, correction", SETTINGS)
@pytest.mark.parametrize("iterations", [1, 2])
def test_grpo_matches_trl(loss_type, scale_rewards, importance, beta, correction, iterations,
                          tmp_path):  # fmt: skip
    cfg = trl.GRPOConfig(
        output_dir=str(tmp_path), loss_type=loss_type, scale_rewards=scale_rewards, beta=beta,
        importance_sampling_level=importance, epsilon=0.2, epsilon_high=0.28,
        max_completion_length=7, num_iterations=iterations, num_generations=N, report_to=[],
        use_cpu=True, bf16=False, use_bias_correction_kl=correction,
    )  # fmt: skip
    lp, old, ref, mask, rewards = _batch()
    old = None if iterations == 1 else old
    adv_trl, loss_trl, grad_trl = _grpo_trl(cfg, lp, old, ref, mask, rewards)
    hp = dict(loss_type=loss_type, scale=scale_rewards,
              importance=importance, clip_eps=0.2, clip_eps_high=0.28, beta=beta,
              kl_correction=correction,
              max_completion_length=7.0)  # fmt: skip
    ours_adv = objectives.group_advantages(rewards.view(P, N), scale=hp["scale"])
    assert torch.allclose(ours_adv.flatten(), adv_trl, rtol=REL, atol=1e-14)
    shape = (P, N, T)
    x = lp.view(shape).clone().requires_grad_(True)
    inputs = {"logps": x, "rewards": rewards.view(P, N), "ref_logps": ref.view(shape)}
    if old is not None:
        inputs["old_logps"] = old.view(shape)
        ratio = (lp - old).exp()[mask.bool()]
        assert bool(((ratio > 1.28) | (ratio < 0.8)).any())  # clipping is exercised
    loss = objectives.OBJECTIVES["grpo"].loss(inputs, token_mask=mask.view(shape), **hp).mean()
    loss.backward()
    assert loss.item() == pytest.approx(loss_trl.item(), rel=REL, abs=1e-14)
    assert torch.allclose(x.grad.view(P * N, T), grad_trl, rtol=REL, atol=1e-14)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.05])
@pytest.mark.parametrize("iterations", [1, 2])
def test_rloo_matches_trl(normalize, beta, iterations, tmp_path):
    cfg = trl.RLOOConfig(
        output_dir=str(tmp_path), beta=beta, normalize_advantages=normalize, epsilon=0.2,
        epsilon_high=0.25, num_iterations=iterations, num_generations=N, report_to=[],
        use_cpu=True, bf16=False,
    )  # fmt: skip
    lp, old, ref, mask, rewards = _batch(1)
    old = lp if iterations == 1 else old  # TRL computes old log-probs at generation either way
    self = SimpleNamespace(beta=beta, normalize_advantages=normalize)
    ns = _trl_block(
        trl.RLOOTrainer, "_generate_and_score_completions",
        "# Include the KL penalty in the reward", "advantages = torch.nan_to_num",
        dict(self=self, rewards=rewards.clone(), num_generations=N, torch=torch, nanstd=nanstd,
             old_per_token_logps=old, ref_per_token_logps=ref, completion_mask=mask,
             gather=lambda x: x),
    )  # fmt: skip
    leaf = lp.clone().requires_grad_(True)
    t = _trainer(trl.RLOOTrainer, cfg, leaf)
    old_seq = (old * mask).sum(1)
    loss_trl = t._compute_loss(None, _inputs(mask, ns["advantages"], old_logps=old_seq))
    loss_trl.backward()
    shape = (P, N, T)
    x = lp.view(shape).clone().requires_grad_(True)
    inputs = {"logps": x, "rewards": rewards.view(P, N), "ref_logps": ref.view(shape),
              "old_logps": old.view(shape)}  # fmt: skip
    hp = dict(beta=beta, normalize=normalize, clip_eps=0.2, clip_eps_high=0.25)
    loss = objectives.OBJECTIVES["rloo"].loss(inputs, token_mask=mask.view(shape), **hp).mean()
    loss.backward()
    assert loss.item() == pytest.approx(loss_trl.item(), rel=REL, abs=1e-14)
    assert torch.allclose(x.grad.view(P * N, T), leaf.grad, rtol=REL, atol=1e-14)
    if iterations == 2:
        ratio = ((lp - old) * mask).sum(1).exp()
        assert bool(((ratio > 1.25) | (ratio < 0.8)).any())


def test_online_dpo_tie_rule_matches_trl():
    """OnlineDPOTrainer's pairing (its own lines) against build_pairs(ties="first") with N = 2,
    and its sigmoid loss on those pairs against objectives.dpo."""
    from trl.experimental.online_dpo import OnlineDPOTrainer

    rewards = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 3.0, 2.0, 1.0], dtype=F64)  # 4 prompts × 2
    batch_size = 4
    first, second = rewards.view(2, batch_size)  # TRL: the batch's first half, then the second
    ns = _trl_block(
        OnlineDPOTrainer, "training_step", "first_half, second_half = rewards.split",
        "# Build tensor so that", dict(rewards=rewards, batch_size=batch_size, torch=torch,
                                       device="cpu"),
    )  # fmt: skip
    w, l, valid = build_pairs(torch.stack([first, second], -1), ties="first")
    assert valid.all()
    assert torch.equal(w.squeeze(-1) * batch_size + torch.arange(batch_size), ns["chosen_indices"])
    assert torch.equal(l.squeeze(-1) * batch_size + torch.arange(batch_size),
                       ns["rejected_indices"])  # fmt: skip
    _, _, dropped = build_pairs(torch.stack([first, second], -1))
    assert dropped.sum() == 2  # two tied prompts: the library's default drops them
    g = torch.Generator().manual_seed(3)
    logps, ref = -torch.rand(8, generator=g, dtype=F64), -torch.rand(8, generator=g, dtype=F64)
    c, r = ns["chosen_indices"], ns["rejected_indices"]
    logits = (logps[c] - logps[r]) - (ref[c] - ref[r])
    trl_loss = -torch.nn.functional.logsigmoid(0.1 * logits).mean()  # its sigmoid loss line
    ours = objectives.dpo(logps[c], logps[r], ref[c], ref[r], beta=0.1).mean()
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-14)
