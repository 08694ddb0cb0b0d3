"""The bridge: with one-token responses, an LLM's next-token distribution after the prompt is a
tabular softmax policy over the vocabulary, so every pairwise and chosen-only objective must give
the same loss (and parameter gradient) through llm/ as through the toy's ``tabular_inputs``. The
reference is a different model, so dropping or misusing it changes the value. With multi-token
responses the harness must feed per-token means exactly to the objectives that need them."""

import functools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from torch import Tensor

import objectives
from llm import step, tiny
from llm.config import TrainConfig
from llm.data import Example, collate
from llm.logps import PolicyLogps
from llm.reference import LiveReference, NoReference, PrecomputedReference
from llm.step import batch_loss, pair_inputs
from runio import UserError

OFFLINE = sorted(k for k, o in objectives.OBJECTIVES.items() if o.data != "groups")
GROUPS = sorted(k for k, o in objectives.OBJECTIVES.items() if o.data == "groups")
# non-default hyperparameters so that a dropped hyperparameter is noticed
HP = {"dpo": {"beta": 0.7}, "ipo": {"tau": 0.3}, "kto": {"beta": 0.4}, "simpo": {"gamma": 0.2}}
HP |= {"slic": {"delta": 3.0, "lam": 0.2}, "orpo": {"lam": 0.5}, "asft": {"lam": 0.3}}
MEAN_OBJECTIVES = {"orpo", "simpo", "asft"}  # per the papers: length-normalised log-probs


@functools.lru_cache
def setup():
    tok = tiny.build_tokenizer(["the quick brown fox jumps over the lazy dog"] * 20)
    policy_lm = tiny.build_model("tiny-llama", tok, seed=1)
    ref_lm = tiny.build_model("tiny-llama", tok, seed=2).requires_grad_(False)
    assert len(tok) > 160
    return tok, policy_lm, ref_lm


def reference_for(obj, ref_lm):
    if not obj.needs_ref:
        return NoReference()
    ref = PolicyLogps(ref_lm)
    return LiveReference(lambda b: ref(b["input_ids"], b["attention_mask"], b["loss_mask"]))


