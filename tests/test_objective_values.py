"""Hand-computed values: two or more per objective. Every expected number is derived in the
comment beside it from the formula in docs/science.md §3, not by calling the code."""

import math

import pytest
import torch

from objectives import OBJECTIVES

LOG2 = math.log(2)
t = torch.tensor


def pair(obj, c, r, rc=None, rr=None, **hp):
    kw = {"chosen_logps": t(c, dtype=torch.float64), "rejected_logps": t(r, dtype=torch.float64)}
    if rc is not None:
        kw |= {
            "ref_chosen_logps": t(rc, dtype=torch.float64),
            "ref_rejected_logps": t(rr, dtype=torch.float64),
        }
    return OBJECTIVES[obj](**kw, **hp)


def group(obj, logps, rewards, **kw):
    return OBJECTIVES[obj](
        logps=t(logps, dtype=torch.float64), rewards=t(rewards, dtype=torch.float64), **kw
    )


def close(a, b, tol=1e-6):
    assert torch.allclose(a, t(b, dtype=a.dtype), atol=tol, rtol=tol), (a, b)


def test_sft():
    close(OBJECTIVES["sft"](chosen_logps=t([-0.5, -2.0])), [0.5, 2.0])


def test_dpo():
    # h = (-1 - -2) - (-3 - -2) = 2, β h = 0.2  ->  -log σ(0.2) = log(1 + e^-0.2)
    # h = 0 -> log 2
    close(
        pair("dpo", [-1.0, -4.0], [-3.0, -4.0], [-2.0, -1.0], [-2.0, -1.0], beta=0.1),
        [math.log(1 + math.exp(-0.2)), LOG2],
    )
    # β = 1, h = log 3: σ(log 3) = 3/4  ->  log(4/3)
    close(pair("dpo", [math.log(0.3)], [math.log(0.1)], [0.0], [0.0], beta=1.0), [math.log(4 / 3)])


def test_ipo():
    # τ = 0.1: target 1/(2τ) = 5, h = 2 -> (2-5)² = 9;  τ = 0.25: target 2, h = 2 -> 0
    close(pair("ipo", [-1.0], [-3.0], [-2.0], [-2.0], tau=0.1), [9.0])
    close(pair("ipo", [-1.0], [-3.0], [-2.0], [-2.0], tau=0.25), [0.0])
    # τ = 0.5: target 1, h = -1 -> (-1-1)² = 4
    close(pair("ipo", [-2.0], [-1.0], [0.0], [0.0], tau=0.5), [4.0])


def test_slic():
    # δ = 1: margin 2 -> max(0, -1) = 0; margin -0.5 -> 1.5; with λ = 0.5 add 0.5·2 = 1 -> 2.5
    close(pair("slic", [-1.0, -2.0], [-3.0, -1.5], delta=1.0), [0.0, 1.5])
    close(pair("slic", [-2.0], [-1.5], delta=1.0, lam=0.5), [2.5])


def test_orpo():
    # P_w = 0.5 (odds 1), P_l = 0.2 (odds 1/4): log σ(log 4) = log 0.8
    #   -> -log 0.5 - 0.1 log 0.8;  P_w = P_l = 0.5: -log 0.5 - 0.1 log σ(0) = 1.1 log 2
    close(
        pair("orpo", [math.log(0.5), math.log(0.5)], [math.log(0.2), math.log(0.5)], lam=0.1),
        [LOG2 - 0.1 * math.log(0.8), 1.1 * LOG2],
    )


def test_simpo():
    # β = 2, γ = 1: 2·(-1 + 1.5) - 1 = 0 -> log 2;  2·0 - 1 = -1 -> -log σ(-1) = log(1 + e)
    close(
        pair("simpo", [-1.0, -0.5], [-1.5, -0.5], beta=2.0, gamma=1.0), [LOG2, math.log(1 + math.e)]
    )


def test_asft():
    # λ = 0.1, P_w = P_l = 0.5: -(1.1) log 0.5 - 0.1 log 0.5 = 1.2 log 2
    close(pair("asft", [math.log(0.5)], [math.log(0.5)], lam=0.1), [1.2 * LOG2])
    # λ = 1, P_w = 0.8, P_l = 0.2: -2 log 0.8 - log(0.8) = -3 log 0.8
    close(pair("asft", [math.log(0.8)], [math.log(0.2)], lam=1.0), [-3 * math.log(0.8)])


