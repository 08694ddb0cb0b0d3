"""What a bandit run fixes before its first step, and each round's samples: π_ref, the reward,
the contexts and one generator per row (``Problem``); the policies fitted to π_ref
(``make_policy``, cached per seed set); a round's responses (``collect``).

A row is one independent run of the batched computation (``Rows``); rows sharing a
seed share its contexts, prompt draws, uniforms and π_ref initialisation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

import rounds
from toy.bandit import contexts, reference_probs, reward_vector
from toy.config import BanditConfig
from toy.data import round_of_arms, sample_arms
from toy.policy import POLICIES, fit_to_reference


@dataclass(frozen=True)
class Rows:
    """The independent runs of one batched computation, one per row S: each row's seed and
    learning rate, and per-row values of the objective's hyperparameters (``toy.sweep`` makes
    grid points × seeds; a plain config makes one row per seed). Rows sharing a seed share its
    contexts, prompt draws, uniforms and π_ref initialisation."""

    seeds: tuple[int, ...]
    lr: tuple[float, ...]
    hp: tuple[tuple[str, tuple[float, ...]], ...] = ()
    """(name, one value per row) for hyperparameters that vary across rows."""

    @classmethod
    def of(cls, cfg: BanditConfig) -> Rows:
        return cls(tuple(cfg.seeds), (cfg.lr,) * len(cfg.seeds))


class Problem:
    """Everything fixed for a run: reference, reward, contexts, generators (one per row)."""

    def __init__(self, cfg: BanditConfig, seeds: tuple[int, ...]):
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.ref_logp_K = reference_probs(cfg.n_arms, dtype=torch.float32).log()
        source = cfg.reward if cfg.reward_vector is None else cfg.reward_vector
        self.reward_K = reward_vector(source, cfg.n_arms, dtype=torch.float32)
        self.train_ctx = torch.stack([contexts(cfg.n_train_contexts, g) for g in self.gens])
        self.eval_ctx = torch.stack([contexts(cfg.n_eval_contexts, g) for g in self.gens])

    def uniforms(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.rand(*shape, generator=g) for g in self.gens])

    def draw_prompts(self, n_train: int, p: int) -> torch.Tensor:
        """Each round's P prompts: the whole pool when it holds exactly P (the official
        setup: every training prompt once per round), else P draws with replacement."""
        if n_train == p:
            return torch.arange(p).expand(len(self.gens), p)
        return torch.stack([torch.randint(n_train, (p,), generator=g) for g in self.gens])

    def permutations(self, p: int) -> torch.Tensor:
        return torch.stack([torch.randperm(p, generator=g) for g in self.gens])


def collect(
    cfg: BanditConfig, prob: Problem, rnd: int, prompts_SP, policy_logp_SPK
) -> rounds.Round:
    """Sample N responses per prompt: round 0 and offline samples from π_ref, others fresh."""
    s, p, n = len(prob.gens), cfg.prompts_per_round, cfg.samples_per_prompt
    n_off = rounds.offline_count(cfg.mode, n, rnd, cfg.offline_fraction)
    offline_SPN = rounds.offline_mask(n_off, (s, p, n))
    ref_probs = prob.ref_logp_K.exp().expand(s, p, -1)
    probs = torch.where(offline_SPN[..., :1], ref_probs, policy_logp_SPK.exp())
    arms = (
        sample_arms(probs, prob.uniforms(p, n))
        if n_off in (0, n)
        else torch.where(
            offline_SPN,
            sample_arms(ref_probs, prob.uniforms(p, n)),
            sample_arms(policy_logp_SPK.exp(), prob.uniforms(p, n)),
        )
    )
    return round_of_arms(
        prompts_SP,
        arms,
        prob.reward_K,
        policy_logp_SPK,
        prob.ref_logp_K,
        offline_SPN,
        cfg.pair_threshold,
        cfg.kl_reward,
        cfg.pair_ties,
    )


INIT_CACHE: dict[tuple, dict[str, torch.Tensor]] = {}
"""Fitted initial parameters, keyed by everything they depend on: sweeps in one process (the
figures) fit each seed set once."""


def clear_init_cache() -> None:
    """Forget every fitted initialisation (the next run fits π_ref again)."""
    INIT_CACHE.clear()


def make_policy(cfg: BanditConfig, prob: Problem, seeds: tuple[int, ...]) -> torch.nn.Module:
    """The rows' policies at π_ref: fitted once per distinct seed, then copied to its rows."""
    if cfg.policy == "mlp":
        policy = POLICIES["mlp"](prob.gens)
    else:
        policy = POLICIES[cfg.policy](prob.gens, cfg.n_arms)
    unique = tuple(dict.fromkeys(seeds))
    first = torch.tensor([seeds.index(u) for u in unique])
    key = (cfg.policy, unique, cfg.n_arms, cfg.init_steps, cfg.init_lr, cfg.init_contexts,
           cfg.n_train_contexts)  # fmt: skip
    if key not in INIT_CACHE:
        distinct = copy.deepcopy(policy)
        for param in distinct.parameters():
            param.data = param.data[first].clone()
        init_ctx = prob.train_ctx[first, : cfg.init_contexts]
        fit_to_reference(distinct, init_ctx, prob.ref_logp_K, cfg.init_steps, cfg.init_lr)
        if len(INIT_CACHE) >= 64:
            INIT_CACHE.pop(next(iter(INIT_CACHE)))
        INIT_CACHE[key] = {k: v.detach().clone() for k, v in distinct.state_dict().items()}
    to_row = torch.tensor([unique.index(s) for s in seeds])
    policy.load_state_dict({k: v[to_row] for k, v in INIT_CACHE[key].items()})
    return policy
