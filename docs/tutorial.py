# %% [markdown]
# # From the bandit to a language model on a laptop
#
# This notebook walks the whole path of modeseek in about a minute of CPU time: the 100-arm
# bandit where paper A (Tajwar et al. 2024) makes its case for on-policy data and negative
# gradients, a picture of where the probability mass goes, one gradient claim of paper B
# (Wang et al. 2024, ASFT) checked in closed form, the same training loop on a small
# transformer, and a diagnosis that predicts, before any training, what one step of DPO, ASFT
# or SFT does to the likelihood of each preferred response.
#
# Nothing here needs a GPU or a download: the language model is a randomly initialised
# two-layer GPT-2 whose tokenizer is trained on the Shakespeare text shipped in `data/`. The
# numbers are small-scale versions of the ones in README and `docs/science.md`, which is the
# reference for every formula used below.
#
# The notebook is kept as plain text (jupytext's percent format) in `docs/tutorial.py`. To run
# it yourself, open that file in Jupyter with jupytext installed, or write an executed copy:
# `jupytext --set-kernel python3 --to ipynb --execute docs/tutorial.py -o tutorial.ipynb`.

# %%
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from matplotlib.ticker import MaxNLocator

import llm
import toy
from llm.diagnose import DiagnoseConfig
from llm.diagnose import run as diagnose
from objectives.gradients import pushdown_ratio
from toy.bandit import reference_probs, reward_vector

# %% [markdown]
# ## Settings
#
# The defaults take about a minute on a two-core laptop. Raise `ROUNDS` to 100 to get
# the presets' full budget (1,500 gradient steps per run, as in README's tables), `SEEDS` for
# tighter error bars. The test suite runs the notebook with `MODESEEK_TUTORIAL_QUICK=1`, which
# shrinks everything further; this cell is tagged `parameters`, so papermill can override it.

# %% tags=["parameters"]
ROUNDS = 40  # bandit rounds; each is 10 prompts x 10 samples and 15 gradient steps
SEEDS = (0, 1, 2)  # bandit seeds, trained together as one batched computation
LM_ROUNDS = 6  # on-policy rounds of the tiny language model
N_PAIRS = 12  # preference pairs the diagnosis looks at
THREADS = 1  # torch threads (small tensors: a second thread mostly waits, see below)

# %%
if os.environ.get("MODESEEK_TUTORIAL_QUICK") == "1":
    ROUNDS, SEEDS, LM_ROUNDS, N_PAIRS = 25, (0, 1), 3, 6

# The shipped data sets live in the repository next to the packages.
REPO = Path(llm.__file__).resolve().parent.parent
DATA = REPO / "data"
assert (DATA / "shakespeare_prompts" / "train.jsonl").is_file(), f"no data/ under {REPO}"
WORK = Path(tempfile.mkdtemp(prefix="modeseek-tutorial-"))  # removed at the end
torch.set_num_threads(THREADS)
warnings.filterwarnings("ignore", message="IProgress not found")  # progress bars are off anyway
print(f"bandit: {ROUNDS} rounds x seeds {SEEDS}; language model: {LM_ROUNDS} rounds")

# %% [markdown]
# ## 1. The bandit: where the reward lives matters
#
# The bandit has 100 arms. The reference policy π_ref is a squashed Cauchy distribution
# binned into 100 arms: most of its mass sits on the low arms (an interior mode at arm 16 and
# heavy edge arms), and reward R1 is a Gaussian bump centred on arm 70, where π_ref has
# almost nothing (docs/science.md §2). A method that only imitates good samples drawn from
# π_ref will rarely see one near the peak; paper A's claim is that sampling from the current
# policy (on-policy data) and explicitly pushing down bad samples (a negative gradient, as in
# DPO) each help here, and help most together.

