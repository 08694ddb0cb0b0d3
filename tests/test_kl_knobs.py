"""The two KL knobs, one meaning each on both sides: ``kl_penalty`` adds β·KL(π_θ‖π_ref) to the
loss (the bandit exactly; a language model through ``rounds.sampled_kl``), ``kl_reward`` folds
the sampled-sequence estimate β·(ℓ_old - ℓ_ref) into each reward (``rounds.kl_shaped``)."""

import math

import torch

import rounds
from llm.collect import Collected
from llm.config import TrainConfig
from llm.onpolicy import kl_penalty_part


def _categorical(seed: int = 0, k: int = 6):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(k, generator=gen, dtype=torch.float64).requires_grad_(True)
    ref = torch.log_softmax(torch.randn(k, generator=gen, dtype=torch.float64), -1)
    return z, ref, gen


def test_sampled_kl_is_unbiased_for_value_and_gradient_off_policy():
    """Samples from π_old ≠ π_θ: the mean of the terms and its autograd gradient match the
    exact KL(π_θ‖π_ref) and its closed-form logit gradient π ⊙ (log π - log π_ref - KL)."""
    z, ref, gen = _categorical()
    old = torch.log_softmax(torch.randn(6, generator=gen, dtype=torch.float64), -1)
    logp = torch.log_softmax(z, -1)
    kl = (logp.exp() * (logp - ref)).sum()
    grad_exact = logp.exp() * (logp - ref - kl)
    y = torch.multinomial(old.exp(), 400_000, replacement=True, generator=gen)
    est = rounds.sampled_kl(logp[y], old[y], ref[y]).mean()
    (grad_est,) = torch.autograd.grad(est, z)
    assert abs(est.item() - kl.item()) < 0.02 * kl.item() + 2e-3
    torch.testing.assert_close(grad_est, grad_exact.detach(), atol=0.01, rtol=0.05)


def test_sampled_kl_on_policy_is_k1():
    """At π_θ = π_old (a round's first step) every weight is 1: the terms are ℓ - ℓ_ref."""
    lp = torch.tensor([-1.0, -2.5, -0.3])
    ref = torch.tensor([-1.5, -2.0, -0.7])
    torch.testing.assert_close(rounds.sampled_kl(lp, lp, ref), lp - ref)


def test_kl_shaped_rewards_use_the_collecting_policy_and_zero_for_offline():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    collect = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.0, -4.0]])
    offline = torch.tensor([[False, True, False]])
    got = rounds.kl_shaped(r, collect, ref, offline, 0.5)
    assert got.tolist() == [[1.0 - 0.5 * 0.5, 2.0, 3.0 - 0.5 * 1.0]]
    assert torch.equal(rounds.kl_shaped(r, collect, ref, offline, 0.0), r)


def test_llm_kl_penalty_micro_batch_shares_add_up_to_the_round_mean():
    """kl_penalty_part over micro-batches of rows sums to β·mean over the P·N samples, and at
    the collecting policy (offline samples reweighted from π_ref) equals the k1 estimate."""
    p, n = 2, 3
    gen = torch.Generator().manual_seed(1)
    pol = -torch.rand(p, n, generator=gen) * 4
    ref = -torch.rand(p, n, generator=gen) * 4
    offline = rounds.offline_mask(1, (p, n))
    col = Collected(
        [],
        None,
        [],
        torch.zeros(p, n),
        offline,
        pol,
        ref,
        torch.ones(p, n),
        {},
        0,
        0,
        torch.zeros(p * n),
        torch.zeros(p * n, dtype=torch.bool),
        slice(0, p),
    )
    cfg = TrainConfig(mode="on_policy", kl_penalty=0.3)
    old = torch.where(offline, ref, pol).flatten()
    total = sum(kl_penalty_part(cfg, col, old[r], r) for r in (slice(0, 3), slice(3, 6)))
    torch.testing.assert_close(total, 0.3 * (old - ref.flatten()).mean())


def test_bandit_kl_reward_shapes_the_rewards_pairs_are_built_from():
    """toy.data.round_of_arms with kl_reward: r - β(ℓ_old - ℓ_ref) per sampled arm (offline arms
    keep r), and the pairs follow the shaped rewards."""
    from toy.data import round_of_arms

    reward_K = torch.tensor([0.0, 1.0, 0.5])
    ref_K = torch.tensor([0.2, 0.3, 0.5]).log()
    collect_SPK = torch.tensor([0.7, 0.1, 0.2]).log().expand(1, 1, 3)
    arms = torch.tensor([[[0, 1, 2]]])
    offline = torch.tensor([[[False, False, True]]])
    rnd = round_of_arms(torch.zeros(1, 1, dtype=torch.long), arms, reward_K, collect_SPK, ref_K,
                        offline, 0.0, kl_reward=2.0)  # fmt: skip
    expect = [-2 * math.log(0.7 / 0.2), 1.0 - 2 * math.log(0.1 / 0.3), 0.5]
    torch.testing.assert_close(rnd.rewards_PN.flatten(), torch.tensor(expect))
    plain = round_of_arms(torch.zeros(1, 1, dtype=torch.long), arms, reward_K, collect_SPK, ref_K,
                          offline, 0.0)  # fmt: skip
    assert torch.equal(plain.rewards_PN.flatten(), reward_K)
