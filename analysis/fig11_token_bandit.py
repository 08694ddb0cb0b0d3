"""Figure 11: the N-token bandit through the LLM harness beside the single-token bandit
(``experiments.token_bandit``, ``analysis.run_token_bandit``).

Per reward (rows R1, R2): (a) the N-token bandit's expected per-token reward (exact on held-out
prompts along the policy's own prefixes) against gradient steps, on-policy (solid) vs offline on a
fixed π_ref dataset (dashed), for BoN, DPO, IPO, REINFORCE and ASFT; (b) the single-token bandit
(``toy/``, context MLP) with the same budget: 10 prompts × 10 samples per round, T 15, 30 rounds
on-policy; one round of 10 prompts × 10 π_ref samples and 450 steps offline; lr 1e-3; (c) the
N-token policy's probability of the optimal arm (70 for R1, 20 for R2) at each of the 9 response
positions after the last step. Mean ± std over the seeds of the committed table.

The N-token runs take ~18 min on one CPU core, so the figure draws from the committed
``figures/data/token_bandit.csv`` (regenerate with ``python -m analysis.run_token_bandit``); the
toy runs are cached (``analysis.cache``). Quick mode runs the tiny grid end to end.

Command: ``python -m analysis.make_figures --only fig11`` (3 s with the toy runs cached; the 20
toy configs × 3 seeds take ~5 min on a busy 2-core CPU from a clean cache).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis import run_token_bandit as rtb
from analysis.cache import cached_run
from analysis.common import MODE_STYLES, PALETTE, band, label, offline, onpolicy, save, setup
from experiments.token_bandit import N_RESPONSE, OPTIMAL_ARM


def load_table(quick: bool) -> tuple[pd.DataFrame, rtb.Budget]:
    if not quick:
        return pd.read_csv(rtb.DATA / "token_bandit.csv"), rtb.Budget()
    with tempfile.TemporaryDirectory(prefix="fig11_") as tmp:
        out = Path(tmp)
        table = rtb.experiment(rtb.QUICK, out / "data", out / "runs", log=lambda *_: None)
    return table, rtb.QUICK


def toy_metrics(objective: str, reward: str, mode: str, b: rtb.Budget, seeds: tuple[int, ...]):
    """The single-token bandit run with the N-token grid's budget."""
    quick = b.rounds < 5
    steps = b.rounds * b.steps_per_round
    if mode == "on_policy":
        cfg = onpolicy(objective, reward, seeds, quick, rounds=b.rounds,
                       steps_per_round=b.steps_per_round, prompts_per_round=b.prompts_per_round,
                       samples_per_prompt=b.samples_per_prompt, lr=b.lr)  # fmt: skip
    else:
        cfg = offline(objective, reward, seeds, quick, steps_per_round=steps, lr=b.lr,
                      prompts_per_round=b.prompts_per_round,
                      samples_per_prompt=b.samples_per_prompt)  # fmt: skip
    metrics, *_ = cached_run(cfg)
    return metrics


def curves(ax, frames: dict, title: str, ylabel: str) -> None:
    for (objective, mode), m in frames.items():
        band(ax, m, "reward/expected", color=PALETTE[objective], label=label(objective, mode),
             ls=MODE_STYLES[mode])  # fmt: skip
    ax.set(xlabel="gradient steps", ylabel=ylabel, ylim=(0, 1.02), title=title)


def per_position(ax, sub: pd.DataFrame, reward: str) -> None:
    cols = [f"mass/optimal_pos{k}" for k in range(1, N_RESPONSE + 1)]
    last = sub[sub.step == sub.step.max()]
    for (objective, mode), m in last.groupby(["objective", "mode"], sort=False):
        mean = m[cols].mean().to_numpy()
        ax.plot(range(1, N_RESPONSE + 1), mean, marker="o", ms=3, color=PALETTE[objective],
                ls=MODE_STYLES[mode], label=label(objective, mode))  # fmt: skip
    start = sub[sub.step == 0][cols].mean().to_numpy()
    ax.plot(range(1, N_RESPONSE + 1), start, color="k", lw=0.8, ls=":", label="π_ref (fitted)")
    ax.set(xlabel="response position", ylabel=f"P(arm {OPTIMAL_ARM[reward]}) after last step",
           ylim=(-0.02, 1.02), title="N-token: optimal arm per position")  # fmt: skip


def main(quick: bool = False) -> None:
    setup()
    table, b = load_table(quick)
    seeds = tuple(sorted(table.seed.unique().tolist()))
    rewards = [r for r in ("R1", "R2") if r in set(table.reward)]
    fig, axes = plt.subplots(len(rewards), 3, figsize=(15, 4.2 * len(rewards)), squeeze=False)
    for i, reward in enumerate(rewards):
        sub = table[table.reward == reward]
        lm = {key: m for key, m in sub.groupby(["objective", "mode"], sort=False)}
        toy = {key: toy_metrics(key[0], reward, key[1], b, seeds) for key in lm}
        curves(axes[i, 0], lm, f"N-token bandit (GPT-2, 9 tokens), {reward}",
               f"expected per-token reward ({reward})")  # fmt: skip
        curves(axes[i, 1], toy, f"single-token bandit (toy MLP), {reward}",
               f"expected reward ({reward})")  # fmt: skip
        per_position(axes[i, 2], sub, reward)
    # one legend below the panels (inside the axes it covered the curves); the right column's
    # handles carry colour and line style, and the fitted π_ref
    handles, labels = axes[0, 2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.suptitle(f"N-token vs single-token bandit: on-policy (solid) vs offline (dashed), "
                 f"{len(seeds)} seed(s), mean ± std")  # fmt: skip
    fig.tight_layout(rect=(0, 0.07 if len(rewards) > 1 else 0.12, 1, 1))
    save(fig, "fig11_token_bandit")


if __name__ == "__main__":
    main()