# %%
pi_ref = reference_probs().numpy()
r1 = reward_vector("R1").numpy()
print(f"π_ref(arm 70) = {pi_ref[70]:.4f}, π_ref mass on arms 60-80 = {pi_ref[60:81].sum():.3f}")
print(f"expected R1 under π_ref = {(pi_ref * r1).sum():.3f} (the maximum is 1)")

# %% [markdown]
# We train four policies with the same budget: DPO and best-of-N (supervised fine-tuning on
# each prompt's best sample; no negative gradient), each on-policy and offline. *Offline*
# here means every round draws fresh samples from π_ref instead of the current policy, so the
# two modes see exactly the same number of reward queries. The presets `onpolicy_dpo` and
# `onpolicy_bon` use paper A's budget per round: 10 prompts, 10 samples per prompt, 15
# gradient steps; Adam at 1e-3 and DPO's β = 0.1. `out_dir=""` keeps everything in memory.

# %%
METHODS = {
    "on-policy DPO": ("onpolicy_dpo", "on_policy"),
    "offline DPO": ("onpolicy_dpo", "offline"),
    "on-policy best-of-N": ("onpolicy_bon", "on_policy"),
    "offline best-of-N": ("onpolicy_bon", "offline"),
}
runs = {}
for label, (name, mode) in METHODS.items():
    cfg = toy.preset(name, mode=mode, rounds=ROUNDS, seeds=SEEDS, out_dir="", progress=False)
    runs[label] = toy.run(cfg)

rows = []
for label, result in runs.items():
    m = result.metrics
    last = m[m.step == m.step.max()]
    rows.append(
        {
            "method": label,
            "expected reward": last["reward/expected"].mean(),
            "sd over seeds": last["reward/expected"].std(),
            "mass on arm 70": last["mass/optimal"].mean(),
            "KL(π‖π_ref)": last["policy/kl_ref"].mean(),
            "most likely arm, per seed": ", ".join(
                f"{p.argmax()} ({p.max():.2f})" for p in result.dist[-1]
            ),
        }
    )
final = pd.DataFrame(rows).set_index("method")
print(f"after {runs['on-policy DPO'].config.total_steps} gradient steps:")
display(final.round(3))

# %% [markdown]
# On-policy sampling is the big lever (paper A's claim A1, docs/science.md §9): both
# on-policy methods end with nearly all their mass on or next to arm 70. Offline best-of-N
# imitates the best of each prompt's ten π_ref samples, so with enough steps it learns the
# distribution of that best sample, whose expected reward we can compute exactly:

# %%
order = np.argsort(r1)  # arms by reward; the best of 10 is at most arm k with prob. F(k)^10
cdf = np.cumsum(pi_ref[order])
best_of_10 = np.empty(100)
best_of_10[order] = cdf**10 - (cdf - pi_ref[order]) ** 10
print(f"expected R1 of the best of 10 samples from π_ref = {(best_of_10 * r1).sum():.3f}")

# %% [markdown]
# That is the ceiling offline best-of-N is climbing towards, and more training does not
# raise it: only samples from a better policy would. The negative gradient (claim A2) changes
# what the offline runs do rather than simply how well: offline DPO pushes down every arm it
# has seen lose and piles each seed's mass onto the few arms its π_ref samples made look best
# (see the last column of the table). Sometimes they sit at the peak, sometimes well away
# from it, hence the large spread over seeds. With the presets' full 1,500 steps
# (`ROUNDS = 100`) offline DPO averages 0.85 on seeds 0–2 against 0.30 for offline
# best-of-N. The KL column is the price of all this: the winners have moved furthest from
# π_ref.
#
# ## 2. Watching the mass move
#
# `result.dist` holds the mean of π(·|x) over the 100 evaluation contexts every 15 steps. The
# left panel follows on-policy DPO (first seed) from π_ref to the peak; the middle one compares
# where each method ends; the right one is the expected reward along the way (mean over the
# seeds, band = min to max).

