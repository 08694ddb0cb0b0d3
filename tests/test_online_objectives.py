"""objectives.online (TRL's GRPO and RLOO losses) against hand computations and plain loops, and
the tie rule of rounds.build_pairs. TRL itself: tests/test_trl_online_parity.py (slow)."""

import itertools
import math

import pytest
import torch

import objectives
from objectives import OBJECTIVES, group_advantages, grpo, rloo
from objectives.sampled import advantages as zscore
from rounds import build_pairs

F64 = torch.float64
R = torch.tensor([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]], dtype=F64)


def _sd(xs, sample):
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - (1 if sample else 0)))


@pytest.mark.parametrize(
    "baseline, scale, std", list(itertools.product(("mean", "loo"), ("group", "batch", "none"),
                                                   ("sample", "population")))
)  # fmt: skip
def test_group_advantages_by_hand(baseline, scale, std):
    eps = 1e-4
    rows = R.tolist()
    flat = [x for row in rows for x in row]
    expected = []
    for row in rows:
        out = []
        for i, r in enumerate(row):
            others = row[:i] + row[i + 1 :]
            b = sum(row) / 3 if baseline == "mean" else sum(others) / 2
            s = {"group": _sd(row, std == "sample"), "batch": _sd(flat, std == "sample")}
            out.append((r - b) / (s[scale] + eps) if scale != "none" else r - b)
        expected.append(out)
    got = group_advantages(R, baseline=baseline, scale=scale, std=std, eps=eps)
    assert torch.allclose(got, torch.tensor(expected, dtype=F64), atol=1e-12)


def test_library_zscore_is_one_setting_and_trl_differs_from_it():
    lib = group_advantages(R, std="population", eps=1e-6)
    assert torch.allclose(lib, zscore(R), atol=1e-15)
    # TRL's sample std: the group z-score scaled by sqrt((N-1)/N) (up to the ε's)
    trl = group_advantages(R)
    assert torch.allclose(trl, zscore(R) * math.sqrt(2 / 3), atol=1e-4)
    assert not torch.allclose(trl, zscore(R), atol=1e-2)


def test_loo_is_mean_advantage_times_n_over_n_minus_1():
    loo = group_advantages(R, baseline="loo", scale="none")
    mean = group_advantages(R, baseline="mean", scale="none")
    assert torch.allclose(loo, mean * 3 / 2, atol=1e-15)


def _tokens(seed=0, p=2, n=3, t=4):
    g = torch.Generator().manual_seed(seed)
    lp = -torch.rand(p, n, t, generator=g, dtype=F64) * 2
    old = lp + 0.4 * torch.randn(p, n, t, generator=g, dtype=F64)
    old = old.clamp(max=0)
    ref = -torch.rand(p, n, t, generator=g, dtype=F64) * 2
    mask = torch.ones(p, n, t, dtype=torch.bool)
    mask[0, 1, 2:] = False
    mask[1, 2, 1:] = False
    rewards = torch.tensor([[1.0, 0.0, 0.5], [2.0, -1.0, 2.0]], dtype=F64)
    return lp, old, ref, mask, rewards


def _loop_grpo(lp, old, ref, mask, rewards, loss_type, importance, lo, hi, beta, length, corr):
    """TRL's _compute_loss written as loops over sequences and tokens."""
    adv = group_advantages(rewards)
    p, n, t = lp.shape
    per, tokens = {}, 0
    for a, b in itertools.product(range(p), range(n)):
        m = [k for k in range(t) if mask[a, b, k]]
        tokens += len(m)
        seq_w = math.exp(sum(float(lp[a, b, k] - old[a, b, k]) for k in m) / max(len(m), 1))
        for k in range(t):
            w = math.exp(float(lp[a, b, k] - old[a, b, k])) if importance == "token" else seq_w
            x = float(adv[a, b])
            v = -min(w * x, min(max(w, 1 - lo), 1 + hi) * x)
            d = float(ref[a, b, k] - lp[a, b, k])
            v += beta * (math.exp(d) - d - 1) * (w if corr else 1.0)
            per[a, b, k] = v if k in m else 0.0
    total = sum(per.values())
    if loss_type == "grpo":
        seqs = [sum(per[a, b, k] for k in range(t)) / max(int(mask[a, b].sum()), 1)
                for a, b in itertools.product(range(p), range(n))]  # fmt: skip
        return sum(seqs) / len(seqs)
    if loss_type in ("bnpo", "dapo"):
        return total / tokens
    return total / (p * n * length)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("importance", ["token", "sequence"])
