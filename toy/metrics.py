"""Exact metrics of a bandit policy after every gradient step, for every seed.

The loop records only raw per-step statistics into preallocated buffers (a handful of tensor ops
per step); every metric is then computed at once, vectorised over steps, by ``Recorder.frame``:

- evaluation metrics (after t updates, on the fixed evaluation contexts x): everything is a
  function of π̄ = mean_x π(·|x), mean_x log π(·|x) and mean_x Σ_y π log π, which are stored;
- training-batch metrics (of update t, before it): the log-probs of the round's N samples per
  prompt are stored, and pairs are rebuilt from the round's winner/loser indices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pandas is imported where a table is built, not on the training path
    import pandas as pd
from torch import Tensor

from rounds import Round

METRIC_KEYS = (
    "reward/expected",  # mean over eval contexts of Σ_y π(y|x) r(y), exact
    "policy/kl_ref",  # reverse KL(π ‖ π_ref)
    "policy/kl_ref_forward",  # forward KL(π_ref ‖ π)
    "policy/entropy",
    "mass/optimal",  # π(argmax r)
    "loss/train",
    "grad/norm",
    "logps/chosen",  # mean ℓ(y_w) over the batch's valid pairs
    "logps/rejected",
    "mass/chosen",  # mean π(y_w)
    "mass/rejected",
    "margin/implicit",  # mean h = ρ_w - ρ_l
    "pairs/accuracy",  # fraction of valid pairs with h > 0
    "pairs/valid",  # valid pairs per seed in the batch
    "queries/reward",  # cumulative reward queries
)


class Recorder:
    """Row t: evaluation statistics after t updates and the training statistics of update t
    (row 0 is the initial policy and has no training statistics)."""

    def __init__(self, total_steps: int, n_seeds: int, n_arms: int, p: int, n: int, m=None):
        rows, m = total_steps + 1, m or p
        self.queries_per_round = p * n
        self.mean_p = torch.full((rows, n_seeds, n_arms), float("nan"))  # NaN: not evaluated
        self.mean_logp = torch.full((rows, n_seeds, n_arms), float("nan"))
        self.neg_entropy = torch.full((rows, n_seeds), float("nan"))
        self.loss = torch.full((rows, n_seeds), float("nan"))
        self.grad_norm = torch.full((rows, n_seeds), float("nan"))
        self.batch_logps = torch.zeros(rows, n_seeds, m, n)
        self.batch_prompts = torch.arange(m).expand(rows, n_seeds, m).clone()
        """Which of the round's P prompts each step's M-prompt minibatch holds."""
        self.round_of_step = torch.zeros(rows, dtype=torch.long)
        self.rounds: list[Round] = []

    @torch.no_grad()
    def record_eval(self, step: int, logp_SEK: Tensor) -> None:
        p = logp_SEK.exp()
        torch.mean(p, 1, out=self.mean_p[step])
        torch.mean(logp_SEK, 1, out=self.mean_logp[step])
        torch.mean(torch.linalg.vecdot(p, logp_SEK), 1, out=self.neg_entropy[step])

    @torch.no_grad()
    def record_eval_block(self, first: int, logp_BSEK: Tensor) -> None:
        """``record_eval`` for steps ``first .. first + B - 1`` at once."""
        rows = slice(first, first + logp_BSEK.shape[0])
        p = logp_BSEK.exp()
        torch.mean(p, 2, out=self.mean_p[rows])
        torch.mean(logp_BSEK, 2, out=self.mean_logp[rows])
        torch.mean(torch.linalg.vecdot(p, logp_BSEK), 2, out=self.neg_entropy[rows])

    @torch.no_grad()
    def record_train(self, step: int, loss_S: Tensor, grad_norm_S: Tensor, logps_SMN: Tensor,
                     prompts_SM: Tensor | None = None):  # fmt: skip
        self.loss[step] = loss_S
        self.grad_norm[step] = grad_norm_S
        self.batch_logps[step] = logps_SMN
        if prompts_SM is not None:
            self.batch_prompts[step] = prompts_SM
        self.round_of_step[step] = len(self.rounds) - 1

    def _pair_metrics(self) -> list[Tensor]:
        """Masked means over each (step, seed)'s valid pairs, shape (rows, S) each; computed in
        chunks of steps so memory stays bounded for large batches."""
        rows, s, p, n = self.batch_logps.shape
        m_pairs = n * (n - 1) // 2
        chunk = max(1, 4_000_000 // (s * p * m_pairs))
        per_round = [
            torch.stack([getattr(r, k) for r in self.rounds])
            for k in ("winner_PM", "loser_PM", "valid_PM", "ref_logps_PN")
        ]
        parts = [self._pair_chunk(slice(i, i + chunk), *per_round) for i in range(0, rows, chunk)]
        out = [torch.cat(cols) for cols in zip(*parts)]
        for x in out[:-1]:
            x.masked_fill_(out[-1] == 0, float("nan"))
        for x in out:
            x[0] = float("nan")
        return out

    def _pair_chunk(self, rows: slice, winner, loser, valid, ref) -> list[Tensor]:
        idx = self.round_of_step[rows]
        take = self.batch_prompts[rows][..., None]  # the steps' minibatch prompts
        winner, loser, valid, ref = (
            x[idx].gather(2, take.expand(-1, -1, -1, x.shape[-1]))
            for x in (winner, loser, valid, ref)
        )
        logps = self.batch_logps[rows]
        lw, ll = logps.gather(-1, winner).flatten(2), logps.gather(-1, loser).flatten(2)
        h = (lw - ref.gather(-1, winner).flatten(2)) - (ll - ref.gather(-1, loser).flatten(2))
        m = valid.flatten(2).to(lw.dtype)
        count = m.sum(-1)

        def mean(x):
            return (x * m).sum(-1) / count.clamp(min=1)

        return [
            mean(lw),
            mean(ll),
            mean(lw.exp()),
            mean(ll.exp()),
            mean(h),
            mean((h > 0).to(h.dtype)),
            count,
        ]

    def frame(self, seeds: tuple[int, ...], reward_K: Tensor, ref_logp_K: Tensor) -> pd.DataFrame:
        """Long table, one row per (seed, step), with the METRIC_KEYS columns."""
        ref = ref_logp_K.exp()
        p, lp = self.mean_p, self.mean_logp
        queries = (self.round_of_step + 1).float() * self.queries_per_round
        queries[0] = 0.0
        cols = [
            p @ reward_K,
            self.neg_entropy - p @ ref_logp_K,
            (ref * ref_logp_K).sum() - lp @ ref,
            -self.neg_entropy,
            p[..., reward_K.argmax()],
            self.loss,
            self.grad_norm,
            *self._pair_metrics(),
            queries[:, None].expand_as(self.loss),
        ]
        rows, n_seeds = self.loss.shape
        data = torch.stack(cols, -1).transpose(0, 1).reshape(rows * n_seeds, -1)
        import pandas as pd

        df = pd.DataFrame(data.double().numpy(), columns=list(METRIC_KEYS))
        df.insert(0, "seed", np.repeat(np.asarray(seeds), rows))
        df.insert(1, "step", np.tile(np.arange(rows), n_seeds))
        df.insert(2, "round", np.tile(self.round_of_step.numpy(), n_seeds))
        return df
