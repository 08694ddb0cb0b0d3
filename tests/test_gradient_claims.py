"""Each gradient claim of the two papers (docs/science.md §4) as a test."""

import math

import pytest
import torch

from toy import displacement, kl_modes, mass, prob_space
from toy.bandit import reference_probs
from toy.gradients import _policy, main, parse, run, steps_to_mass

X_W, X_L = prob_space.triangle_grid(30, margin=0.01)


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("refs", [(0.5, 0.5), (0.01, 0.3), (0.7, 0.001)])
def test_dpo_ratio_is_xw_over_xl(beta, refs):
    df = prob_space.descent_field("dpo", X_W, X_L, *refs, beta=beta)
    assert torch.allclose(torch.tensor(df.ratio.values), X_W / X_L, rtol=1e-9)


@pytest.mark.parametrize(
    "name, hp",
    [
        ("ipo", {"tau": 0.1}),
        ("simpo", {"beta": 2.0}),
        ("slic", {"delta": 100.0}),
        ("simpo", {"gamma": 3.0}),
    ],
)
def test_log_ratio_losses_share_dpos_ratio(name, hp):
    df = prob_space.descent_field(name, X_W, X_L, 0.2, 0.4, **hp)
    ok = torch.tensor(df.ratio.notna().values)  # IPO: undefined exactly at h = target
    assert ok.float().mean() > 0.99
    assert torch.allclose(torch.tensor(df.ratio.values)[ok], (X_W / X_L)[ok], rtol=1e-8)


@pytest.mark.parametrize("lam", [0.1, 1.0, 10.0])
def test_asft_ratio_below_one_and_closed_form(lam):
    df = prob_space.descent_field("asft", X_W, X_L, lam=lam)
    ratio = torch.tensor(df.ratio.values)
    assert torch.allclose(ratio, prob_space.asft_ratio(X_W, X_L, lam), rtol=1e-10)
    assert (ratio < 1).all()
    # the supremum over the triangle is approached at x_w -> 1 - x_l: λ/(1+λ) < 1
    assert ratio.max() < lam / (1 + lam) + 1e-12


def test_asft_pushdown_bounded_dpo_unbounded_as_xl_vanishes():
    x_l = torch.tensor([1e-2, 1e-4, 1e-6, 1e-8], dtype=torch.float64)
    x_w = torch.full_like(x_l, 0.5)
    _, asft_l = prob_space.autograd_partials("asft", x_w, x_l, lam=0.1)
    _, dpo_l = prob_space.autograd_partials("dpo", x_w, x_l, 0.5, 0.5, beta=0.1)
    assert torch.allclose(asft_l, 0.1 / (1 - x_l))  # -> λ: bounded
    assert (dpo_l[1:] / dpo_l[:-1] > 50).all()  # grows like 1/x_l


@pytest.mark.parametrize("name", ["dpo", "ipo", "slic", "orpo", "simpo", "asft", "kto", "sft"])
def test_descent_field_matches_autograd(name):
    df = prob_space.descent_field(name, X_W, X_L, 0.3, 0.2)
    g_w, g_l = prob_space.autograd_partials(name, X_W, X_L, 0.3, 0.2)
    assert torch.allclose(-torch.tensor(df.u.values), g_w, rtol=1e-8, atol=1e-12)
    assert torch.allclose(-torch.tensor(df.v.values), g_l, rtol=1e-8, atol=1e-12)


def test_one_step_mass_accounting_tabular_dpo():
    theta, logp_fn = _policy("tabular")
    ref = reference_probs(dtype=torch.float32).log()
    w, l = torch.tensor([70]), torch.tensor([16])
    acc = mass.one_step_mass("dpo", theta, logp_fn, ref, 0.1, w, l)
    assert abs(acc.chosen_gain - acc.rejected_loss + acc.others_change) < 1e-9
    assert acc.chosen_gain > 0 and acc.rejected_loss > 0
    others = torch.ones(100, dtype=torch.bool)
    others[[70, 16]] = False
    d = acc.delta_logp[others]  # DPO leaves other logits alone: one common shift
    assert torch.allclose(d, d[0].expand_as(d), atol=1e-9)
    # ... so freed mass goes where π already is: the heavy edge arms 0 and 99 gain most
    assert set(acc.delta_p.topk(3).indices.tolist()) == {70, 0, 99}
    # first order equals a tiny actual step (float64 tabular policy at π_ref)
    ref64 = reference_probs().log()
    exact = mass.one_step_mass("dpo", ref64.clone(), _log_softmax, ref64, 1e-4, w, l, exact=True)
    first = mass.one_step_mass("dpo", ref64.clone(), _log_softmax, ref64, 1e-4, w, l)
    assert torch.allclose(exact.delta_p, first.delta_p, rtol=1e-3, atol=1e-14)


def _log_softmax(theta):
    return torch.log_softmax(theta, -1)


def test_one_step_mass_sft_moves_every_arm():
    theta, logp_fn = _policy("tabular")
    ref = reference_probs(dtype=torch.float32).log()
    acc = mass.one_step_mass("sft", theta, logp_fn, ref, 0.1, torch.tensor([70]))
    assert acc.chosen_gain > 0 and (acc.delta_p != 0).all()
    # tabular MLE: Δℓ_y = η(‖π‖² - π_w - π_y) for y ≠ w: heavy arms lose, light arms can gain
    pi = logp_fn(theta).exp().double()
    expected = 0.1 * ((pi @ pi) - pi[70] - pi)
    expected[70] = 0.1 * ((pi @ pi) - 2 * pi[70] + 1)
    assert torch.allclose(acc.delta_logp.double(), expected, atol=1e-6)


