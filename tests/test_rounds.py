"""The shared half of Algorithm 1 (``rounds``): pairs against a plain loop, ties never pair, the
mixing counts, the running baseline, and the bridge — the same (P, N) log-probs and rewards fed
through the bandit's caller (``toy.data.round_of_arms`` and ``rounds.round_loss`` with a seed
axis S = 1) and the LLM's caller (``llm.onpolicy.round_of_samples`` and ``rounds.round_loss`` over
micro-batches of prompts) give identical objective inputs and losses for every objective."""

import itertools

import pytest
import torch

import objectives
import rounds
from llm.collect import Collected
from llm.config import TrainConfig
from llm.onpolicy import round_of_samples
from toy.data import round_of_arms

P, N = 3, 4
HP = {"dpo": {"beta": 0.7}, "ipo": {"tau": 0.3}, "kto": {"beta": 0.4}, "simpo": {"gamma": 0.2}}
HP |= {"ppo": {"clip_eps": 0.1}, "reinforce": {"kl_coef": 0.2}, "bon_pushdown": {"beta": 0.3}}


def test_pairs_match_a_plain_loop_and_ties_never_pair():
    rewards = torch.tensor([[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 2.0, 2.0]])
    winner, loser, valid = rounds.build_pairs(rewards, threshold=0.4)
    expect = []
    for p in range(2):
        for i, j in itertools.combinations(range(4), 2):
            ri, rj = rewards[p, i].item(), rewards[p, j].item()
            w, lo = (i, j) if ri > rj else (j, i)
            expect.append((w, lo, abs(ri - rj) > 0.4))
    got = list(zip(winner.flatten().tolist(), loser.flatten().tolist(), valid.flatten().tolist()))
    assert got == expect
    assert not valid[1].any()  # all ties
    assert rounds.make_round(rewards, rewards, rewards, rewards > 9, 0.0).n_valid_pairs == 5


def test_offline_counts_and_running_baseline():
    assert rounds.offline_count("on_policy", 10, 0, 0.3) == 10  # round 0 samples π_ref
    assert rounds.offline_count("on_policy", 10, 1, 0.3) == 0
    assert rounds.offline_count("offline", 10, 5, 0.3) == 10
    assert rounds.offline_count("hybrid", 10, 5, 0.3) == 3
    mask = rounds.offline_mask(2, (2, 4))
    assert mask.tolist() == [[True, True, False, False]] * 2
    r = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    b = rounds.update_baseline(torch.zeros(()), r, 0.9, first=True)
    assert b.item() == 4.0
    assert rounds.update_baseline(b, r + 4, 0.9, first=False).item() == pytest.approx(4.4)


def _collected(rewards_PN, pol_PN, ref_PN, offline_PN) -> Collected:
    ones = torch.ones_like(pol_PN)
    b = pol_PN.numel()
    return Collected(
        [],
        None,
        [],
        rewards_PN,
        offline_PN,
        pol_PN,
        ref_PN,
        ones,
        {},
        0.0,
        0.0,
        torch.zeros(b),
        torch.zeros(b, dtype=torch.bool),
        slice(0, pol_PN.shape[0]),
    )


@pytest.mark.parametrize("name", sorted(objectives.OBJECTIVES))
@pytest.mark.parametrize("offline", [0, 2])
def test_toy_and_llm_callers_give_identical_inputs_and_losses(name, offline):
    obj = objectives.OBJECTIVES[name]
    hp = HP.get(name, {})
    gen = torch.Generator().manual_seed(0)
    logps_PN = -torch.rand(P, N, generator=gen) * 5 - 0.1
    collect_PN = -torch.rand(P, N, generator=gen) * 5 - 0.1
    ref_PN = -torch.rand(P, N, generator=gen) * 5 - 0.1
    rewards_PN = torch.randint(0, 3, (P, N), generator=gen).float()  # with ties
    offline_PN = rounds.offline_mask(offline, (P, N))
    baseline = torch.tensor(0.7) if "baseline" in obj.optional_inputs else None
    # the bandit's caller: arms index a K = P·N table holding exactly these values
    arms_SPN = torch.arange(P * N).view(1, P, N)
    collect_SPK = torch.full((1, P, P * N), -50.0)
    collect_SPK.scatter_(-1, arms_SPN, collect_PN[None])
    rnd_toy = round_of_arms(
        torch.zeros(1, P, dtype=torch.long), arms_SPN, rewards_PN.flatten(), collect_SPK,
        ref_PN.flatten(), offline_PN[None], 0.5,
    )  # fmt: skip
    base_S = None if baseline is None else baseline.view(1)
    inputs_toy, mask_toy = rounds.objective_inputs(obj.data, logps_PN[None], rnd_toy, base_S)
    loss_toy = rounds.round_loss(obj, hp, logps_PN[None], rnd_toy, base_S, lead=1)[0]
    # the LLM's caller, in two micro-batches of prompts
    cfg = TrainConfig(pair_threshold=0.5)
    rnd = round_of_samples(cfg, obj, _collected(rewards_PN, collect_PN, ref_PN, offline_PN))
    inputs_llm, mask_llm = rounds.objective_inputs(obj.data, logps_PN, rnd, baseline)
    assert inputs_llm.keys() == inputs_toy.keys()
    for k in inputs_llm:
        torch.testing.assert_close(inputs_llm[k], inputs_toy[k][0].reshape(inputs_llm[k].shape))
    if mask_llm is not None:
        assert torch.equal(mask_llm, mask_toy[0])
    denom = rounds.loss_denominator(obj.data, rnd)
    # a loss that ranks over the batch (AOT) changes with the split: one micro-batch for it
    splits = (slice(0, P),) if obj.batch_coupled else (slice(0, 2), slice(2, 3))
    parts = [rounds.round_loss(obj, hp, logps_PN[s], rnd.subset(s), baseline, denom=denom)
             for s in splits]  # fmt: skip
    torch.testing.assert_close(sum(parts), loss_toy, rtol=1e-6, atol=1e-6)
