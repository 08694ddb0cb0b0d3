"""Hand-computed values: two or more per objective. Every expected number is derived in the
comment beside it from the formula in science.md §3, not by calling the code."""

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