def test_kto():
    # z0 = 0, β = 1: ρ = (0, 0) -> ½ + ½ = 1;  ρ = (log 3, -log 3) -> ¼ + ¼ = ½
    # (ρ_w = -1 - (-1 - log 3) = log 3, ρ_l = (-2 - log 3) - (-2) = -log 3)
    close(
        pair(
            "kto",
            [-1.0, -1.0],
            [-2.0, -2.0 - math.log(3)],
            [-1.0, -1.0 - math.log(3)],
            [-2.0, -2.0],
            beta=1.0,
            kl_estimate=0.0,
        ),
        [1.0, 0.5],
    )
    # batch estimate: ρ = (2, 0) -> z0 = max(0, mean(2, 0)) = 1 -> 2(1 - σ(1)) = 2/(1 + e)
    # (ρ_w = -1 - (-3) = 2, ρ_l = -2 - (-2) = 0; log-probs must be <= 0)
    close(pair("kto", [-1.0], [-2.0], [-3.0], [-2.0], beta=1.0), [2 / (1 + math.e)])


def test_bon():
    # best of row 0 is index 1 (ℓ = -2), of row 1 index 0 (ℓ = -1)
    close(group("bon", [[-1.0, -2.0, -3.0]] * 2, [[0.1, 0.9, 0.5], [0.7, 0.1, 0.2]]), [2.0, 1.0])


@pytest.mark.parametrize(
    "pushdown, expected",
    [
        ("worst", 2.0 + 0.5 * -1.0),  # best ℓ = -2, worst (reward 0.1) ℓ = -1
        ("mean", 2.0 + 0.5 * -2.0),  # worse samples: ℓ = -1 and -3, mean -2
    ],
)
def test_bon_pushdown(pushdown, expected):
    close(
        group("bon_pushdown", [[-1.0, -2.0, -3.0]], [[0.1, 0.9, 0.5]], beta=0.5, pushdown=pushdown),
        [expected],
    )


def test_rwr():
    # β = 1, r = (0, log 2): w = (1, 2); ℓ = (-1, -2): -(−1 − 4)/2 = 2.5
    kw = dict(logps=[[-1.0, -2.0]], rewards=[[0.0, LOG2]], beta=1.0)
    close(group("rwr", **kw, normalize=False), [2.5])
    # normalised: w / mean(w) = (2/3, 4/3): (2/3 + 8/3)/2 = 5/3; clipped at 1.2: (2/3 + 2.4)/2
    close(group("rwr", **kw, normalize=True), [5 / 3])
    close(group("rwr", **kw, normalize=True, w_max=1.2), [(2 / 3 + 2.4) / 2])


def test_reinforce():
    # z-scored r = (1, 3): Â = (-1, 1);  ℓ = (-1, -2): -(1 - 2)/2 = 0.5
    close(group("reinforce", [[-1.0, -2.0]], [[1.0, 3.0]]), [0.5], tol=1e-5)
    # baseline 0: Â = (1, 3): -(-1 - 6)/2 = 3.5
    close(group("reinforce", [[-1.0, -2.0]], [[1.0, 3.0]], baseline=0.0), [3.5])


def test_ppo():
    old = t([[-1.0, -2.0]], dtype=torch.float64)
    # ratio 1.5, ε = 0.2, Â = (1, -1): min(1.5, 1.2) = 1.2; min(-1.5, -1.2) = -1.5 -> -(-0.3)/2
    loss = OBJECTIVES["ppo"](
        logps=old + math.log(1.5),
        old_logps=old,
        rewards=t([[1.0, -1.0]], dtype=torch.float64),
        baseline=0.0,
    )
    close(loss, [0.15])
    # ratio 1, Â = (2, 0): -(2 + 0)/2 = -1
    loss = OBJECTIVES["ppo"](
        logps=old.clone(), old_logps=old, rewards=t([[2.0, 0.0]], dtype=torch.float64), baseline=0.0
    )
    close(loss, [-1.0])


# ---------------------------------------------------------------- TRL's other DPO loss types
# Inputs reused below: ρ_w = -1 - (-1 - log 3) = log 3, ρ_l = (-2 - log 3) - (-2) = -log 3, so
# σ(ρ_w) = 3/4, σ(ρ_l) = 1/4, h = 2 log 3, σ(h) = 9/10 (β = 1).
L3 = math.log(3)
LOG3_PAIR = ([-1.0], [-2.0 - L3], [-1.0 - L3], [-2.0])


def test_hinge():
    # h = (-1 - -2) - (-3 - -2) = 2: β = 0.1 -> max(0, 1 - 0.2) = 0.8; β = 1 -> max(0, -1) = 0
    close(pair("hinge", [-1.0, -1.0], [-3.0, -3.0], [-2.0, -2.0], [-2.0, -2.0]), [0.8, 0.8])
    close(pair("hinge", [-1.0], [-3.0], [-2.0], [-2.0], beta=1.0), [0.0])
    # h = -2 - (-1) = -1, β = 0.5 -> 1 + 0.5 = 1.5
    close(pair("hinge", [-2.0], [-1.0], [0.0], [0.0], beta=0.5), [1.5])


