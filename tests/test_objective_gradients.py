"""Autograd against the hand-derived closed forms; the structural claims of docs/science.md §4."""

import math

import pytest
import torch

import objectives
from objectives import OBJECTIVES, prob_partials, pushdown_ratio, tabular_logit_grad

K = 12
PAIRWISE = [n for n, o in OBJECTIVES.items() if o.data == "pairs"]
GROUPS = [n for n, o in OBJECTIVES.items() if o.data == "groups"]
HPARAMS = {  # non-default settings so the tests exercise more than one branch
    "slic": {"lam": 0.3},
    "bon_pushdown": {"pushdown": "mean"},
    "rwr": {"normalize": True},
    "reinforce": {"kl_coef": 0.1, "ent_coef": 0.05},
    "ppo": {"clip_eps": 0.1, "kl_coef": 0.1},
    "hinge": {"beta": 0.5},
    "bco_pair": {"delta": None},
    "robust": {"eps": 0.2},
    "exo_pair": {"eps": 0.05},
    "sppo_hard": {"beta": 0.5},
    "aot": {"eps": 0.1},
    "aot_unpaired": {"eps": 0.1},
    "discopop": {"tau": 0.5},
    "grpo": {"beta": 0.1, "clip_eps": 0.1, "loss_type": "dr_grpo", "max_completion_length": 3.0},
    "rloo": {"beta": 0.1, "normalize": True, "clip_eps_high": 0.1},
}