@pytest.mark.parametrize("name", OFFLINE)
def test_one_token_responses_match_tabular_policy(name):
    tok, policy_lm, ref_lm = setup()
    obj = objectives.OBJECTIVES[name]
    prompt = tuple(tok("the quick brown")["input_ids"])
    chosen_B = torch.tensor([10, 40, 77, 130, 150, 7])
    rejected_B = torch.tensor([11, 41, 100, 131, 151, 8])
    pairs = zip(chosen_B.tolist(), rejected_B.tolist())
    examples = [Example(i, prompt, (c,), (r,)) for i, (c, r) in enumerate(pairs)]
    batch = collate(examples, tok.pad_token_id)
    loss_B, stats_BK = batch_loss(
        PolicyLogps(policy_lm, chunk=2), reference_for(obj, ref_lm), batch, obj, HP.get(name, {})
    )
    llm_loss = loss_B.mean()

    ids = torch.tensor([prompt])
    logits_K = policy_lm(input_ids=ids).logits[0, -1]
    ref_logps_K = ref_lm(input_ids=ids).logits[0, -1].log_softmax(-1)
    inputs = objectives.tabular_inputs(
        name, logits_K, ref_logps_K, chosen=chosen_B, rejected=rejected_B
    )
    toy_loss = objectives.OBJECTIVES[name](**inputs, **HP.get(name, {})).mean()
    torch.testing.assert_close(llm_loss, toy_loss, rtol=1e-5, atol=1e-6)
    w = policy_lm.lm_head.weight
    (g_llm,) = torch.autograd.grad(llm_loss, w)
    (g_toy,) = torch.autograd.grad(toy_loss, w)
    torch.testing.assert_close(g_llm, g_toy, rtol=1e-4, atol=1e-7)
    # the logged implicit margin is ρ_w - ρ_l with the reference when the objective has one
    ref_logps = ref_logps_K if obj.needs_ref else torch.zeros_like(ref_logps_K)
    rho_K = logits_K.log_softmax(-1) - ref_logps
    h_B = rho_K[chosen_B] - rho_K[rejected_B]
    torch.testing.assert_close(stats_BK[:, 9], h_B.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", OFFLINE)
def test_multi_token_responses_use_sums_or_means(name):
    tok, policy_lm, ref_lm = setup()
    obj = objectives.OBJECTIVES[name]
    examples = [Example(0, (1, 5, 9), (20, 21, 22, 23), (30,)), Example(1, (1, 6), (40,), (50, 51))]
    batch = collate(examples, tok.pad_token_id)
    policy, ref = PolicyLogps(policy_lm), PolicyLogps(ref_lm)
    args = (batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    with torch.no_grad():
        sums, counts = policy(*args)
        ref_sums, ref_counts = ref(*args)
    assert counts.tolist() == [4, 1, 1, 2]
    inputs = pair_inputs(obj, sums, counts, (ref_sums, ref_counts) if obj.needs_ref else None)
    expected = sums / counts if name in MEAN_OBJECTIVES else sums
    torch.testing.assert_close(inputs["chosen_logps"], expected[:2])
    if obj.data == "pairs":
        torch.testing.assert_close(inputs["rejected_logps"], expected[2:])
    assert ("ref_chosen_logps" in inputs) == obj.needs_ref
    if obj.needs_ref:
        ref_expected = ref_sums / ref_counts if name in MEAN_OBJECTIVES else ref_sums
        torch.testing.assert_close(inputs["ref_rejected_logps"], ref_expected[2:])
        with pytest.raises(ValueError, match=r"needs .*ref_chosen_logps"):
            pair_inputs(obj, sums, counts, None)


@pytest.mark.parametrize("name", GROUPS)
def test_group_objectives_are_rejected_for_offline_pairs(name):
    with pytest.raises(ValueError, match=r"TrainConfig.objective: .*on-policy.*choose from"):
        TrainConfig(objective=name)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"TrainConfig.objective: unknown 'nope'"):
        TrainConfig(objective="nope")
    with pytest.raises(ValueError, match=r"no hyperparameter"):
        TrainConfig(objective="dpo", hp=("gamma=1",))
    with pytest.raises(ValueError, match=r"TrainConfig.max_prompt_len"):
        TrainConfig(max_len=64, max_prompt_len=64)
    with pytest.raises(ValueError, match=r"TrainConfig.ref: 'adapter' needs --lora"):
        TrainConfig(ref="adapter")


@pytest.mark.parametrize("name", ["sft", "dpo", "ipo"])
def test_length_norm_switch_feeds_means(name):
    """``length_norm=mean`` (TRL's sft/sigmoid_norm/ipo) makes the harness pass ℓ/|y| for the
    policy and the reference, and the logged rewards follow the same convention."""
    obj = objectives.OBJECTIVES[name]
    sums = torch.tensor([-4.0, -3.0, -6.0, -2.0])
    counts = torch.tensor([4.0, 1.0, 3.0, 2.0])
    ref = (torch.tensor([-2.0, -1.0, -3.0, -4.0]), counts)
    hp = {"length_norm": "mean"}
    inputs = pair_inputs(obj, sums, counts, ref if obj.needs_ref else None, hp)
    torch.testing.assert_close(inputs["chosen_logps"], torch.tensor([-1.0, -3.0]))
    if obj.needs_ref:
        torch.testing.assert_close(inputs["ref_rejected_logps"], torch.tensor([-1.0, -2.0]))
        stats = step.pair_stats(obj, torch.zeros(2), sums, counts, ref, hp)
        # ρ_w = ℓ̄_w - ℓ̄_ref: (-1 - -0.5, -3 - -1) = (-0.5, -2)
        torch.testing.assert_close(stats[:, 7], torch.tensor([-0.5, -2.0]))
    default = pair_inputs(obj, sums, counts, ref if obj.needs_ref else None)
    torch.testing.assert_close(default["chosen_logps"], sums[:2])


def test_hyperparameter_required_inputs_in_the_harness():
    tok, policy_lm, _ = setup()
    examples = [Example(0, (1, 5, 9), (20, 21), (30,)), Example(1, (1, 6), (40,), (50, 51))]
    batch = collate(examples, tok.pad_token_id)
    # ORPO nll=all: the chosen rows' mean log-prob over every token after the first
    orpo = objectives.OBJECTIVES["orpo"]
    policy = PolicyLogps(policy_lm)
    with torch.no_grad():
        loss_B, _ = batch_loss(policy, NoReference(), batch, orpo, {"nll": "all", "lam": 0.2})
        ids, att = batch["input_ids"][:2], batch["attention_mask"][:2]
        full_sums, full_counts = policy(ids, att, att)
        sums, counts = policy(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    assert full_counts.tolist() == [4, 2]  # prompt + chosen tokens after the first
    means = sums / counts
    expected = objectives.orpo(
        means[:2], means[2:], chosen_full_logps=full_sums / full_counts, lam=0.2, nll="all"
    )
    torch.testing.assert_close(loss_B, expected)


def _score_alone(model: PolicyLogps, prompt, completion) -> Tensor:
    """ℓ of one (prompt, completion) sequence, scored on its own (no padding, no batch)."""
    ids = torch.tensor([list(prompt) + list(completion)])
    loss_mask = torch.tensor([[0] * len(prompt) + [1] * len(completion)])
    with torch.no_grad():
        return model(ids, torch.ones_like(ids), loss_mask)[0][0]


@pytest.mark.parametrize("form", ["paired", "unpaired"])
def test_kto_mismatched_z0_equals_one_at_a_time_scoring(form):
    """KTO ``z0=mismatched`` in the harness: z0 = max(0, mean(ℓ - ℓ_ref)) over the batch's 2B
    rows with row r's prompt and row r-1's completion (TRL's rotation; the rows are the chosen
    then the rejected ones, prompts of different lengths, matched unpaired rows' own prompts),
    each scored alone here with the policy and the reference."""
    tok, lm_a, lm_b = setup()
    examples = [
        Example(0, (1, 5, 9), (20, 21), (30,)),
        Example(1, (1, 6), (40,), (50, 51, 52)),
        Example(2, (2, 7, 8, 3), (60, 61, 62), (70,), rejected_prompt_ids=(4, 12)),
    ]
    batch = collate(examples, tok.pad_token_id)
    rows = [(e.prompt_ids, e.chosen_ids) for e in examples]
    rows += [(e.rejected_prompt_ids or e.prompt_ids, e.rejected_ids) for e in examples]
    R = len(rows)
    # either model as the policy: take the order where the clamp at 0 does not hide the mean
    for policy_lm, ref_lm in ((lm_a, lm_b), (lm_b, lm_a)):
        policy, ref = PolicyLogps(policy_lm), PolicyLogps(ref_lm)
        diffs = []
        for r in range(R):
            prompt, completion = rows[r][0], rows[(r - 1) % R][1]
            diffs.append(
                _score_alone(policy, prompt, completion) - _score_alone(ref, prompt, completion)
            )
        mean = torch.stack(diffs).mean()
        if mean > 0.05:
            break
    assert mean > 0.05
    kto = objectives.OBJECTIVES["kto"]
    reference = reference_for(kto, ref_lm)
    hp = {"z0": "mismatched", "beta": 0.4, "form": form}
    kl_sums, _, ref_sums, _ = step.mismatched_logps(policy, reference, batch, "train")
    torch.testing.assert_close(kl_sums - ref_sums, torch.stack(diffs), rtol=1e-5, atol=1e-5)
    loss_B, _ = batch_loss(policy, reference, batch, kto, hp)
    with torch.no_grad():
        sums, _ = policy(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        ref_2B = reference(batch, "train")[0]
    B = len(examples)
    expected = objectives.kto(
        sums[:B],
        sums[B:],
        ref_2B[:B],
        ref_2B[B:],
        kl_estimate=mean.clamp(min=0),
        beta=0.4,
        form=form,
    )
    torch.testing.assert_close(loss_B.detach(), expected, rtol=1e-5, atol=1e-6)
    # z0 is detached: the gradient is that of the loss with z0 a constant
    (g,) = torch.autograd.grad(loss_B.sum(), policy_lm.lm_head.weight)
    sums_g, _ = policy(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
    const = objectives.kto(
        sums_g[:B],
        sums_g[B:],
        ref_2B[:B],
        ref_2B[B:],
        kl_estimate=mean.clamp(min=0).item(),
        beta=0.4,
        form=form,
    )
    (g_const,) = torch.autograd.grad(const.sum(), policy_lm.lm_head.weight)
    torch.testing.assert_close(g, g_const, rtol=1e-4, atol=1e-7)
    # the batch rule (default) gives a different loss
    default_B, _ = batch_loss(policy, reference, batch, kto, {"beta": 0.4, "form": form})
    assert not torch.allclose(default_B, loss_B)


def test_mismatched_rows_rotate_completions_by_one():
    tok, _, _ = setup()
    examples = [Example(0, (1, 5), (20, 21), (30,)), Example(1, (2,), (40,), (50, 51, 52))]
    batch = collate(examples, tok.pad_token_id)
    mb = step.mismatched_batch(batch)
    got = [mb["input_ids"][r][mb["attention_mask"][r].bool()].tolist() for r in range(4)]
    # rows: (p0, w0), (p1, w1), (p0, l0), (p1, l1); row r takes row r-1's completion
    assert got == [[1, 5, 50, 51, 52], [2, 20, 21], [1, 5, 40], [2, 30]]
    completions = [mb["input_ids"][r][mb["loss_mask"][r].bool()].tolist() for r in range(4)]
    assert completions == [[50, 51, 52], [20, 21], [40], [30]]
    assert mb["input_ids"].shape[1] == 5  # wider than the batch (4): nothing is cut
    # rows longer than max_len are cut from the right (TRL's max_length)
    mb = step.mismatched_batch(batch, max_len=3)
    assert mb["input_ids"][0].tolist() == [1, 5, 50]
    assert mb["loss_mask"][0].tolist() == [0, 0, 1]


@pytest.mark.parametrize("max_len", [None, 6])
def test_mismatched_batch_equals_a_loop_over_rows(max_len):
    """The vectorised rotation against a plain per-row loop, on random prompt/response lengths."""
    g = torch.Generator().manual_seed(0)

    def tokens(n):
        return tuple(torch.randint(3, 90, (n,), generator=g).tolist())

    lengths = torch.randint(1, 6, (5, 3), generator=g).tolist()
    examples = [Example(i, tokens(p), tokens(w), tokens(r)) for i, (p, w, r) in enumerate(lengths)]
    batch = collate(examples, 0)
    mb = step.mismatched_batch(batch, max_len=max_len)
    att, lm = batch["attention_mask"].bool(), batch["loss_mask"].bool()
    R = batch["input_ids"].shape[0]
    prompts = [batch["input_ids"][r][att[r] & ~lm[r]].tolist() for r in range(R)]
    comps = [batch["input_ids"][r][lm[r]].tolist() for r in range(R)]
    for r in range(R):
        p, y = prompts[r], comps[(r - 1) % R]
        want = (p + y)[:max_len] if max_len else p + y
        row_att = mb["attention_mask"][r].bool()
        assert mb["input_ids"][r][row_att].tolist() == want
        assert mb["loss_mask"][r].tolist()[: len(want)] == [0] * len(p) + [1] * (len(want) - len(p))
        assert not row_att[len(want) :].any() and not mb["loss_mask"][r][len(want) :].any()


def test_mismatched_z0_needs_a_reference_that_scores_new_rows():
    """A precomputed table holds only the training pairs' log-probs: without a live reference
    (LoRA's base model) z0=mismatched is refused, at parse time and in the harness."""
    _, policy_lm, ref_lm = setup()
    batch = collate([Example(0, (1, 5), (20,), (30,)), Example(1, (2,), (40,), (50,))], 0)
    table = (torch.zeros(2, 2) - 1.0, torch.ones(2, 2))
    kto = objectives.OBJECTIVES["kto"]
    with pytest.raises(UserError, match=r"use --ref copy\|adapter"):
        batch_loss(PolicyLogps(policy_lm), PrecomputedReference({"train": table}), batch, kto,
                   {"z0": "mismatched"})  # fmt: skip
    ref = PolicyLogps(ref_lm)
    live = PrecomputedReference(
        {"train": table}, live=lambda b: ref(b["input_ids"], b["attention_mask"], b["loss_mask"])
    )
    loss_B, _ = batch_loss(PolicyLogps(policy_lm), live, batch, kto, {"z0": "mismatched"})
    assert torch.isfinite(loss_B).all()
    kw = dict(objective="kto", hp=("z0=mismatched",), data="x.jsonl")
    with pytest.raises(
        UserError, match=r"TrainConfig.ref: --ref precomputed .*--ref copy\|adapter"
    ):
        TrainConfig(**kw, ref="precomputed")
    TrainConfig(**kw, ref="precomputed", lora=True)  # the base model is the live reference
    TrainConfig(**kw, ref="copy")
    step.check_buildable(kto, {"z0": "mismatched"})  # accepted