# %%
fig, (ax_t, ax_f, ax_r) = plt.subplots(1, 3, figsize=(15, 4))
arms = np.arange(100)
dpo = runs["on-policy DPO"]
snapshots = [0, 150, 240, 300, int(dpo.dist_steps[-1])]
for i, step in enumerate(snapshots):
    k = int(np.searchsorted(dpo.dist_steps, step))
    colour = plt.cm.viridis(i / (len(snapshots) - 1))
    ax_t.plot(arms, dpo.dist[k, 0], color=colour, label=f"step {dpo.dist_steps[k]}")
ax_t.set(title="on-policy DPO, seed 0", xlabel="arm", ylabel="π(arm)", yscale="log")
ax_t.set_ylim(1e-5, 1.5)
ax_t.legend(fontsize=8)

ax_f.fill_between(arms, pi_ref, color="0.85", label="π_ref")
for label, result in runs.items():
    ax_f.plot(arms, result.dist[-1].mean(axis=0), label=label)
ax_f.set(title="final distribution (mean over seeds)", xlabel="arm", ylabel="π(arm)")
ax_f.set(yscale="log", ylim=(1e-5, 1.5))
ax_f.legend(fontsize=8, loc="upper left")
ax_reward = ax_f.twinx()
ax_reward.plot(arms, r1, "k:", label="R1")
ax_reward.set_ylabel("R1 (dotted)")

for label, result in runs.items():
    curve = result.metrics.groupby("step")["reward/expected"]
    mean, low, high = curve.mean(), curve.min(), curve.max()
    ax_r.plot(mean.index, mean, label=label)
    ax_r.fill_between(mean.index, low, high, alpha=0.2)
ax_r.set(title="expected reward", xlabel="gradient step", ylim=(0, 1.02))
ax_r.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The left panel shows the relocation in two acts. First the distribution flattens: the
# heavy low arms are what π_ref samples most, they lose most of their pairs, and their mass
# spreads over all the others. Then a broad bump rises over the high arms, broad because
# every arm near 70 wins its pairs against arms further away, and it sharpens onto 70 as
# those neighbours start losing to 70 itself. On-policy training also stops by itself: once
# nearly every sample is arm 70, all samples tie, ties never form pairs, and DPO has nothing
# left to push (the `pairs/valid` metric falls towards zero: see the next section's table).
#
# ## 3. A gradient claim in closed form
#
# Paper B's argument against DPO is about probability space. Write x_w = π(y_w) and
# x_l = π(y_l) for the two responses of a pair. The *push-down ratio*
# |∂L/∂x_l| / |∂L/∂x_w| says how much harder the loss pushes the rejected response down than
# it pulls the chosen one up. For DPO it is exactly x_w / x_l, whatever β and the reference
# (docs/science.md §4), so it is unbounded as π(y_l) → 0; for ASFT it is
# λ x_w / ((1 + λ)(1 − x_l)), always below λ/(1 + λ). `objectives.gradients` computes it for
# every objective in the registry from its closed-form partials:

# %%
x_w = torch.full((4,), 0.3, dtype=torch.float64)
x_l = torch.tensor([0.1, 0.01, 1e-3, 1e-6], dtype=torch.float64)
lam = 0.1
claims = pd.DataFrame(
    {
        "π(y_l)": x_l.numpy(),
        "DPO, β = 0.1": pushdown_ratio("dpo", x_w, x_l, 0.5, 0.5, beta=0.1).numpy(),
        "DPO, β = 10": pushdown_ratio("dpo", x_w, x_l, 0.2, 0.01, beta=10.0).numpy(),
        "x_w / x_l": (x_w / x_l).numpy(),
        "ASFT, λ = 0.1": pushdown_ratio("asft", x_w, x_l, lam=lam).numpy(),
        "λ x_w / ((1+λ)(1-x_l))": (lam * x_w / ((1 + lam) * (1 - x_l))).numpy(),
    }
).set_index("π(y_l)")
np.testing.assert_allclose(claims["DPO, β = 0.1"], claims["x_w / x_l"], rtol=1e-9)
np.testing.assert_allclose(claims["DPO, β = 10"], claims["x_w / x_l"], rtol=1e-9)
np.testing.assert_allclose(claims["ASFT, λ = 0.1"], claims["λ x_w / ((1+λ)(1-x_l))"], rtol=1e-9)
dpo_ratio, asft_ratio = claims.loc[0.1, ["DPO, β = 0.1", "ASFT, λ = 0.1"]]
print(f"at π(y_w) = 0.3, π(y_l) = 0.1: DPO {dpo_ratio:.3f}, ASFT {asft_ratio:.4f}")
display(claims)

