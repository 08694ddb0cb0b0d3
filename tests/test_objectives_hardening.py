"""The objectives refuse nonsense: shape mismatches, positive log-probs and out-of-range
hyperparameters; a NaN row stays in its row; the log1mexp clamp keeps a push-down gradient.

Everything is parametrised over the registry (by data kind and by ``hp_rules``), never by lists
of objective names. Expected numbers are derived by hand in the comments beside them.
"""

import math

import pytest
import torch

import objectives
from objectives import OBJECTIVES, closed_form
from objectives.hparams import Rule
from objectives.registry import Objective
from runio import UserError

NAN, INF = float("nan"), float("inf")


def _kind(kind):
    return sorted(n for n, o in OBJECTIVES.items() if o.data == kind)


PAIRS, GROUPS, CHOSEN = _kind("pairs"), _kind("groups"), _kind("chosen")
LOGP_KEYS = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
GROUP_KEYS = ("logps", "rewards", "old_logps", "ref_logps")


def _group_keys(obj):
    return [k for k in (*obj.inputs, *obj.optional_inputs) if k in GROUP_KEYS]


def _pair_inputs(obj, B=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = [k for k in (*obj.inputs, *obj.optional_inputs) if k in LOGP_KEYS]
    return {k: -0.1 - 3 * torch.rand(B, generator=g, dtype=dtype) for k in keys}


def _group_inputs(obj, P=3, N=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in _group_keys(obj):
        x = torch.rand(P, N, generator=g, dtype=dtype)
        out[k] = x if k == "rewards" else -0.1 - 3 * x
    return out


def _inputs(name, **kw):
    obj = OBJECTIVES[name]
    return (_group_inputs if obj.data == "groups" else _pair_inputs)(obj, **kw)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "name, key", [(n, k) for n in PAIRS for k in OBJECTIVES[n].inputs if k in LOGP_KEYS]
)
def test_pairwise_shape_mismatch_refused(name, key):
    obj = OBJECTIVES[name]
    inputs = _pair_inputs(obj, B=3)
    inputs[key] = inputs[key][:2].reshape(2, 1)  # (2, 1) against (3,): broadcasts to (2, 3)
    with pytest.raises(ValueError, match=rf"^{obj.fn.__name__}: .*{key} \(2, 1\)"):
        obj(**inputs)


@pytest.mark.parametrize("name", PAIRS)
def test_pairwise_ref_free_still_refuses_mismatched_ignored_refs(name):
    """Reference-free objectives accept and ignore refs, but a mismatched one is still a bug."""
    obj = OBJECTIVES[name]
    inputs = _pair_inputs(obj, B=3)
    inputs["ref_rejected_logps"] = torch.full((4,), -1.0, dtype=torch.float64)
    inputs.setdefault("ref_chosen_logps", torch.full((3,), -1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"ref_rejected_logps \(4,\)"):
        obj.fn(**inputs)


@pytest.mark.parametrize("name, key", [(n, k) for n in GROUPS for k in _group_keys(OBJECTIVES[n])])
@pytest.mark.parametrize("bad_shape", [(3, 1), (4,)])
def test_groups_shape_mismatch_refused(name, key, bad_shape):
    obj = OBJECTIVES[name]
    inputs = _group_inputs(obj, P=3, N=4)  # (3, 4); (3, 1) and (4,) would both broadcast
    inputs[key] = torch.full(bad_shape, -0.5 if key != "rewards" else 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"^{obj.fn.__name__}: .*{key} \({bad_shape[0]},"):
        obj(**inputs)


BASELINE_NAMES = sorted(n for n, o in OBJECTIVES.items() if "baseline" in o.optional_inputs)


@pytest.mark.parametrize("name", BASELINE_NAMES)
@pytest.mark.parametrize("shape", [(3,), (1, 3), (3, 3), (2, 1, 1)])
def test_baseline_that_is_not_per_prompt_refused(name, shape):
    """(3,) against (3, 3) rewards would subtract along the *sample* axis: refused."""
    obj = OBJECTIVES[name]
    inputs = _group_inputs(obj, P=3, N=3)
    with pytest.raises(ValueError, match=rf"^{obj.fn.__name__}: baseline of shape"):
        obj(**inputs, baseline=torch.zeros(shape, dtype=torch.float64))


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_per_prompt_baselines_accepted_and_seed_axis_kept(name):
    obj = OBJECTIVES[name]
    S, P, N = 2, 3, 4
    per_seed = [_group_inputs(obj, P=P, N=N, seed=s) for s in range(S)]
    batched = {k: torch.stack([d[k] for d in per_seed]) for k in per_seed[0]}  # (S, P, N)
    b_S = torch.tensor([0.2, 0.7], dtype=torch.float64)
    loss = obj(**batched, baseline=b_S[:, None, None])  # the toy trainer's form
    assert loss.shape == (S, P)
    for s in range(S):
        alone = obj(**per_seed[s], baseline=b_S[s])  # scalar baseline
        assert torch.allclose(loss[s], alone, atol=1e-12)
        col = obj(**per_seed[s], baseline=torch.full((P, 1), b_S[s].item(), dtype=torch.float64))
        assert torch.allclose(col, alone, atol=1e-12)


# ---------------------------------------------------------------- positive log-probs


def _logp_keys(name):
    return [k for k in _inputs(name) if k != "rewards"]


@pytest.mark.parametrize("name, key", [(n, k) for n in sorted(OBJECTIVES) for k in _logp_keys(n)])
def test_positive_logps_refused(name, key):
    obj = OBJECTIVES[name]
    inputs = _inputs(name)
    inputs[key] = inputs[key].clone()
    inputs[key].view(-1)[1] = 0.5
    with pytest.raises(ValueError, match=rf"^{obj.fn.__name__}: {key} must be log-prob.*0\.5"):
        obj(**inputs)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("value", [0.0, 1e-7, -1e-9])
def test_logps_at_zero_within_rounding_accepted(name, value):
    inputs = _inputs(name)
    for k in _logp_keys(name):
        inputs[k].view(-1)[0] = value
    assert torch.isfinite(OBJECTIVES[name](**inputs)).all()


# ---------------------------------------------------------------- NaN stays in its row


def test_kto_nan_row_is_local_with_hand_values():
    # ρ_w = (2, NaN, 1, 3), ρ_l = (0, 5, 1, -1) (refs 0 on the rejected side, see below).
    # Finite pairs: rows 0, 2, 3 -> z0 = max(0, (2+0+1+1+3-1)/6) = 1 (row 1's finite ρ_l = 5 does
    # not count; with it z0 would be 11/7). β = 1, λ_D = λ_U = 1:
    # row 0: (1-σ(2-1)) + (1-σ(1-0)) = 2/(1+e);  row 2: ½ + ½ = 1;  row 3: 2(1-σ(2)) = 2/(1+e²)
    nan = float("nan")
    chosen = torch.tensor([-1.0, nan, -2.0, -1.0], dtype=torch.float64)
    ref_chosen = torch.tensor([-3.0, -1.0, -3.0, -4.0], dtype=torch.float64)
    rejected = torch.tensor([-2.0, -1.0, -1.0, -3.0], dtype=torch.float64)
    ref_rejected = torch.tensor([-2.0, -6.0, -2.0, -2.0], dtype=torch.float64)
    loss = objectives.kto(chosen, rejected, ref_chosen, ref_rejected, beta=1.0)
    assert torch.isnan(loss[1])
    keep = [0, 2, 3]
    expected = torch.tensor([2 / (1 + math.e), 1.0, 2 / (1 + math.e**2)], dtype=torch.float64)
    assert torch.allclose(loss[keep], expected, atol=1e-12)
    without = objectives.kto(
        chosen[keep], rejected[keep], ref_chosen[keep], ref_rejected[keep], beta=1.0
    )
    assert torch.allclose(loss[keep], without, atol=1e-12)
    # the closed-form partials use the same z0
    g = closed_form.d_kto(chosen, rejected, ref_chosen, ref_rejected, beta=1.0)
    assert torch.isfinite(g["chosen_logps"][keep]).all()


def test_kto_z0_zero_when_no_finite_pair_and_per_leading_row():
    nan = torch.tensor([float("nan")] * 2, dtype=torch.float64)
    assert objectives.pairwise.kto_z0(nan, nan).item() == 0.0
    # (S, B): one z0 per seed row: rows (ρ_w, ρ_l) = ((4, 2), (0, 0)) and ((-2, -2), (-2, -2))
    # -> z0 = (4+2+0+0)/4 = 1.5 and max(0, -2) = 0
    rho_w = torch.tensor([[4.0, 2.0], [-2.0, -2.0]], dtype=torch.float64)
    rho_l = torch.tensor([[0.0, 0.0], [-2.0, -2.0]], dtype=torch.float64)
    z0 = objectives.pairwise.kto_z0(rho_w, rho_l)
    assert torch.equal(z0, torch.tensor([[1.5], [0.0]], dtype=torch.float64))


@pytest.mark.parametrize("name", PAIRS + CHOSEN)
def test_pairwise_nan_row_does_not_poison_other_rows(name):
    obj = OBJECTIVES[name]
    inputs = _pair_inputs(obj, B=4, seed=1)
    poisoned = {k: v.clone() for k, v in inputs.items()}
    poisoned["chosen_logps"][1] = float("nan")
    keep = [0, 2, 3]
    loss = obj(**poisoned)
    assert torch.isnan(loss[1])
    assert torch.allclose(loss[keep], obj(**{k: v[keep] for k, v in inputs.items()}), atol=1e-12)


@pytest.mark.parametrize("name", GROUPS)
@pytest.mark.parametrize("key", ["logps", "rewards"])
def test_groups_nan_in_one_prompt_does_not_poison_other_prompts(name, key):
    """Samples of one prompt are coupled by design; other prompts are untouched."""
    obj = OBJECTIVES[name]
    inputs = _group_inputs(obj, P=3, N=4, seed=2)
    poisoned = {k: v.clone() for k, v in inputs.items()}
    poisoned[key][1, 2] = float("nan")
    loss = obj(**poisoned)
    keep = [0, 2]
    assert torch.allclose(loss[keep], obj(**{k: v[keep] for k, v in inputs.items()}), atol=1e-12)


# ---------------------------------------------------------------- clamp at P_l -> 1

CLAMPED = [n for n in PAIRS if OBJECTIVES[n].needs_mean_logps and "lam" in OBJECTIVES[n].defaults]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("at", ["zero", "half_eps", "tiny_positive"])
def test_asft_orpo_pushdown_gradient_finite_positive_at_p_one(dtype, at):
    eps = torch.finfo(dtype).eps
    a = {"zero": 0.0, "half_eps": -eps / 2, "tiny_positive": 1e-7}[at]
    assert {"asft", "orpo"} <= set(CLAMPED)
    lam = 0.3
    for name in CLAMPED:
        r = torch.tensor([a], dtype=dtype, requires_grad=True)
        c = torch.tensor([math.log(0.5)], dtype=dtype)
        OBJECTIVES[name](chosen_logps=c, rejected_logps=r, lam=lam).sum().backward()
        g = r.grad.item()
        assert math.isfinite(g) and g > 0, (name, g)
        # the gradient at -eps: ASFT λ e^a/(1 - e^a) ≈ λ/eps; ORPO λ σ(-ratio)/(1 - e^a) with
        # ratio = log odds(½) - log odds(e^-eps) = 0 - (-eps - log eps) ≈ log eps, σ(-ratio) ≈ 1
        assert math.isclose(g, lam / eps, rel_tol=1e-4), (name, g, lam / eps)


@pytest.mark.parametrize("name", CLAMPED)
def test_asft_orpo_gradients_equal_closed_form_at_ordinary_values(name):
    c = torch.tensor([-0.2, -1.0, -3.0, -0.01], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([-0.5, -1e-3, -2.0, -1e-6], dtype=torch.float64, requires_grad=True)
    OBJECTIVES[name](chosen_logps=c, rejected_logps=r, lam=0.7).sum().backward()
    closed = OBJECTIVES[name].partials(c.detach(), r.detach(), lam=0.7)
    assert torch.allclose(c.grad, closed["chosen_logps"], rtol=1e-9)
    assert torch.allclose(r.grad, closed["rejected_logps"], rtol=1e-9)


def test_asft_pushdown_at_small_pl_is_hand_value():
    # P_l = 1/2: λ P/(1-P) = λ
    r = torch.tensor([math.log(0.5)], dtype=torch.float64, requires_grad=True)
    objectives.asft(torch.tensor([-1.0], dtype=torch.float64), r, lam=0.4).sum().backward()
    assert math.isclose(r.grad.item(), 0.4, rel_tol=1e-12)


def test_log1mexp_value_at_zero_unchanged():
    # log(1 - e^-eps) = log(eps (1 - eps/2 + …)) ≈ log eps
    for dtype in (torch.float32, torch.float64):
        eps = torch.finfo(dtype).eps
        v = objectives.log1mexp(torch.zeros(1, dtype=dtype)).item()
        assert math.isclose(v, math.log(eps), rel_tol=1e-6)


# ---------------------------------------------------------------- hyperparameter ranges

BAD_VALUES = {  # per rule kind: values outside the range (NaN and ±inf for every number)
    "positive": [NAN, INF, -INF, 0.0, -1.0],
    "non-negative": [NAN, INF, -INF, -0.5],
    "open-unit": [NAN, INF, 0.0, 1.0, 1.5, -0.1],
    "below-half": [NAN, INF, -0.1, 0.5, 1.0],
    "finite-or-none": [NAN, INF, -INF],
    "bool": [1.0, "yes"],
    "choice": ["best", 3.0],
    "tensor-or-none": [0.5, "mask"],
}
BAD_STRINGS = {
    "positive": ["nan", "inf", "-inf", "0", "-1", "high"],
    "non-negative": ["nan", "inf", "-0.5", "x"],
    "open-unit": ["nan", "inf", "0", "1", "1.5"],
    "below-half": ["nan", "-0.1", "0.5", "x"],
    "finite-or-none": ["nan", "inf", "-inf", "big"],
    "bool": ["yes", "2"],
    "choice": ["best", ""],
    "tensor-or-none": ["1", "none"],
}
HP_CASES = [(n, k, r) for n, o in sorted(OBJECTIVES.items()) for k, r in o.hp_rules.items()]


def test_every_objective_has_rules_for_exactly_its_hyperparameters():
    for obj in OBJECTIVES.values():
        assert set(obj.hp_rules) == set(obj.defaults), obj.name
        assert all(isinstance(r, Rule) for r in obj.hp_rules.values())
    assert HP_CASES  # the parametrisation below is not empty


def test_registry_refuses_an_entry_without_rules():
    with pytest.raises(TypeError, match="hp_rules"):
        Objective("x", objectives.dpo, closed_form.d_dpo, "pairs", ("chosen_logps",))


@pytest.mark.parametrize("name, hp, rule", HP_CASES)
def test_out_of_range_python_values_refused(name, hp, rule):
    obj = OBJECTIVES[name]
    for bad in BAD_VALUES[rule.kind]:
        with pytest.raises(UserError) as e:
            obj.validate_hparams({hp: bad})
        msg = str(e.value)
        assert msg.startswith(f"objective {name!r}: {hp} must be {rule.describe()}, got ")
        assert "\n" not in msg and repr(bad) in msg
        with pytest.raises(UserError, match=rf"{hp} must be"):
            obj.check_hparams({hp: bad})


@pytest.mark.parametrize("name, hp, rule", HP_CASES)
def test_out_of_range_strings_refused(name, hp, rule):
    obj = OBJECTIVES[name]
    for raw in BAD_STRINGS[rule.kind]:
        with pytest.raises(UserError) as e:
            obj.parse_hparams([f"{hp}={raw}"])
        msg = str(e.value)
        assert msg.startswith(f"objective {name!r}: {hp} ") and "\n" not in msg, msg


@pytest.mark.parametrize("name, hp, rule", HP_CASES)
def test_out_of_range_refused_when_calling_the_objective(name, hp, rule):
    obj = OBJECTIVES[name]
    with pytest.raises(UserError, match=rf"objective {name!r}: {hp} must be"):
        obj(**_inputs(name), **{hp: BAD_VALUES[rule.kind][0]})


def test_message_format_example():
    with pytest.raises(UserError) as e:
        OBJECTIVES["dpo"].parse_hparams(["beta=nan"])
    assert str(e.value) == "objective 'dpo': beta must be positive and finite, got nan"


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_defaults_pass_validation(name):
    obj = OBJECTIVES[name]
    assert obj.validate_hparams(obj.defaults) == dict(obj.defaults)
    obj.check_hparams(obj.defaults)
    numbers = {k: v for k, v in obj.defaults.items() if isinstance(v, float)}
    assert obj.parse_hparams([f"{k}={v}" for k, v in numbers.items()]) == numbers


def test_boundaries_accepted():
    for name, hp, rule in HP_CASES:
        ok = {"non-negative": 0.0, "open-unit": 0.5, "positive": 1e-12, "finite-or-none": -3.0}
        ok["below-half"] = 0.0
        if rule.kind in ok:
            assert OBJECTIVES[name].validate_hparams({hp: ok[rule.kind]}) == {hp: ok[rule.kind]}
    assert OBJECTIVES["kto"].parse_hparams(["kl_estimate=none"]) == {"kl_estimate": None}


def test_unknown_names_are_user_errors_with_the_old_messages():
    with pytest.raises(UserError, match="has no hyperparameter"):
        OBJECTIVES["dpo"].validate_hparams({"tau": 1.0})
    with pytest.raises(UserError, match="has no hyperparameter"):
        OBJECTIVES["dpo"].parse_hparams(["tau=1"])
    with pytest.raises(UserError, match="key=value"):
        OBJECTIVES["dpo"].parse_hparams(["beta"])
    with pytest.raises(UserError, match="unknown objective 'nope'; choose from"):
        objectives.get("nope")


def test_analysis_helpers_validate_hparams():
    with pytest.raises(UserError, match="lam must be non-negative"):
        objectives.prob_partials("asft", torch.tensor([0.3]), torch.tensor([0.2]), lam=-1.0)
    with pytest.raises(UserError, match="tau must be positive"):
        objectives.tabular_logit_grad(
            "ipo",
            torch.zeros(4),
            ref_logps_K=torch.full((4,), -math.log(4)),
            hparams={"tau": 0.0},
            chosen=torch.tensor([0]),
            rejected=torch.tensor([1]),
        )
