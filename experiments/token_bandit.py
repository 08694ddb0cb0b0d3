"""The N-token bandit (docs/science.md §2) as a language-model task for the rounds harness.

A response is 9 tokens, each an arm of the categorical bandit (token id = arm, K = 100); the
prompt is one arm token. The reference LM is a Hugging Face GPT-2 (3 layers, 3 heads, width 48,
vocabulary exactly the 100 arms) fitted on CPU so that every next-token distribution, whatever the
prefix, matches the toy's π_ref (``toy.bandit.reference_probs``). The reward of a response is the
mean over its 9 tokens of the toy's R1 or R2 (``reward_r1`` / ``reward_r2``, ``module:function``
rewards of ``llm.rewards``). Training uses the harness unchanged: standard shifted log-probs
(``llm.logps``), the registry objectives, ``llm.train.run``.

Choices (ours):
- The model's output vocabulary is the 100 arms and nothing else, so every log-prob and every
  next-token distribution is a distribution over arms. The tokenizer has one extra token,
  ``<|pad|>`` (id 100), serving as pad/EOS for the harness; it lies outside the model's vocabulary
  and so can never be sampled: the harness's ``HFSampler`` always returns exactly 9 arm tokens.
- Prompts are the 100 arm tokens (a one-token prompt); 80 train, 20 held out for the metrics.
- The fit minimises the mean over positions of KL(π_ref ‖ π_θ(·|prefix)) on fresh random prefixes
  (half drawn uniformly, half from π_ref), full-batch Adam; it is cached by a hash of ``FitConfig``.
- Exact metrics (``exact_metrics``): M prefixes per held-out prompt are sampled from the policy;
  at each of the 9 positions the next-token distribution π(·|x, y_<k) is read off one forward pass
  and Σ_a π(a|·) r(a), π(70|·), KL(π‖π_ref) are computed exactly (a Rao-Blackwellised estimate:
  unbiased for the expected per-token reward, exact at position 1, which depends on the prompt
  only). The prefixes use a fixed seed, so rounds are compared on common random numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from llm.sampling import Samples
from runio import config_hash
from toy.bandit import N_ARMS, reference_probs, reward_vector

N_RESPONSE = 9
PAD = "<|pad|>"
OPTIMAL_ARM = {"R1": 70, "R2": 20}
N_TRAIN_PROMPTS = 80
N_OFFLINE_PROMPTS = 10


@dataclass(frozen=True)
class FitConfig:
    """The reference LM and its fit to π_ref (every field is in the cache key)."""

    n_layer: int = 3
    n_head: int = 3
    n_embd: int = 48
    steps: int = 500
    """Full-batch Adam steps of the fit."""
    lr: float = 3e-3
    batch: int = 256
    """Fresh random prefixes per fit step (prompt + 9 tokens each)."""
    seed: int = 0
    version: int = 2
    """Bump when the fitting code changes."""


# ---- tokenizer, model, prompts -----------------------------------------------------------------


def build_tokenizer():
    """Word-level tokenizer: ``a0`` … ``a99`` are ids 0…99 (the arms), ``<|pad|>`` is id 100."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"a{i}": i for i in range(N_ARMS)} | {PAD: N_ARMS}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=PAD)