def _problem(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(K, generator=g, dtype=dtype)
    ref = torch.log_softmax(torch.randn(K, generator=g, dtype=dtype), -1)
    old = torch.log_softmax(logits + 0.3 * torch.randn(K, generator=g, dtype=dtype), -1)
    arms = torch.randint(0, K, (4, 5), generator=g)
    rewards = torch.rand(4, 5, generator=g, dtype=dtype)
    chosen, rejected = (
        torch.randint(0, K, (6,), generator=g),
        torch.randint(0, K, (6,), generator=g),
    )
    return logits, ref, old, arms, rewards, chosen, rejected


def _arms_for(name, arms, rewards, chosen, rejected):
    data = OBJECTIVES[name].data
    if data == "groups":
        return {"arms": arms, "rewards": rewards}
    return {"chosen": chosen} if data == "chosen" else {"chosen": chosen, "rejected": rejected}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tabular_logit_grad_matches_autograd(name, seed):
    logits, ref, old, arms, rewards, chosen, rejected = _problem(seed)
    sel = _arms_for(name, arms, rewards, chosen, rejected)
    hp = HPARAMS.get(name, {})
    z = logits.clone().requires_grad_(True)
    inputs = objectives.tabular_inputs(name, z, ref, old, **sel)
    OBJECTIVES[name](**inputs, **hp).mean().backward()
    closed = tabular_logit_grad(name, logits, ref_logps_K=ref, old_logps_K=old, hparams=hp, **sel)
    assert torch.allclose(z.grad, closed, atol=1e-10), (z.grad, closed)
    assert abs(closed.sum().item()) < 1e-12  # softmax logit gradients sum to zero


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_partials_match_autograd(name):
    """∂loss/∂logps by autograd equals the hand-derived partials, elementwise."""
    logits, ref, old, arms, rewards, chosen, rejected = _problem(3)
    sel = _arms_for(name, arms, rewards, chosen, rejected)
    inputs = objectives.tabular_inputs(name, logits, ref, old, **sel)
    diff = {k for k in ("chosen_logps", "rejected_logps", "logps") if k in inputs}
    leaves = {k: (v.detach().clone().requires_grad_(k in diff)) for k, v in inputs.items()}
    hp = HPARAMS.get(name, {})
    OBJECTIVES[name](**leaves, **hp).sum().backward()
    closed = OBJECTIVES[name].partials(**inputs, **hp)
    assert set(closed) == diff
    for k in diff:
        assert torch.allclose(leaves[k].grad, closed[k], atol=1e-10), k


# convention switches and hyperparameter settings with their own branch of the closed form
SWITCHES = [
    ("asft", {"beta": 2.0, "lam": 0.3}),
    ("asft", {"beta": 0.5}),
    ("kto", {"form": "unpaired", "beta": 0.5}),
    ("kto", {"z0": "mismatched", "beta": 0.5}),
    ("kto", {"z0": "mismatched", "form": "unpaired", "lam_u": 1.5}),
    ("orpo", {"nll": "all", "lam": 0.5}),
    ("bco_pair", {"delta": 0.7, "beta": 0.3}),
    ("dpo", {"length_norm": "mean"}),
    ("ipo", {"length_norm": "mean"}),
    ("discopop", {"tau": 2.0, "beta": 0.2}),
    ("aot", {"beta": 1.0}),
    ("aot_unpaired", {"beta": 1.0, "eps": 0.3}),
]


@pytest.mark.parametrize("name, hp", SWITCHES)
def test_partials_match_autograd_for_switches(name, hp):
    obj = OBJECTIVES[name]
    g = torch.Generator().manual_seed(11)
    B = 6
    keys = obj.required_inputs(hp)
    inputs = {k: -0.05 - 4 * torch.rand(B, generator=g, dtype=torch.float64) for k in keys}
    if "kl_logps" in inputs:  # a different batch length is allowed for the mismatched pairs
        inputs["kl_logps"] = -torch.rand(B + 2, generator=g, dtype=torch.float64)
        inputs["ref_kl_logps"] = -2 * torch.rand(B + 2, generator=g, dtype=torch.float64)
    diff = {"chosen_logps", "rejected_logps", "chosen_full_logps"} & set(keys)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    obj(**leaves, **hp).sum().backward()
    closed = obj.partials(**inputs, **hp)
    assert set(closed) == diff
    for k in diff:
        assert torch.allclose(leaves[k].grad, closed[k], atol=1e-10), k
    for k in set(leaves) - diff:  # reference and mismatched-pair log-probs carry no gradient
        assert leaves[k].grad is None, k


@pytest.mark.parametrize("name", ["dpo", "ipo", "slic"])
def test_contrastive_losses_touch_only_w_and_l(name):
    logits, ref, *_ = _problem(4)
    g = tabular_logit_grad(
        name,
        logits,
        ref_logps_K=ref,
        hparams={"delta": 5.0} if name == "slic" else {},
        chosen=torch.tensor([2]),
        rejected=torch.tensor([7]),
    )
    others = [k for k in range(K) if k not in (2, 7)]
    assert torch.count_nonzero(g[others]) == 0
    assert g[2] < 0 < g[7] and torch.isclose(g[2], -g[7])  # ∝ e_l - e_w for descent


def test_sft_moves_every_arm():
    logits, *_ = _problem(5)
    g = tabular_logit_grad("sft", logits, chosen=torch.tensor([2]))
    assert torch.all(g != 0)
    assert torch.allclose(
        g,
        torch.softmax(logits, -1)
        - torch.nn.functional.one_hot(torch.tensor(2), K).to(logits.dtype),
    )


def test_asft_logit_gradient_formula():
    # −(1+λ)(e_w − π) + λ P_l/(1−P_l) (e_l − π), docs/science.md §4
    logits, *_ = _problem(6)
    lam, pi = 0.3, torch.softmax(logits, -1)
    e = torch.eye(K, dtype=logits.dtype)
    expected = -(1 + lam) * (e[1] - pi) + lam * pi[4] / (1 - pi[4]) * (e[4] - pi)
    got = tabular_logit_grad(
        "asft", logits, hparams={"lam": lam}, chosen=torch.tensor([1]), rejected=torch.tensor([4])
    )
    assert torch.allclose(got, expected, atol=1e-12)


def test_dpo_swap_negates_margin_and_grad():
    c, r, rc, rr = (
        torch.tensor([-1.0, -5.0]),
        torch.tensor([-2.0, -0.5]),
        torch.tensor([-1.5, -3.0]),
        torch.tensor([-1.0, -2.0]),
    )
    h = objectives.implicit_rewards(c, rc) - objectives.implicit_rewards(r, rr)
    h_swap = objectives.implicit_rewards(r, rr) - objectives.implicit_rewards(c, rc)
    assert torch.equal(h_swap, -h)
    # -log σ(βh) - (-log σ(-βh)) = -βh: swapping changes the loss by exactly βh
    fwd = objectives.dpo(c, r, rc, rr, beta=0.5)
    swp = objectives.dpo(r, c, rr, rc, beta=0.5)
    assert torch.allclose(swp - fwd, 0.5 * h, atol=1e-6)
    g = objectives.closed_form.d_dpo(c, r, rc, rr, beta=0.5)
    assert torch.all(g["chosen_logps"] == -g["rejected_logps"])


def test_asft_two_forms_and_orpo_identity():
    pw = torch.tensor([0.05, 0.3, 0.5, 0.9, 0.999], dtype=torch.float64)
    pl = torch.tensor([0.6, 0.01, 0.5, 0.05, 0.0005], dtype=torch.float64)
    lw, ll = pw.log(), pl.log()
    for lam in (0.1, 1.0):
        asft = objectives.asft(lw, ll, lam=lam)
        r_w, r_l = objectives.log_odds(lw), objectives.log_odds(ll)
        written = -lw - lam * (
            torch.nn.functional.logsigmoid(r_w) + torch.nn.functional.logsigmoid(-r_l)
        )
        assert torch.allclose(asft, written, atol=1e-12)
        # ORPO − ASFT = λ·log(P_w + P_l − 2 P_w P_l)
        diff = objectives.orpo(lw, ll, lam=lam) - asft
        assert torch.allclose(diff, lam * torch.log(pw + pl - 2 * pw * pl), atol=1e-10)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_no_gradient_to_reference_rewards_or_old(name):
    logits, ref, old, arms, rewards, chosen, rejected = _problem(7)
    inputs = objectives.tabular_inputs(
        name, logits, ref, old, **_arms_for(name, arms, rewards, chosen, rejected)
    )
    frozen = {"ref_chosen_logps", "ref_rejected_logps", "ref_logps", "old_logps", "rewards"}
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    hp = HPARAMS.get(name, {})
    if "baseline" in OBJECTIVES[name].optional_inputs:
        leaves["baseline"] = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        frozen.add("baseline")
    OBJECTIVES[name](**leaves, **hp).sum().backward()
    for k in frozen & set(leaves):
        assert leaves[k].grad is None, k


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_registry_entry_runs_on_declared_inputs_and_is_finite_at_extremes(name, dtype):
    obj = OBJECTIVES[name]
    extremes = torch.tensor([-1e4, -30.0, -1e-9, 0.0, -2.0], dtype=dtype)
    shapes = {"groups": (1, 5)}.get(obj.data, (5,))
    inputs = {}
    for key in obj.inputs:
        v = extremes.flip(0) if "rejected" in key or "ref" in key else extremes
        if key == "rewards":
            v = torch.tensor([1e3, -1e3, 0.0, 1.0, 1.0], dtype=dtype)
        inputs[key] = v.reshape(shapes).clone().requires_grad_(key.endswith("logps"))
    loss = obj(**inputs)
    assert loss.shape == ((1,) if obj.data == "groups" else (5,))
    loss.sum().backward()
    assert torch.isfinite(loss).all(), loss
    for key, v in inputs.items():
        if v.grad is not None:
            assert torch.isfinite(v.grad).all(), (key, v.grad)


def test_log1mexp_stable_and_accurate():
    a = torch.tensor([-1e-20, -1e-8, -0.1, -0.69, -0.7, -5.0, -50.0, -1e4], dtype=torch.float64)
    expected = torch.tensor(
        [
            math.log(-math.expm1(max(x, -1e30)))
            if x < -1e-16
            else math.log(torch.finfo(torch.float64).eps)
            for x in a.tolist()
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(objectives.log1mexp(a), expected, rtol=1e-9)
    assert torch.isfinite(objectives.log1mexp(torch.zeros(1))).all()


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_prob_space_dpo_ratio(beta):
    xw = torch.tensor([0.3, 0.05, 0.6], dtype=torch.float64)
    xl = torch.tensor([0.1, 0.4, 0.001], dtype=torch.float64)
    ratio = pushdown_ratio("dpo", xw, xl, ref_w=0.2, ref_l=0.07, beta=beta)
    assert torch.allclose(ratio, xw / xl)


def test_prob_partials_match_autograd():
    xw = torch.tensor([0.3, 0.05], dtype=torch.float64, requires_grad=True)
    xl = torch.tensor([0.1, 0.4], dtype=torch.float64, requires_grad=True)
    for name in PAIRWISE:
        obj = OBJECTIVES[name]
        kw = {
            "ref_chosen_logps": torch.log(torch.tensor([0.2, 0.3], dtype=torch.float64)),
            "ref_rejected_logps": torch.log(torch.tensor([0.3, 0.1], dtype=torch.float64)),
        }
        kw = {k: v for k, v in kw.items() if k in obj.inputs}
        gw, gl = torch.autograd.grad(
            obj(chosen_logps=xw.log(), rejected_logps=xl.log(), **kw).sum(), (xw, xl)
        )
        dw, dl = prob_partials(name, xw.detach(), xl.detach(), ref_w=[0.2, 0.3], ref_l=[0.3, 0.1])
        assert torch.allclose(gw, dw) and torch.allclose(gl, dl), name


def test_group_objectives_equal_plain_loop():
    """The vectorised group losses equal a per-prompt Python loop over the formulas."""
    _, _, _, _, rewards, _, _ = _problem(8)
    logps = -torch.rand(4, 5, dtype=torch.float64) * 3
    for p in range(4):
        r, lp = rewards[p].tolist(), logps[p].tolist()
        best = max(range(5), key=lambda i: r[i])
        worst = min(range(5), key=lambda i: r[i])
        got = objectives.bon_pushdown(logps, rewards, beta=0.7)[p].item()
        assert math.isclose(got, -lp[best] + 0.7 * lp[worst], rel_tol=1e-12)
        mean, std = sum(r) / 5, (sum((x - sum(r) / 5) ** 2 for x in r) / 5) ** 0.5
        adv = [(x - mean) / (std + 1e-6) for x in r]
        got = objectives.reinforce(logps, rewards)[p].item()
        assert math.isclose(got, -sum(a * x for a, x in zip(adv, lp)) / 5, rel_tol=1e-9)


def test_parse_hparams_types_and_errors():
    assert OBJECTIVES["rwr"].parse_hparams(["beta=0.5", "normalize=false"]) == {
        "beta": 0.5,
        "normalize": False,
    }
    assert OBJECTIVES["bon_pushdown"].parse_hparams(("pushdown=mean",)) == {"pushdown": "mean"}
    with pytest.raises(ValueError, match="key=value"):
        OBJECTIVES["dpo"].parse_hparams(["beta"])
    with pytest.raises(ValueError, match="beta must be a number"):
        OBJECTIVES["dpo"].parse_hparams(["beta=high"])
    with pytest.raises(ValueError, match="no hyperparameter"):
        OBJECTIVES["dpo"].parse_hparams(["tau=1"])