@pytest.mark.parametrize("beta, corr", [(0.0, True), (0.3, True), (0.3, False)])
def test_grpo_token_aggregation_equals_plain_loops(loss_type, importance, beta, corr):
    lp, old, ref, mask, rewards = _tokens()
    hp = dict(loss_type=loss_type, importance=importance, clip_eps=0.1, clip_eps_high=0.15,
              beta=beta, kl_correction=corr, max_completion_length=6.0)  # fmt: skip
    got = grpo(lp, rewards, old, ref, token_mask=mask, **hp).mean()
    expected = _loop_grpo(lp, old, ref, mask, rewards, loss_type, importance, 0.1, 0.15, beta, 6,
                          corr)  # fmt: skip
    assert got.item() == pytest.approx(expected, abs=1e-12)
    # the registry entry, called through Objective.loss with everything a caller built
    via = OBJECTIVES["grpo"].loss(
        {"logps": lp, "rewards": rewards, "old_logps": old, "ref_logps": ref, "baseline": R},
        token_mask=mask, **hp,
    )  # fmt: skip
    assert torch.allclose(via.mean(), got)


@pytest.mark.parametrize("loss_type", ["sequence", "grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_parts_with_whole_batch_inputs_add_up_to_the_batch(loss_type, scale):
    """Split into one prompt per call, with the whole batch's advantages and tokens per prompt
    (what a micro-batch or a process gets): the per-prompt losses and their gradient equal the
    whole batch's. Without them, batch scaling and bnpo/dapo would not."""
    lp, old, ref, mask, rewards = _tokens(p=3, n=3)
    rewards = torch.tensor([[1.0, 0.0, 0.5], [2.0, -1.0, 2.0], [0.0, 4.0, 1.0]], dtype=F64)
    hp = dict(loss_type=loss_type, scale=scale, beta=0.2, max_completion_length=6.0)
    lp_a, lp_b = lp.clone().requires_grad_(True), lp.clone().requires_grad_(True)
    whole = grpo(lp_a, rewards, old, ref, token_mask=mask, **hp)
    whole.sum().backward()
    adv = group_advantages(rewards, scale=scale)
    per_prompt = mask.sum().to(F64) / 3
    parts = [
        grpo(lp_b[i : i + 1], rewards[i : i + 1], old[i : i + 1], ref[i : i + 1],
             advantages=adv[i : i + 1], prompt_tokens=per_prompt, token_mask=mask[i : i + 1],
             **hp)
        for i in range(3)
    ]  # fmt: skip
    torch.cat(parts).sum().backward()
    assert torch.allclose(torch.cat(parts), whole, atol=1e-12)
    assert torch.allclose(lp_b.grad, lp_a.grad, atol=1e-12)
    alone = torch.cat([grpo(lp[i : i + 1], rewards[i : i + 1], old[i : i + 1], ref[i : i + 1],
                            token_mask=mask[i : i + 1], **hp) for i in range(3)])  # fmt: skip
    coupled = scale == "batch" or loss_type in ("bnpo", "dapo")
    assert torch.allclose(alone, whole, atol=1e-9) != coupled


def test_rloo_with_whole_batch_normalised_advantages_adds_up_to_the_batch():
    lp, old, ref, mask, rewards = _tokens(p=3, n=3)
    rewards = torch.tensor([[1.0, 0.0, 0.5], [2.0, -1.0, 2.0], [0.0, 4.0, 1.0]], dtype=F64)
    whole = rloo(lp, rewards, old, ref, token_mask=mask, normalize=True, beta=0.1)
    seq = [(x * mask).sum(-1) for x in (old, ref)]
    adv = objectives.online.rloo_advantages(rewards, *seq, beta=0.1, normalize=True)
    parts = torch.cat([rloo(lp[i : i + 1], rewards[i : i + 1], old[i : i + 1], ref[i : i + 1],
                            advantages=adv[i : i + 1], token_mask=mask[i : i + 1],
                            normalize=True, beta=0.1) for i in range(3)])  # fmt: skip
    assert torch.allclose(parts, whole, atol=1e-12)
    with pytest.raises(ValueError, match="advantages"):
        rloo(lp, rewards, old, ref, advantages=adv[:2], token_mask=mask)


def test_grpo_one_token_is_the_sequence_form_for_every_loss_type():
    lp, old, ref, _, rewards = _tokens(t=1)
    seq = [x.squeeze(-1) for x in (lp, old, ref)]
    for loss_type in ("sequence", "grpo", "bnpo", "dapo", "dr_grpo"):
        for importance in ("token", "sequence"):
            hp = dict(loss_type=loss_type, importance=importance, beta=0.2)
            a = grpo(lp, rewards, old, ref, token_mask=torch.ones_like(lp), **hp)
            b = grpo(*seq[:1], rewards, *seq[1:], **hp)
            assert torch.allclose(a, b, atol=1e-14), (loss_type, importance)
    # and the sequence loss type is the clipped surrogate of summed log-probs
    lp, old, ref, mask, rewards = _tokens()
    sums = [(x * mask).sum(-1) for x in (lp, old, ref)]
    a = grpo(lp, rewards, old, ref, token_mask=mask, loss_type="sequence", beta=0.2)
    b = grpo(sums[0], rewards, sums[1], sums[2], loss_type="sequence", beta=0.2)
    assert torch.allclose(a, b, atol=1e-14)


def test_grpo_on_policy_without_clip_or_kl_is_reinforce_with_trl_advantages():
    """Ratios 1 (old = current): the gradient is -Â ∇ℓ per sample, REINFORCE's with TRL's Â."""
    lp = torch.log_softmax(torch.randn(2, 3, dtype=F64), -1).requires_grad_(True)
    grpo(lp, R, loss_type="sequence").sum().backward()
    assert torch.allclose(lp.grad, -group_advantages(R) / 3, atol=1e-14)


@pytest.mark.parametrize("name", ["grpo", "grpo_plain_kl", "rloo"])
def test_bandit_shape_partials_match_autograd_with_clipping(name):
    g = torch.Generator().manual_seed(5)
    lp = torch.log_softmax(torch.randn(4, 2, 5, generator=g, dtype=F64), -1)
    old = torch.log_softmax(lp + torch.randn(4, 2, 5, generator=g, dtype=F64), -1)
    ref = torch.log_softmax(torch.randn(4, 2, 5, generator=g, dtype=F64), -1)
    rewards = torch.rand(4, 2, 5, generator=g, dtype=F64)
    hp = {"grpo": dict(beta=0.2, scale="batch"), "rloo": dict(beta=0.1, normalize=True),
          "grpo_plain_kl": dict(beta=0.2, kl_correction=False)}[name]  # fmt: skip
    name = name.removesuffix("_plain_kl")
    x = lp.clone().requires_grad_(True)
    OBJECTIVES[name](logps=x, rewards=rewards, old_logps=old, ref_logps=ref, **hp).sum().backward()
    closed = OBJECTIVES[name].partials(lp, rewards, old, ref, **hp)["logps"]
    assert torch.allclose(x.grad, closed, atol=1e-12)
    ratio = (lp - old).exp()
    assert bool(((ratio > 1.2) | (ratio < 0.8)).any())  # clipping is exercised


def test_rloo_by_hand():
    lp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=F64)
    old = torch.tensor([[-1.1, -1.5, -0.5]], dtype=F64)
    ref = torch.tensor([[-1.0, -1.0, -1.0]], dtype=F64)
    r = torch.tensor([[1.0, 0.0, 2.0]], dtype=F64)
    shaped = [float(r[0, i] - 0.1 * (old[0, i] - ref[0, i])) for i in range(3)]
    loss = 0.0
    for i in range(3):
        adv = shaped[i] - (sum(shaped) - shaped[i]) / 2
        w = math.exp(float(lp[0, i] - old[0, i]))
        loss += -min(w * adv, min(max(w, 0.8), 1.2) * adv) / 3
    assert rloo(lp, r, old, ref, beta=0.1).item() == pytest.approx(loss, abs=1e-12)


def test_rloo_per_token_sums_the_tokens():
    lp, old, ref, mask, rewards = _tokens()
    sums = [(x * mask).sum(-1) for x in (lp, old, ref)]
    a = rloo(lp, rewards, old, ref, token_mask=mask, normalize=True)
    b = rloo(sums[0], rewards, sums[1], sums[2], normalize=True)
    assert torch.allclose(a, b, atol=1e-14)


def test_bandit_leading_axis_is_per_row():
    lp, old, _, mask, rewards = _tokens()
    stacked = grpo(torch.stack([lp, lp]), torch.stack([rewards, rewards * 2]),
                   torch.stack([old, old]), token_mask=torch.stack([mask, mask]),
                   loss_type="bnpo", scale="batch")  # fmt: skip
    for s, rw in enumerate((rewards, rewards * 2)):
        one = grpo(lp, rw, old, token_mask=mask, loss_type="bnpo", scale="batch")
        assert torch.allclose(stacked[s], one, atol=1e-14)


def test_tempered_logps():
    logits = torch.randn(2, 3, 5, dtype=F64)
    ids = torch.randint(0, 5, (2, 3))
    got = objectives.tempered_logps(logits, ids, 0.7)
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.equal(got, expected)


def test_ties_first_keeps_tied_pairs_with_the_first_chosen():
    rewards = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    w, l, valid = build_pairs(rewards)
    wf, lf, validf = build_pairs(rewards, ties="first")
    assert valid.sum() == 3 and validf.all()  # the 3 tied pairs join
    # untied pairs: same winners either way; tied pairs (i < j): i chosen, as TRL's r₀ >= r₁
    for m, (i, j) in enumerate(torch.triu_indices(4, 4, offset=1).T.tolist()):
        if valid[0, m]:
            assert (wf[0, m], lf[0, m]) == (w[0, m], l[0, m])
        else:
            assert (wf[0, m].item(), lf[0, m].item()) == (i, j)
    chosen, rejected = objectives.online.online_dpo_pairs(torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
    assert chosen.tolist() == [0, 1] and rejected.tolist() == [1, 0]
    # a threshold still applies to untied pairs; NaN never pairs
    _, _, v = build_pairs(torch.tensor([[0.0, 0.1, float("nan"), 0.0]]), 0.5, ties="first")
    assert v.tolist() == [[False, False, True, False, False, False]]


def test_ties_first_reaches_the_bandit_and_drop_is_the_default():
    import toy
    from toy.outputs import result_config

    cfg = toy.preset("onpolicy_dpo", rounds=2, steps_per_round=2, out_dir="")
    assert cfg.pair_ties == "drop"
    # the default leaves run names and cache keys as they were before the knob existed
    assert "pair_ties" not in result_config(cfg)
    assert result_config(cfg.replace(pair_ties="first"))["pair_ties"] == "first"
    with pytest.raises(Exception, match="pair_ties"):
        cfg.replace(pair_ties="last")
    # the bandit samples repeated arms (exact ties): kept pairs change the DPO run
    drop, first = toy.run(cfg), toy.run(cfg.replace(pair_ties="first"))
    key = "reward/expected"
    assert drop.metrics[key].iloc[-1] != first.metrics[key].iloc[-1]