def build_model(fit: FitConfig):
    """A random-init GPT-2 whose vocabulary is the 100 arms (dropout off)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(fit.seed)
    cfg = GPT2Config(
        vocab_size=N_ARMS, n_positions=1 + N_RESPONSE, n_embd=fit.n_embd, n_layer=fit.n_layer,
        n_head=fit.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg).float()


def random_sequences(n: int, gen: torch.Generator) -> Tensor:
    """(n, 10) prompt + 9 tokens: the first half uniform over arms, the rest drawn from π_ref."""
    uniform = torch.randint(N_ARMS, (n - n // 2, 1 + N_RESPONSE), generator=gen)
    k = (n // 2) * (1 + N_RESPONSE)
    ref = torch.multinomial(reference_probs().float(), k, replacement=True, generator=gen)
    return torch.cat([uniform, ref.view(n // 2, -1)])


def next_token_logprobs(lm, seqs_BT: Tensor) -> Tensor:
    """log π(·|x, y_<k) at the 9 response positions, (B, 9, K), one forward pass."""
    logits = lm(input_ids=seqs_BT[:, :N_RESPONSE]).logits.float()
    return torch.log_softmax(logits, -1)


def kl_per_position(lm, seqs_BT: Tensor) -> Tensor:
    """Mean over rows of KL(π_ref ‖ π_θ(·|prefix)) at each response position, (9,)."""
    logp_ref = reference_probs().float().log()
    logq_BTK = next_token_logprobs(lm, seqs_BT)
    return (logp_ref.exp() * (logp_ref - logq_BTK)).sum(-1).mean(0)


def fit_reference(fit: FitConfig) -> tuple[object, dict]:
    """(model fitted to π_ref, report with the held-out KL per position)."""
    lm = build_model(fit)
    gen = torch.Generator().manual_seed(fit.seed)
    opt = torch.optim.Adam(lm.parameters(), lr=fit.lr)
    for _ in range(fit.steps):
        loss = kl_per_position(lm, random_sequences(fit.batch, gen)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    lm.eval()
    with torch.no_grad():
        held = random_sequences(4096, torch.Generator().manual_seed(fit.seed + 1))
        kl = kl_per_position(lm, held)
    return lm, {"kl_ref_per_position": kl.tolist(), "kl_ref_max": float(kl.max()),
                "fit": asdict(fit)}  # fmt: skip


def write_prompts(out: Path) -> tuple[Path, Path, Path]:
    """One-token prompts, from a seeded permutation of the arms: train.jsonl (80 arms),
    heldout.jsonl (the other 20, for the metrics) and offline.jsonl (the first
    ``N_OFFLINE_PROMPTS`` train prompts: the fixed offline dataset's prompts)."""
    order = torch.randperm(N_ARMS, generator=torch.Generator().manual_seed(0)).tolist()
    paths = out / "train.jsonl", out / "heldout.jsonl", out / "offline.jsonl"
    arm_sets = order[:N_TRAIN_PROMPTS], order[N_TRAIN_PROMPTS:], order[:N_OFFLINE_PROMPTS]
    for path, arms in zip(paths, arm_sets):
        path.write_text("".join(json.dumps({"prompt": f"a{a}"}) + "\n" for a in arms))
    return paths


def prepare(fit: FitConfig = FitConfig(), cache_dir: str = "~/.cache/modeseek") -> Path:
    """The cached directory ``<cache_dir>/token_bandit/<hash>`` holding the fitted model
    (config.json, weights, tokenizer), ``fit_report.json`` and the prompt files; fitted once."""
    out = Path(cache_dir).expanduser() / "token_bandit" / config_hash(asdict(fit), n=16)
    if (out / "fit_report.json").exists():
        return out
    lm, report = fit_reference(fit)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(tmp)
    build_tokenizer().save_pretrained(tmp)
    write_prompts(tmp)
    (tmp / "fit_report.json").write_text(json.dumps(report, indent=1))
    tmp.rename(out)
    return out


def load_prompt_ids(path: Path) -> list[int]:
    """The arm ids of a prompts file written by ``write_prompts``."""
    return [int(json.loads(line)["prompt"][1:]) for line in open(path)]


# ---- rewards ----------------------------------------------------------------------------------


def token_rewards(token_ids: Sequence[Sequence[int]], reward: str) -> list[float]:
    """Mean over each response's tokens of the toy's reward vector."""
    r_K = reward_vector(reward)
    return [float(r_K[torch.as_tensor(list(t), dtype=torch.long)].mean()) for t in token_ids]


def reward_r1(prompts, responses, token_ids) -> list[float]:
    """``experiments.token_bandit:reward_r1``: mean over response tokens of R1 (peak at arm 70)."""
    return token_rewards(token_ids, "R1")


def reward_r2(prompts, responses, token_ids) -> list[float]:
    """``experiments.token_bandit:reward_r2``: mean over response tokens of R2 (peak at arm 20)."""
    return token_rewards(token_ids, "R2")


# ---- exact metrics ----------------------------------------------------------------------------


@torch.no_grad()
def sample_sequences(lm, prompt_ids: Sequence[int], m: int, gen: torch.Generator) -> Tensor:
    """(len(prompt_ids)·m, 10) prompt + 9 tokens sampled from ``lm`` (temperature 1)."""
    seqs = torch.tensor(list(prompt_ids)).repeat_interleave(m)[:, None]
    for _ in range(N_RESPONSE):
        probs = torch.softmax(lm(input_ids=seqs).logits[:, -1].float(), -1)
        seqs = torch.cat([seqs, torch.multinomial(probs, 1, generator=gen)], 1)
    return seqs


def position_metrics(logq_BTK: Tensor, reward: str) -> dict[str, Tensor]:
    """Per position (9,): expected reward Σ_a π(a) r(a), P(optimal arm), KL(π‖π_ref), entropy,
    each averaged over the rows' prefixes."""
    q_BTK = logq_BTK.exp()
    logp_K = reference_probs().float().log()
    r_K = reward_vector(reward).float()
    return {
        "reward": (q_BTK @ r_K).mean(0),
        "optimal": q_BTK[..., OPTIMAL_ARM[reward]].mean(0),
        "kl": (q_BTK * (logq_BTK - logp_K)).sum(-1).mean(0),
        "entropy": -(q_BTK * logq_BTK).sum(-1).mean(0),
    }


@torch.no_grad()
def exact_metrics(lm, prompt_ids: Sequence[int], reward: str, m: int = 8, seed: int = 0):
    """The policy's next-token distributions along M own prefixes per held-out prompt:
    ``reward/expected`` (mean per-token expected reward), ``mass/optimal`` (mean over positions of
    P(arm 70 | R1, arm 20 | R2)), ``mass/optimal_pos{k}`` (k = 1…9), ``token/kl_ref`` and
    ``token/entropy`` (per token; KL to the toy's π_ref itself). ``policy/kl_ref`` is the
    harness's own sampled-sequence estimate, kept apart."""
    was_training = lm.training
    lm.eval()
    seqs = sample_sequences(lm, prompt_ids, m, torch.Generator().manual_seed(seed))
    pos = position_metrics(next_token_logprobs(lm, seqs), reward)
    lm.train(was_training)
    out = {
        "reward/expected": float(pos["reward"].mean()),
        "mass/optimal": float(pos["optimal"].mean()),
        "token/kl_ref": float(pos["kl"].mean()),
        "token/entropy": float(pos["entropy"].mean()),
    }
    out |= {f"mass/optimal_pos{k + 1}": float(v) for k, v in enumerate(pos["optimal"])}
    return out


# ---- a fixed offline dataset through the rounds harness ---------------------------------------


class FixedSampler:
    """Wraps a sampler so that each prompt's samples are drawn once and then returned every round:
    ``--mode offline`` with it and a prompts file of exactly P prompts trains on one fixed π_ref
    dataset (paper A's offline setting) while the harness logs a record every T steps."""

    def __init__(self, inner):
        self.inner, self.cache = inner, {}

    def sample(self, model, prompts, n: int, seed: int) -> Samples:
        new = [p for p in dict.fromkeys(map(tuple, prompts)) if p not in self.cache]
        if new:
            s = self.inner.sample(model, new, n, seed)
            for i, p in enumerate(new):
                rows = slice(i * n, (i + 1) * n)
                self.cache[p] = Samples(s.tokens_BT[rows], s.mask_BT[rows], s.lengths_B[rows],
                                        s.ended_B[rows])  # fmt: skip
        parts = [self.cache[tuple(p)] for p in prompts]
        if len({x.tokens_BT.shape[1] for x in parts}) != 1:
            raise ValueError("FixedSampler needs equal-length responses")
        return Samples(*(torch.cat([getattr(x, f) for x in parts]) for f in
                         ("tokens_BT", "mask_BT", "lengths_B", "ended_B")))  # fmt: skip