# %% [markdown]
# The claim reproduces to floating-point precision (the cell asserts it): DPO's ratio is
# 3 at (0.3, 0.1) and 300,000 when π(y_l) is a millionth; ASFT's never exceeds
# λ/(1 + λ) = 0.091. (`python -m toy.gradients point --objective dpo --x-w 0.3 --x-l 0.1` prints
# the same numbers.)
#
# What does the ratio look like during training? Because DPO's ratio is x_w/x_l pair by pair,
# exp(mean ℓ_w − mean ℓ_l) over a step's pairs is the geometric mean of the ratios that step
# saw, and the bandit logs both means (`logps/chosen`, `logps/rejected`; averaged here over
# the seeds):

# %%
per_step = dpo.metrics.groupby("step")[["logps/chosen", "logps/rejected", "pairs/valid"]].mean()
per_step["push-down (geometric mean)"] = np.exp(
    per_step["logps/chosen"] - per_step["logps/rejected"]
)
shown = per_step.index.isin([1, 15, 150, 225, 300, 375, 450])
display(per_step.loc[shown, ["push-down (geometric mean)", "pairs/valid"]])

# %% [markdown]
# At the start the chosen arm (nearer the peak) is usually the *less* likely one, so DPO
# pulls it up harder than it pushes the loser down (ratio below 1). As the policy
# concentrates on the peak the losers become rare, the ratio climbs past 1 by an order of
# magnitude, and then the pairs disappear altogether (NaN: no valid pairs). The lopsided
# push-down paper B warns about does happen here, late in training, and on-policy sampling
# ends it by itself once there is nothing left to compare.
#
# A second number README tabulates is the speed of concentration: the first gradient step at
# which the policy puts 50% and 90% of its mass on arm 70 (`python -m toy.gradients steps`, the
# mean over the seeds that get there). Our on-policy runs give it directly:

# %%
README_STEPS = {"on-policy DPO": (309, 338), "on-policy best-of-N": (271, 358)}  # seeds 0-2
rows = []
for label, readme in README_STEPS.items():
    m = runs[label].metrics
    row = {"method": label}
    for threshold, quoted in zip((0.5, 0.9), readme):
        first = m[m["mass/optimal"] >= threshold].groupby("seed").step.min()
        row[f"steps to {threshold:.0%}"] = first.mean()
        row[f"seeds reaching {threshold:.0%}"] = f"{len(first)} of {len(SEEDS)}"
        row[f"README, {threshold:.0%}"] = quoted
    rows.append(row)
steps_to_mass = pd.DataFrame(rows).set_index("method")
display(steps_to_mass)