def test_nca_pair():
    # β = 1, ρ = (0, 0): -log ½ - ½ log ½ - ½ log ½ = 2 log 2
    close(pair("nca_pair", [-1.0], [-2.0], [-1.0], [-2.0], beta=1.0), [2 * LOG2])
    # ρ = (log 3, -log 3): -log ¾ - ½ log ¼ - ½ log ¾ = 1.5 log(4/3) + log 2
    close(pair("nca_pair", *LOG3_PAIR, beta=1.0), [1.5 * math.log(4 / 3) + LOG2])


def test_bco_pair():
    # ρ = (log 3, -log 3), β = 1, δ = 0: -log σ(log 3) - log σ(log 3) = 2 log(4/3)
    close(pair("bco_pair", *LOG3_PAIR, beta=1.0), [2 * math.log(4 / 3)])
    # ρ_w = -1 - (-3) = 2, ρ_l = 0: δ = 0 -> log(1 + e^-2) + log 2; δ = None -> the batch mean
    # of β ρ, (2 + 0)/2 = 1 -> -log σ(1) - log σ(1) = 2 log(1 + e^-1); δ = 2 -> log 2 + log(1+e^-2)
    args = ([-1.0], [-2.0], [-3.0], [-2.0])
    close(pair("bco_pair", *args, beta=1.0), [math.log(1 + math.exp(-2)) + LOG2])
    close(pair("bco_pair", *args, beta=1.0, delta=None), [2 * math.log(1 + math.exp(-1))])
    close(pair("bco_pair", *args, beta=1.0, delta=2.0), [LOG2 + math.log(1 + math.exp(-2))])


def test_robust():
    # h = 0: [-(1-ε) log ½ + ε log ½]/(1 - 2ε) = log 2 for every ε
    close(pair("robust", [-1.0], [-2.0], [-1.0], [-2.0], beta=1.0, eps=0.3), [LOG2])
    # ε = 0.25, β h = log 3: [-¾ log ¾ + ¼ log ¼]/½ = 1.5 log(4/3) - log 2
    close(
        pair("robust", [-1.0], [-1.0 - L3], [-1.0], [-1.0], beta=1.0, eps=0.25),
        [1.5 * math.log(4 / 3) - LOG2],
    )
    # ε = 0 is DPO: log(1 + e^-0.2) at h = 2, β = 0.1
    close(pair("robust", [-1.0], [-3.0], [-2.0], [-2.0], eps=0.0), [math.log(1 + math.exp(-0.2))])


def test_exo_pair():
    # β h = log 3, ε = ¼: q = (¾, ¼) equals the smoothed label p = (1-ε, ε), so KL = 0
    close(pair("exo_pair", [-1.0], [-1.0 - L3], [-1.0], [-1.0], beta=1.0, eps=0.25), [0.0])
    # h = 0, ε = ½: q = p = (½, ½) -> 0;  β h = log 3, ε = ½: ¾ log(¾/½) + ¼ log(¼/½)
    close(pair("exo_pair", [-1.0], [-2.0], [-1.0], [-2.0], beta=1.0, eps=0.5), [0.0])
    close(
        pair("exo_pair", [-1.0], [-1.0 - L3], [-1.0], [-1.0], beta=1.0, eps=0.5),
        [0.75 * math.log(1.5) - 0.25 * LOG2],
    )


def test_sppo_hard():
    # β = ½: 1/(2β) = 1; ρ = (2, 0) -> (2-1)² + (0+1)² = 2; ρ = (1, -1) -> 0
    close(pair("sppo_hard", [-1.0], [-2.0], [-3.0], [-2.0], beta=0.5), [2.0])
    close(pair("sppo_hard", [-1.0], [-3.0], [-2.0], [-2.0], beta=0.5), [0.0])
    # β = 0.1: 1/(2β) = 5, ρ = (0, 0) -> 25 + 25
    close(pair("sppo_hard", [-1.0], [-2.0], [-1.0], [-2.0]), [50.0])


