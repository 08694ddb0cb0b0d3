"""The bandit problem and its vectorised data pipeline, against plain loops and sampling."""

import math

import pytest
import torch

from rounds import build_pairs, objective_inputs
from toy.bandit import reference_probs, reward_vector
from toy.data import round_of_arms, sample_arms
from toy.metrics import METRIC_KEYS, Recorder


def test_reference_exact_and_matches_sampled_histogram():
    ref = reference_probs()
    assert ref.shape == (100,) and math.isclose(ref.sum().item(), 1.0, rel_tol=1e-12)
    assert abs(ref[0].item() - 0.078) < 1e-3 and abs(ref[99].item() - 0.042) < 1e-3
    assert 10 <= int(ref[1:99].argmax()) + 1 <= 20  # interior mode near arm 16
    g = torch.Generator().manual_seed(0)
    n = 2_000_000
    c = -0.7 + 0.4 * torch.tan(math.pi * (torch.rand(n, generator=g, dtype=torch.float64) - 0.5))
    u = torch.tanh(c)
    bins = ((u + 1) / 2 * 100).floor().clamp(0, 99).long()
    hist = torch.bincount(bins, minlength=100).double() / n
    se = (ref * (1 - ref) / n).sqrt()
    assert ((hist - ref).abs() <= 5 * se + 1e-6).all()


def test_rewards():
    r1, r2 = reward_vector("R1"), reward_vector("R2")
    assert r1.argmax() == 70 and r2.argmax() == 20 and r1.max() == 1.0
    assert math.isclose(r1[80].item(), math.exp(-1.0))  # one width from the peak
    assert math.isclose(reward_vector("R1_w20")[90].item(), math.exp(-1.0))
    with pytest.raises(ValueError, match="unknown reward 'R3'"):
        reward_vector("R3")
    with pytest.raises(ValueError, match="NaN"):
        reward_vector([float("nan")] * 100)
    with pytest.raises(ValueError, match="shape"):
        reward_vector([0.0] * 3)


def test_build_pairs_equals_plain_loop():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randint(0, 4, (2, 3, 6), generator=g).double() / 3  # many ties
    for threshold in (0.0, 0.4):
        w, l, valid = build_pairs(rewards, threshold)
        for s in range(2):
            for p in range(3):
                expected = []
                for i in range(6):
                    for j in range(i + 1, 6):
                        ri, rj = rewards[s, p, i].item(), rewards[s, p, j].item()
                        if abs(ri - rj) > threshold:
                            expected.append((i, j) if ri > rj else (j, i))
                got = [(int(a), int(b)) for a, b, v in zip(w[s, p], l[s, p], valid[s, p]) if v]
                assert got == expected


def test_sample_arms_follows_probs():
    g = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(1, 2, 8, generator=g), -1)
    arms = sample_arms(probs, torch.rand(1, 2, 200_000, generator=g))
    for p in range(2):
        freq = torch.bincount(arms[0, p], minlength=8).float() / 200_000
        assert torch.allclose(freq, probs[0, p], atol=5e-3)


def test_exact_expected_reward_equals_monte_carlo():
    g = torch.Generator().manual_seed(3)
    logp = torch.log_softmax(torch.randn(1, 4, 100, generator=g), -1)
    reward = reward_vector("R2", dtype=torch.float32)
    rec = Recorder(0, 1, 100, 1, 2)
    rec.record_eval(0, logp)
    exact = (rec.mean_p[0] @ reward).item()
    arms = sample_arms(logp.exp(), torch.rand(1, 4, 100_000, generator=g))
    assert abs(reward[arms].mean().item() - exact) < 5e-3


def _plain_metrics(logp_EK, reward, ref_logp):
    """Per-context loops over the formulas of docs/science.md §2."""
    out = {k: 0.0 for k in ("reward", "kl", "kl_fwd", "ent", "opt")}
    for x in range(logp_EK.shape[0]):
        for y in range(logp_EK.shape[1]):
            lp, p, lr = logp_EK[x, y].item(), math.exp(logp_EK[x, y].item()), ref_logp[y].item()
            out["reward"] += p * reward[y].item()
            out["kl"] += p * (lp - lr)
            out["kl_fwd"] += math.exp(lr) * (lr - lp)
            out["ent"] -= p * lp
        out["opt"] += math.exp(logp_EK[x, int(reward.argmax())].item())
    return {k: v / logp_EK.shape[0] for k, v in out.items()}