# %% [markdown]
# With seeds 0, 1 and 2 and at least 30 rounds these are README's numbers to the step: a seed
# gives the same trajectory alone or batched with others. README's numbers also show a claim
# that does *not* hold at this learning rate: on-policy DPO is not faster than on-policy
# best-of-N at reaching half the mass, only at reaching 90%, and tuned best-of-N matches it
# there too (README, "Gradient claims").
#
# ## 4. The same loop on a language model
#
# Now replace the arms by sequences. `llm.TrainConfig` takes the same round knobs as the
# bandit (`mode`, `rounds`, `prompts_per_round`, `samples_per_prompt`, `steps_per_round`):
# each round samples 8 responses to each of 8 prompts, scores them, forms all pairs with
# different rewards and takes 2 optimiser steps. The model is `tiny-gpt2`, the harness's
# default: a random-init GPT-2 with 2 layers of width 64 and a byte-level BPE tokenizer
# trained on the prompts. The reward is paper A's *Min Length* task, r = −(number of response
# tokens), responses capped at 16 tokens; any `module:function` taking
# `(prompts, responses, token_ids)` or a reward-model directory works the same way.
#
# `eval_prompts=8` logs the policy's own mean response length after every round on 8 fixed
# prompts. We run it on-policy and offline (every round sampled from the frozen reference).
# One torch thread: on tensors this small a second thread mostly waits for a core that is
# busy elsewhere, and on a shared machine that makes the run several times slower.

# %%
lm_cfg = llm.TrainConfig(
    model="tiny-gpt2",
    mode="on_policy",
    prompts=str(DATA / "shakespeare_prompts" / "train.jsonl"),
    reward="length_min",
    objective="dpo",
    rounds=LM_ROUNDS,
    prompts_per_round=8,
    samples_per_prompt=8,
    steps_per_round=2,
    max_new_tokens=16,
    lr=1e-2,
    lr_scheduler="constant_with_warmup",
    eval_prompts=8,
    eval_every=1,
    save_final=False,
    out_dir="",
    progress=False,
)
lm_runs = {mode: llm.run(lm_cfg.replace(mode=mode)) for mode in ("on_policy", "offline")}
lm_table = pd.concat(
    {
        mode: result.metrics.set_index("round")[
            ["eval/response/length_mean", "pairs/valid", "policy/kl_ref"]
        ]
        for mode, result in lm_runs.items()
    },
    axis=1,
)
display(lm_table.round(2))

# %% [markdown]
# The columns are the policy's own mean response length after each round (tokens, EOS
# excluded), the number of valid pairs the round produced, and a sampled estimate of
# KL(π‖π_ref), the mean of ℓ_π − ℓ_ref over the policy's samples (offline there are none, and
# the estimate reweights the reference's samples, which is why it can dip below zero). Round 0
# samples the reference in both modes, so their first rows agree.

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
for mode, result in lm_runs.items():
    m = result.metrics
    ax.plot(m["round"], m["eval/response/length_mean"], "o-", label=mode.replace("_", "-"))
ax.set(xlabel="round", ylabel="mean response length (tokens)", title="tiny GPT-2, Min Length")
ax.set_ylim(bottom=0)
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
ax.legend()
fig.tight_layout()
plt.show()
lengths = {mode: r["eval/response/length_mean"] for mode, r in lm_runs.items()}
print({mode: f"{length:.1f} tokens after the last round" for mode, length in lengths.items()})

# %% [markdown]
# On-policy DPO shortens the responses round after round, the language-model twin of the
# bandit's relocation: as the policy drifts towards short answers it samples more of them,
# so its pairs compare short against shorter. Offline, the reference keeps answering with
# long, mostly capped responses; capped responses all score −16 and tie, so few pairs form
# (see `pairs/valid`) and the policy learns slowly. At README's scale (REINFORCE, 6 rounds)
# the same contrast is 2.0 against 11.9 tokens; paper A's Min Length result reproduces for
# on-policy DPO (docs/science.md §9). A policy that learns to say almost nothing is also a
# reminder that it optimises the reward you wrote, not the one you meant.
#
# ## 5. Diagnose before you train
#
# A negative gradient can backfire. With shared features, a DPO step that widens the margin
# can *lower* log π(y_w) as well as log π(y_l): likelihood displacement (Razin et al. 2024;
# docs/science.md §4 and §7). `llm.diagnose` predicts it per preference pair on your model,
# before training: from the gradients ∇ℓ_w and ∇ℓ_l it gives the first-order change of ℓ_w
# and ℓ_l after one SGD step of each objective (paper A's Lemma 6.2 expression), and with
# `verify=True` takes that step to check. `batch_step=True` does the same for one step on all
# the pairs together, the situation of a training batch. Here: a few shipped Shakespeare
# preference pairs (a passage vs the same words shuffled, or vs a line from another play) on
# the tiny GPT-2.