def test_apo_zero_and_down():
    # ρ = (log 3, -log 3), β = 1: zero 1 - ¾ + ¼ = ½;  down ¾ + 1 - σ(2 log 3) = ¾ + 1 - 9/10
    close(pair("apo_zero", *LOG3_PAIR, beta=1.0), [0.5])
    close(pair("apo_down", *LOG3_PAIR, beta=1.0), [0.85])
    # ρ = (0, 0): zero 1 - ½ + ½ = 1;  down ½ + 1 - ½ = 1
    close(pair("apo_zero", [-1.0], [-2.0], [-1.0], [-2.0], beta=1.0), [1.0])
    close(pair("apo_down", [-1.0], [-2.0], [-1.0], [-2.0], beta=1.0), [1.0])


def test_discopop():
    # h = 0: m = σ(0) = ½ -> ½ log 2 + ½ e^0
    close(pair("discopop", [-1.0], [-2.0], [-1.0], [-2.0]), [0.5 * (LOG2 + 1)])
    # β = τ = 1, x = log 3: m = ¾ -> ¼ log(4/3) + ¾ · ⅓
    close(
        pair("discopop", [-1.0], [-1.0 - L3], [-1.0], [-1.0], beta=1.0, tau=1.0),
        [0.25 * math.log(4 / 3) + 0.25],
    )


def test_aot_ranks_margins_over_the_batch():
    # policy margins ℓ_w - ℓ_l = (2, 0), reference margins (0, 1): sorted (0, 2) and (0, 1),
    # δ = (0, 1). Row 0's margin is the larger (rank 1): log(1 + e^-1); row 1 (rank 0): log 2.
    # (Per-pair DPO would give log(1 + e^-2) and log(1 + e).)
    close(
        pair("aot", [-1.0, -2.0], [-3.0, -2.0], [-1.0, -1.0], [-1.0, -2.0], beta=1.0),
        [math.log(1 + math.exp(-1)), LOG2],
    )
    # one pair, δ = h = log 3, ε = ¼: -¾ log ¾ - ¼ log ¼
    close(
        pair("aot", [-1.0], [-1.0 - L3], [-1.0], [-1.0], beta=1.0, eps=0.25),
        [0.75 * math.log(4 / 3) + 0.25 * math.log(4)],
    )


def test_aot_unpaired_ranks_each_side_separately():
    # ρ_w = (-1 - -3, -3 - -3) = (2, 0), ρ_l = (-2 - -1, -1 - -4) = (-1, 3): sorted ρ_w (0, 2),
    # sorted ρ_l (-1, 3), δ = (1, -1). Row 1 holds ρ_w rank 0: log(1 + e^-1); row 0 rank 1:
    # log(1 + e). (Per-pair: h = (3, -3).)
    close(
        pair("aot_unpaired", [-1.0, -3.0], [-2.0, -1.0], [-3.0, -3.0], [-1.0, -4.0], beta=1.0),
        [math.log(1 + math.e), math.log(1 + math.exp(-1))],
    )
    # one pair equals the smoothed logistic loss of h: ε = 0, β h = log 3 -> log(4/3)
    close(pair("aot_unpaired", [-1.0], [-1.0 - L3], [-1.0], [-1.0], beta=1.0), [math.log(4 / 3)])


# ---------------------------------------------------------------- convention switches


def test_length_norm_declares_means_without_changing_the_formula():
    # the value on given inputs is the same; what changes is what the caller must pass
    for name in ("sft", "dpo", "ipo"):
        obj = OBJECTIVES[name]
        assert not obj.uses_mean_logps() and obj.uses_mean_logps({"length_norm": "mean"})
    close(pair("ipo", [-1.0], [-3.0], [-2.0], [-2.0], tau=0.1, length_norm="mean"), [9.0])
    close(OBJECTIVES["sft"](chosen_logps=t([-0.5]), length_norm="mean"), [0.5])
    assert OBJECTIVES["orpo"].uses_mean_logps() and OBJECTIVES["simpo"].uses_mean_logps()


def _kto_one_pair(kl_logps, ref_kl_logps, **hp):
    """KTO on the pair ρ_w = -1 - (-3) = 2, ρ_l = 0 with mismatched-pair log-probs."""
    return OBJECTIVES["kto"](
        chosen_logps=t([-1.0], dtype=torch.float64),
        rejected_logps=t([-2.0], dtype=torch.float64),
        ref_chosen_logps=t([-3.0], dtype=torch.float64),
        ref_rejected_logps=t([-2.0], dtype=torch.float64),
        kl_logps=t(kl_logps, dtype=torch.float64),
        ref_kl_logps=t(ref_kl_logps, dtype=torch.float64),
        **hp,
    )