def test_recorder_metrics_equal_plain_loops():
    g = torch.Generator().manual_seed(4)
    reward, ref_logp = reward_vector("R1"), reference_probs().log()
    rec = Recorder(1, 2, 100, 3, 4)
    logps = [
        torch.log_softmax(torch.randn(2, 5, 100, generator=g, dtype=torch.float64), -1)
        for _ in range(2)
    ]
    rec.mean_p, rec.mean_logp = rec.mean_p.double(), rec.mean_logp.double()
    rec.neg_entropy = rec.neg_entropy.double()
    arms = torch.randint(0, 100, (2, 3, 4), generator=g)
    rnd = round_of_arms(
        torch.zeros(2, 3, dtype=torch.long),
        arms,
        reward,
        logps[0][:, :3],
        ref_logp,
        torch.zeros(2, 3, 4, dtype=torch.bool),
        0.0,
    )
    rec.rounds.append(rnd)
    batch = logps[0][:, :3].gather(-1, arms)
    for step, lp in enumerate(logps):
        rec.record_eval(step, lp)
    rec.record_train(1, torch.tensor([0.5, 0.7]), torch.tensor([1.0, 2.0]), batch)
    df = rec.frame((10, 11), reward, ref_logp).set_index(["seed", "step"])
    assert list(df.columns[1:]) == list(METRIC_KEYS)
    for s, seed in enumerate((10, 11)):
        for step, lp in enumerate(logps):
            plain = _plain_metrics(lp[s], reward, ref_logp)
            row = df.loc[(seed, step)]
            assert math.isclose(row["reward/expected"], plain["reward"], rel_tol=1e-9)
            assert math.isclose(row["policy/kl_ref"], plain["kl"], rel_tol=1e-9)
            assert math.isclose(row["policy/kl_ref_forward"], plain["kl_fwd"], rel_tol=1e-9)
            assert math.isclose(row["policy/entropy"], plain["ent"], rel_tol=1e-9)
            assert math.isclose(row["mass/optimal"], plain["opt"], rel_tol=1e-9)
        # pair metrics of update 1: a plain loop over the valid pairs
        lw, ll, h = [], [], []
        for p in range(3):
            for i in range(4):
                for j in range(4):
                    ri, rj = rnd.rewards_PN[s, p, i], rnd.rewards_PN[s, p, j]
                    if i < j and ri != rj:
                        wi, li = (i, j) if ri > rj else (j, i)
                        lw.append(batch[s, p, wi].item())
                        ll.append(batch[s, p, li].item())
                        h.append(
                            lw[-1]
                            - ref_logp[arms[s, p, wi]].item()
                            - ll[-1]
                            + ref_logp[arms[s, p, li]].item()
                        )
        row = df.loc[(seed, 1)]
        assert row["pairs/valid"] == len(lw)
        assert math.isclose(row["logps/chosen"], sum(lw) / len(lw), rel_tol=1e-6)
        assert math.isclose(row["logps/rejected"], sum(ll) / len(ll), rel_tol=1e-6)
        assert math.isclose(row["margin/implicit"], sum(h) / len(h), rel_tol=1e-5)
        assert row["queries/reward"] == 12 and math.isnan(df.loc[(seed, 0)]["loss/train"])


def test_objective_inputs_shapes_and_mask():
    g = torch.Generator().manual_seed(5)
    reward, ref_logp = (
        reward_vector("R2", dtype=torch.float32),
        reference_probs(dtype=torch.float32).log(),
    )
    arms = torch.randint(0, 100, (2, 3, 4), generator=g)
    logp = torch.log_softmax(torch.randn(2, 3, 100, generator=g), -1)
    rnd = round_of_arms(
        torch.zeros(2, 3, dtype=torch.long),
        arms,
        reward,
        logp,
        ref_logp,
        torch.zeros(2, 3, 4, dtype=torch.bool),
        0.0,
    )
    logps = logp.gather(-1, arms)
    pairs, mask = objective_inputs("pairs", logps, rnd, None)
    assert pairs["chosen_logps"].shape == (2, 18) and mask.shape == (2, 18)
    assert torch.equal(rnd.old_logps_PN, logps)  # collected on-policy
    groups, none = objective_inputs("groups", logps, rnd, torch.tensor([0.1, 0.2]))
    assert none is None and groups["baseline"].shape == (2, 1, 1)