# %%
summary = diagnose(
    DiagnoseConfig(
        data=str(DATA / "shakespeare_prefs" / "train.jsonl"),
        n_pairs=N_PAIRS,
        objective=("dpo", "asft", "sft"),
        verify=True,
        batch_step=True,
        top=2,
        out_dir=str(WORK / "diagnose"),
        progress=False,
    )
)

# %% [markdown]
# The printed summary is the one the command line prints for
# `python -m llm.diagnose --n-pairs 12 --verify --batch-step`. The returned dictionary holds
# the same numbers; these are the ones to read first:

# %%
keys = {
    "pred_displace_share": "predicted Δℓ_w < 0",
    "meas_displace_share": "measured Δℓ_w < 0",
    "batch_meas_displace_share": "measured Δℓ_w < 0, batch step",
    "sign_acc_w": "sign accuracy Δℓ_w",
    "meas_rejected_down_share": "measured Δℓ_l < 0",
    "median_log10_pushdown": "median log10 push-down",
}
reading = pd.DataFrame(summary["objectives"]).T[list(keys)].rename(columns=keys)
display(reading.astype(float).round(4))

# %% [markdown]
# On this random-init model every prediction has the sign the real step measures, and no
# objective lowers log π(y_w) on these pairs, alone or in the batch step. README's run on
# SmolLM2-135M shows the other case: there one DPO step on a batch of 96 pairs lowers
# log π(y_w) for 15% of them, and the gradient inner products predict which. The objectives
# already differ in what they do to y_l: DPO pushes every rejected response down, while ASFT
# and SFT lift most of them along with the chosen ones.
#
# The push-down column is section 3's ratio at the model's own probabilities, in log10 (SFT
# pushes nothing down: log10 0 = −inf). For DPO the per-pair table confirms that it is
# π(y_w)/π(y_l) of the whole sequences (the cell asserts it). This untrained model often finds
# the rejected response the likelier one, so the ratio starts far below 1; it is as training
# makes y_l unlikely that DPO's ratio grows without bound, the regime paper B warns about.

# %%
pairs = pd.read_csv(WORK / "diagnose" / "pairs.csv")
dpo_pairs = pairs[pairs.objective == "dpo"]
log10_ratio = (dpo_pairs.logp_w - dpo_pairs.logp_l) / np.log(10)
np.testing.assert_allclose(dpo_pairs.log10_pushdown, log10_ratio, atol=1e-4)
columns = ["pair", "group", "logp_w", "logp_l", "log10_pushdown", "pred_dlogp_w", "meas_dlogp_w"]
display(dpo_pairs[columns].head().round(4))

# %% [markdown]
# ## Where to go from here
#
# - The bandit at full scale, any objective, any preset:
#   `python -m toy.train --preset onpolicy_dpo --seeds 0 1 2 3 4`; a whole grid as one batched
#   computation: `python -m toy.sweep --preset onpolicy_dpo --grid lr=1e-3,3e-3 beta=0.1,0.3`.
# - Every gradient claim as a table: `python -m toy.gradients point`, `field`, `mass`,
#   `lemma`, `displacement`, `kl` and `steps`.
# - A real model on CPU: SmolLM2-135M-Instruct with LoRA (README, "A real model on CPU"), and
#   its diagnosis with `--verify --batch-step` before you spend compute on it.
# - The claims, and what this repository found for each: docs/science.md §9.

# %%
shutil.rmtree(WORK, ignore_errors=True)