def test_lemma_6_2_margin_inequality_and_inner_product_case():
    theta, logp_fn = _policy("tabular")
    g = torch.Generator().manual_seed(1)
    chosen = torch.randint(0, 100, (64,), generator=g)
    rejected = (chosen + torch.randint(1, 100, (64,), generator=g)) % 100
    out = mass.lemma_6_2(theta, logp_fn, chosen, rejected, lr=0.1)
    assert out["first_order_margin_gain"] > 0 and out["margin_holds"]
    # data built for the second part: heavy, distinct arms give E[∇ℓ_w]ᵀE[∇ℓ_l] < 0
    out = mass.lemma_6_2(theta, logp_fn, torch.tensor([0]), torch.tensor([99]), lr=0.1)
    assert out["inner_product"] < 0
    assert out["margin_holds"] and out["logp_w_holds"] and out["logp_l_holds"]
    # with c2 = 0 the update is SFT: identical next-step values
    same = mass.lemma_6_2(theta, logp_fn, torch.tensor([0]), torch.tensor([99]), c2=0.0)
    assert same["margin_with_c2"] == same["margin_c2_zero"]


def test_likelihood_displacement_regimes():
    table = displacement.displacement_table(("dpo", "ipo", "sft", "asft"), (0.99, 0.0, -0.5))
    key = table.set_index(["objective", "policy", "cos"], drop=False)
    assert key.loc[("dpo", "linear", 0.99), "displaced"].item()
    assert key.loc[("ipo", "linear", 0.99), "displaced"].item()
    assert not key.loc[("dpo", "linear", -0.5), "displaced"].item()
    assert (table.loc[table.policy == "tabular", "delta_logp_w"] >= 0).all()
    assert not table.loc[table.objective.isin(["sft", "asft"]), "displaced"].any()
    # the margin still grows under DPO while ℓ_w falls
    assert key.loc[("dpo", "linear", 0.99), "delta_margin"].item() > 0


def test_kl_four_category_first_order_values():
    """Hand-derived: logits forward step Δz = η(q - p) leaves p₀ unchanged to first order
    (Σ p Δz = -0.1η, Δz₀ = -0.1η); reverse raises p₂ by 0.1·(Δz₂ - Σ pΔz) ≈ 0.0287η."""
    p, q = (
        torch.tensor(kl_modes.P0, dtype=torch.float64),
        torch.tensor(kl_modes.Q, dtype=torch.float64),
    )
    eta = 1e-5
    fwd = kl_modes.kl_step(p, q, "forward", "logits", eta) - p
    rev = kl_modes.kl_step(p, q, "reverse", "logits", eta) - p
    assert abs(fwd[0].item()) < 1e-9 and math.isclose(fwd[2].item() / eta, 0.06, rel_tol=1e-3)
    assert math.isclose(rev[2].item() / eta, 0.0287, rel_tol=1e-2)


def test_kl_annotations_report():
    table = kl_modes.annotation_table(n_repeats=50).set_index("parametrisation")
    # neither of paper A's annotations reproduces under any of the four readings ...
    assert not table["A: reverse raises 2 more"].any()
    assert not table["B: forward raises 0"].any()
    # ... but under logits (exact or sampled) both hold with the directions exchanged
    for param in ("logits", "sample"):
        assert table.loc[param, "A swapped: forward raises 2 more"]
        assert table.loc[param, "B swapped: reverse raises 0"]


def test_reverse_kl_concentrates_faster_on_the_bandit():
    d = kl_modes.bandit_kl_curves(steps=100).set_index(["parametrisation", "direction", "step"])
    for param in ("logits", "mirror"):
        assert (
            d.loc[(param, "reverse", 100), "mass_near_optimum"]
            > d.loc[(param, "forward", 100), "mass_near_optimum"]
        )


def test_project_simplex():
    v = torch.tensor([[0.5, 0.8, -0.2], [0.2, 0.3, 0.5]], dtype=torch.float64)
    p = kl_modes.project_simplex(v, floor=0.0)
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(p[0], torch.tensor([0.35, 0.65, 0.0], dtype=torch.float64))
    assert torch.allclose(p[1], v[1])


def test_steps_to_mass_tiny():
    df = steps_to_mass(["bon", "dpo"], reward="R2", seeds=(0,), rounds=20, lr=1e-2)
    assert list(df.objective) == ["bon", "dpo"]
    row = df.iloc[0]
    assert row["steps to 50%"] <= row["steps to 90%"] or math.isnan(row["steps to 90%"])


def test_cli_point_and_field(tmp_path, capsys):
    table = run(
        parse(["point", "--objective", "dpo", "--x-w", "0.3", "--x-l", "0.1", "--hp", "beta=0.5"])
    )
    assert math.isclose(table.ratio.item(), 3.0)
    out = tmp_path / "f.csv"
    assert main(["field", "--objective", "asft", "--grid", "5", "--out", str(out)]) == 0
    assert out.exists() and "ratio" in capsys.readouterr().out