def test_kto_unpaired_form_and_mismatched_z0():
    args = ([-1.0, -1.0], [-2.0, -2.0 - L3], [-1.0, -1.0 - L3], [-2.0, -2.0])
    # test_kto's per-pair values (1, ½), averaged over the pair's two responses: (½, ¼)
    close(pair("kto", *args, beta=1.0, kl_estimate=0.0, form="unpaired"), [0.5, 0.25])
    # mismatched ℓ - ℓ_ref = (-1 - -4, -2 - -3) = (3, 1): z0 = 2 ->
    # (1 - σ(0)) + (1 - σ(2)) = ½ + 1/(1 + e²)   (the batch z0 would be 1: 2/(1 + e))
    got = _kto_one_pair([-1.0, -2.0], [-4.0, -3.0], beta=1.0, z0="mismatched")
    close(got, [0.5 + 1 / (1 + math.e**2)])
    # a mismatched mean below 0 is clamped: ℓ - ℓ_ref = (-2, 0) -> z0 = 0 -> 1 - σ(2) + ½;
    # the unpaired form halves it; the batch rule ignores the mismatched inputs (z0 = 1)
    got = _kto_one_pair([-3.0, -3.0], [-1.0, -3.0], beta=1.0, z0="mismatched")
    close(got, [1 / (1 + math.e**2) + 0.5])
    got = _kto_one_pair([-3.0, -3.0], [-1.0, -3.0], beta=1.0, z0="mismatched", form="unpaired")
    close(got, [(1 / (1 + math.e**2) + 0.5) / 2])
    close(_kto_one_pair([-3.0, -3.0], [-1.0, -3.0], beta=1.0), [2 / (1 + math.e)])
    with pytest.raises(ValueError, match="z0='mismatched' needs kl_logps"):
        pair("kto", [-1.0], [-2.0], [-3.0], [-2.0], z0="mismatched")


def test_orpo_nll_over_all_tokens():
    # P_w = ½, P_l = 0.2 (test_orpo): odds term -0.1 log 0.8; NLL from the whole sequence's
    # mean log-prob log ¼ instead of the response's: log 4 - 0.1 log 0.8
    got = OBJECTIVES["orpo"](
        chosen_logps=t([math.log(0.5)], dtype=torch.float64),
        rejected_logps=t([math.log(0.2)], dtype=torch.float64),
        chosen_full_logps=t([math.log(0.25)], dtype=torch.float64),
        nll="all",
    )
    close(got, [math.log(4) - 0.1 * math.log(0.8)])
    assert OBJECTIVES["orpo"].required_inputs({"nll": "all"})[-1] == "chosen_full_logps"
    with pytest.raises(ValueError, match="nll='all' needs chosen_full_logps"):
        pair("orpo", [math.log(0.5)], [math.log(0.2)], nll="all")


def test_asft_tempered_beta():
    # P_w = 0.8 (r_w = log 4), P_l = 0.2 (r_l = -log 4), λ = 1:
    # β = 2: σ(2 log 4) = 16/17 on both sides -> -log 0.8 - 2 log(16/17)
    # β = ½: σ(log 2) = ⅔ -> -log 0.8 - 2 log ⅔;  β = 1 is test_asft's -3 log 0.8
    lw, ll = [math.log(0.8)], [math.log(0.2)]
    close(pair("asft", lw, ll, lam=1.0, beta=2.0), [math.log(1.25) + 2 * math.log(17 / 16)])
    close(pair("asft", lw, ll, lam=1.0, beta=0.5), [math.log(1.25) + 2 * math.log(1.5)])
    close(pair("asft", lw, ll, lam=1.0, beta=1.0), [-3 * math.log(0.8)])


@pytest.mark.parametrize("beta,tau", [(0.1, 0.05), (1.0, 0.05), (0.5, 1.0)])
def test_discopop_slope_at_the_reference(beta, tau):
    # at h = 0 (policy = reference), d/dh of (1-m)(-log σ(βh)) + m e^{-βh}, m = σ(βh/τ):
    # β[-(ln 2)/(4τ) - ¼ + 1/(4τ) - ½] = β[(1 - ln 2)/(4τ) - ¾]; positive for τ < (1 - ln 2)/3,
    # so at TRL's τ = 0.05 a descent step from the reference lowers the margin
    lw = t([-1.0], dtype=torch.float64, requires_grad=True)
    loss = OBJECTIVES["discopop"](
        chosen_logps=lw,
        rejected_logps=t([-2.0], dtype=torch.float64),
        ref_chosen_logps=t([-1.0], dtype=torch.float64),
        ref_rejected_logps=t([-2.0], dtype=torch.float64),
        beta=beta,
        tau=tau,
    )
    loss.sum().backward()
    close(lw.grad, [beta * ((1 - LOG2) / (4 * tau) - 0.75)])
    assert (lw.grad.item() > 0) == (tau < (1 - LOG2) / 3)
