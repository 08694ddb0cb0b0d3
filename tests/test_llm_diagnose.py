"""llm.diagnose: the first-order prediction against a real step, CHES by hand, the one-token softmax
against the toy's closed forms, and the command on the default tiny model."""

import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import torch
from torch import nn

import objectives
from llm import diagnose as dg

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data/shakespeare_prefs/train.jsonl"


@pytest.fixture(scope="module")
def tiny():
    """(tokenizer, the first 4 shipped pairs tokenised) for the tiny models."""
    from llm import tiny as tiny_mod
    from llm.data import read_rows, tokenize_rows
    from llm.pairs import corpus_texts

    rows = read_rows(str(DATA))
    tok = tiny_mod.build_tokenizer(corpus_texts(rows))
    examples, _ = tokenize_rows(rows[:4], tok, path=str(DATA), max_len=160, max_prompt_len=128)
    return tok, examples


def _tiny_model(tok, kind="tiny-gpt2", dtype=torch.float64):
    from llm import tiny as tiny_mod

    return tiny_mod.build_model(kind, tok, seed=0).to(dtype).eval()


# (objective, --hp items): the length_norm=mean forms take per-token means (uses_mean_logps)
CASES = (
    ("dpo", ()),
    ("dpo", ("length_norm=mean",)),
    ("asft", ()),
    ("sft", ()),
    ("sft", ("length_norm=mean",)),
    ("ipo", ("length_norm=mean",)),
    ("simpo", ()),
    ("orpo", ()),
    ("kto", ()),
)


@pytest.mark.parametrize("kind", ["tiny-gpt2", "tiny-llama"])
def test_first_order_prediction_matches_a_real_step(tiny, kind):
    tok, examples = tiny
    model = _tiny_model(tok, kind)
    params = [p for _, p in dg.select_params(model, "all")]
    before = [p.detach().clone() for p in params]
    ex = examples[1]
    q = dg.pair_quantities(model, params, ex, "cpu")
    grads = q.pop("_g_w"), q.pop("_g_l")
    for name, items in CASES:
        hp = dg.parse_hp((name,), items)[name]
        # ∂L/∂ℓ: the closed forms (the prediction) against autograd through the loss (the step)
        unit = dg.objective_terms(name, hp, q, 1.0)
        a, b = dg.loss_partials(name, hp, q)
        assert unit["dL_dlogp_w"] == pytest.approx(a, rel=1e-12)
        assert unit["dL_dlogp_l"] == pytest.approx(b, rel=1e-12, abs=1e-300)
        # a small step: η sized per objective so that the larger predicted |Δℓ| is 1e-3 (the
        # second-order remainder is ~η²; much smaller steps hit tiny-llama's rounding floor,
        # ~1e-7 in ℓ, as its RMSNorm computes in float32 even in a float64 model)
        eta = 1e-3 / max(abs(unit["pred_dlogp_w"]), abs(unit["pred_dlogp_l"]))
        pred = dg.objective_terms(name, hp, q, eta)
        meas = dg.verify_pair(model, params, ex, name, hp, eta, 1, q, "cpu")
        for side in ("w", "l"):
            p, m = pred[f"pred_dlogp_{side}"], meas[f"meas_dlogp_{side}"]
            assert abs(p - m) < 1e-2 * abs(m), (name, items, side, p, m)
        if name not in ("dpo", "asft"):
            continue
        # the command's first step reuses ∇ℓ_w, ∇ℓ_l (θ ← θ − η(a∇ℓ_w + b∇ℓ_l)): the same step
        fast = dg.verify_pair(model, params, ex, name, hp, eta, 2, q, "cpu", grads=grads)
        full = dg.verify_pair(model, params, ex, name, hp, eta, 2, q, "cpu")
        for key in ("meas_dlogp_w", "meas_dlogp_l", "meas_dlogp_w_k", "meas_dlogp_l_k"):
            assert fast[key] == pytest.approx(full[key], rel=1e-6, abs=1e-7), (name, key)
        assert fast["meas_dlogp_w"] == pytest.approx(meas["meas_dlogp_w"], rel=1e-6, abs=1e-7)
    for p, b in zip(params, before):  # every verified step was undone exactly
        assert torch.equal(p, b)


def test_first_order_under_lora_and_last_k(tiny):
    """The same check in the two smaller parameter sets (LoRA B = 0: only B has a gradient)."""
    from llm import models

    tok, examples = tiny
    ex = examples[0]
    for kind in ("lora", "last-k"):
        model = _tiny_model(tok)
        if kind == "lora":
            model = models.add_lora(model, 4, 8, 0.0, ("all-linear",)).double()
        named = dg.select_params(model, kind, last_k=1)
        assert all(("lora_" in n) == (kind == "lora") for n, _ in named)
        params = [p for _, p in named]
        q = dg.pair_quantities(model, params, ex, "cpu")
        q.pop("_g_w"), q.pop("_g_l")
        eta = 1e-3 / max(q["grad_ww"], q["grad_ll"])
        pred = dg.objective_terms("dpo", {"beta": 0.1}, q, eta)
        meas = dg.verify_pair(model, params, ex, "dpo", {"beta": 0.1}, eta, 1, q, "cpu")
        assert pred["pred_dlogp_w"] == pytest.approx(meas["meas_dlogp_w"], rel=1e-2)
        assert pred["pred_dlogp_l"] == pytest.approx(meas["meas_dlogp_l"], rel=1e-2)


def test_length_norm_hyperparameter_sets_the_chain_rule():
    """At the start (π = π_ref) DPO's ∂L/∂h = −β σ(0) = −β/2; with length_norm=mean the inputs
    are ℓ̄ = ℓ/|y|, so ∂L/∂ℓ_w = −β/(2|y_w|): Δℓ_w = −η(a‖∇ℓ_w‖² + b⟨∇ℓ_w,∇ℓ_l⟩) by hand."""
    q = {"logp_w": -12.0, "len_w": 4, "logp_l": -20.0, "len_l": 5}
    q |= {"grad_ww": 2.0, "grad_ll": 3.0, "grad_wl": 1.0}
    eta, beta = 0.5, 0.1
    for norm, n_w, n_l in (("sum", 1, 1), ("mean", 4, 5)):
        hp = dg.parse_hp(("dpo",), (f"length_norm={norm}",))["dpo"]
        t = dg.objective_terms("dpo", hp, q, eta)
        a, b = -beta / 2 / n_w, beta / 2 / n_l
        assert t["dL_dlogp_w"] == pytest.approx(a) and t["dL_dlogp_l"] == pytest.approx(b)
        assert t["pred_dlogp_w"] == pytest.approx(-eta * (a * 2.0 + b * 1.0))
        assert t["pred_dlogp_l"] == pytest.approx(-eta * (a * 1.0 + b * 3.0))
        assert t["x_kind"] == ("pi" if norm == "sum" else "P")
        x_w = math.exp(-12.0 / n_w)
        assert t["x_w"] == pytest.approx(x_w)
        assert t["dL_dx_w"] == pytest.approx(-beta / 2 / x_w)  # ∂L/∂x = (∂L/∂log x) / x
    sft = dg.objective_terms("sft", {"length_norm": "mean"}, q, eta)
    assert sft["dL_dlogp_w"] == -0.25 and sft["dL_dlogp_l"] == 0.0
    assert sft["pred_dlogp_l"] == pytest.approx(-eta * -0.25 * 1.0)


def test_log_probs_match_the_training_harness(tiny):
    from llm.data import collate
    from llm.logps import sequence_logps

    tok, examples = tiny
    model = _tiny_model(tok, dtype=torch.float32)
    batch = collate(examples[:2], tok.pad_token_id)
    sums, counts = sequence_logps(
        model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    )
    with torch.no_grad():
        for i, ex in enumerate(examples[:2]):
            for j, resp in ((i, ex.chosen_ids), (i + 2, ex.rejected_ids)):
                lp, n, _ = dg.response_forward(model, ex.prompt_ids, resp, "cpu")
                assert n == counts[j]
                assert float(lp) == pytest.approx(float(sums[j]), abs=1e-4)


def test_ches_by_hand():
    s_w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64).sum(0)  # S⁺ = (1, 1)
    s_l = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64).sum(0)  # (3, 1)
    assert dg.ches(s_w, s_l) == pytest.approx(4.0 - 2.0)  # ⟨S⁺,S⁻⟩ − ‖S⁺‖²
    # (1/2, 1/2)·(1, 1/3) − ‖(1/2, 1/2)‖² = 2/3 − 1/2
    assert dg.ches(s_w, s_l, 2, 3) == pytest.approx(2 / 3 - 1 / 2)


class _EmbeddingLM(nn.Module):
    """Hidden state at position t = E[token t] (a toy embedding; no mixing across positions),
    followed by a linear head: h(x, y_<k) is the embedding of the token just before y_k."""

    base_model_prefix = "body"
    config = None

    def __init__(self, emb: torch.Tensor, vocab: int):
        super().__init__()
        self.body = _Body(emb)
        self.head = nn.Linear(emb.shape[1], vocab, bias=False, dtype=emb.dtype)

    def get_output_embeddings(self):
        return self.head


class _Body(nn.Module):
    def __init__(self, emb):
        super().__init__()
        self.emb = nn.Embedding.from_pretrained(emb, freeze=False)

    def forward(self, input_ids, attention_mask=None):
        return (self.emb(input_ids),)


def test_ches_uses_the_hidden_state_that_predicts_each_token():
    emb = torch.tensor(
        [[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 3.0], [0.5, 0.5]], dtype=torch.float64
    )
    model = _EmbeddingLM(emb, 5)
    prompt, chosen, rejected = [4, 0], [1, 2, 3], [3, 1]
    _, n_w, s_w = dg.response_forward(model, prompt, chosen, "cpu")
    _, n_l, s_l = dg.response_forward(model, prompt, rejected, "cpu")
    # chosen tokens 1, 2, 3 are predicted from the tokens before them: 0, 1, 2
    assert torch.equal(s_w, emb[0] + emb[1] + emb[2])
    assert torch.equal(s_l, emb[0] + emb[3])  # rejected 3, 1 from 0, 3
    by_hand = (emb[0] + emb[1] + emb[2]) @ (emb[0] + emb[3]) - (emb[0] + emb[1] + emb[2]).pow(
        2
    ).sum()
    assert dg.ches(s_w, s_l) == pytest.approx(float(by_hand))
    assert (n_w, n_l) == (3, 2)


def test_ches_matches_transformers_last_hidden_layer(tiny):
    tok, examples = tiny
    model = _tiny_model(tok, "tiny-llama")
    ex = examples[2]
    ids = torch.tensor([list(ex.prompt_ids) + list(ex.chosen_ids)])
    with torch.no_grad():
        h = model(ids, output_hidden_states=True).hidden_states[-1][0]
        _, _, s_w = dg.response_forward(model, ex.prompt_ids, ex.chosen_ids, "cpu")
    p = len(ex.prompt_ids)
    assert torch.allclose(s_w, h[p - 1 : ids.shape[1] - 1].sum(0), atol=1e-9)


class _OneTokenSoftmax(nn.Module):
    """π(y | anything) = softmax(z)[y]: a tabular softmax behind the LM interface (the hidden
    state is the constant 1, the head's weight column is z)."""

    base_model_prefix = "body"
    config = None

    def __init__(self, z: torch.Tensor):
        super().__init__()
        self.body = _Const()
        self.head = nn.Linear(1, len(z), bias=False, dtype=z.dtype)
        with torch.no_grad():
            self.head.weight.copy_(z[:, None])

    def get_output_embeddings(self):
        return self.head

    def forward(self, x):  # for toy.mass.flat_policy: the K logits
        return self.head.weight[:, 0]


class _Const(nn.Module):
    def forward(self, input_ids, attention_mask=None):
        return (torch.ones(*input_ids.shape, 1, dtype=torch.float64),)


NAMES = ("dpo", "ipo", "slic", "simpo", "orpo", "asft", "sft", "kto")


@pytest.mark.parametrize("name", NAMES)
def test_one_token_softmax_equals_the_toy_closed_forms(name):
    from llm.data import Example
    from toy import mass, prob_space

    z = torch.tensor([0.3, -1.0, 0.8, 0.1, -0.4, 1.2], dtype=torch.float64)
    w, l, eta = 2, 4, 1e-3
    model = _OneTokenSoftmax(z)
    params = [p for _, p in dg.select_params(model, "all")]
    ex = Example(0, (0,), (w,), (l,))
    q = dg.pair_quantities(model, params, ex, "cpu")
    q.pop("_g_w"), q.pop("_g_l")
    pi = torch.softmax(z, 0)
    logp = pi.log()
    # log-probs and the tabular gradient geometry: ∇_z ℓ(y) = e_y − π
    assert q["logp_w"] == pytest.approx(float(logp[w]), abs=1e-12)
    assert q["P_l"] == pytest.approx(float(pi[l]), abs=1e-12)
    sq = float(pi @ pi)
    assert q["grad_ww"] == pytest.approx(1 - 2 * float(pi[w]) + sq, rel=1e-12)
    assert q["grad_wl"] == pytest.approx(sq - float(pi[w]) - float(pi[l]), rel=1e-12)
    assert q["ches"] == 0.0  # one response token, hidden state 1: ⟨1, 1⟩ − 1

    hp = dict(objectives.get(name).defaults)
    t = dg.objective_terms(name, hp, q, eta)
    # first-order Δℓ = (e_y − π)·Δz with Δz = −η ∂L/∂z (objectives.tabular_logit_grad) ...
    arms = {"chosen": torch.tensor([w]), "rejected": torch.tensor([l])}
    if objectives.get(name).data == "chosen":
        arms.pop("rejected")
    dz = -eta * objectives.tabular_logit_grad(name, z, ref_logps_K=logp, hparams=hp, **arms)
    jac = torch.eye(6, dtype=torch.float64) - pi
    assert t["pred_dlogp_w"] == pytest.approx(float(jac[w] @ dz), rel=1e-9, abs=1e-15)
    assert t["pred_dlogp_l"] == pytest.approx(float(jac[l] @ dz), rel=1e-9, abs=1e-15)
    # ... and toy.mass's one-step accounting, first order and the exact step
    theta, logp_fn = mass.flat_policy(model, torch.zeros(1))
    kw = dict(chosen=torch.tensor([w]), rejected=torch.tensor([l]), hparams=hp)
    first = mass.one_step_mass(name, theta, logp_fn, logp, eta, **kw).delta_logp
    exact = mass.one_step_mass(name, theta, logp_fn, logp, eta, exact=True, **kw).delta_logp
    assert t["pred_dlogp_w"] == pytest.approx(float(first[w]), rel=1e-9, abs=1e-15)
    assert t["pred_dlogp_l"] == pytest.approx(float(first[l]), rel=1e-9, abs=1e-15)
    m = dg.verify_pair(model, params, ex, name, hp, eta, 1, q, "cpu")
    assert m["meas_dlogp_w"] == pytest.approx(float(exact[w]), rel=1e-7, abs=1e-13)
    assert m["meas_dlogp_l"] == pytest.approx(float(exact[l]), rel=1e-7, abs=1e-13)
    # probability space: paper B's ratios (toy.prob_space), x = π(y) for one token
    x_w, x_l = pi[w : w + 1], pi[l : l + 1]
    field = prob_space.descent_field(name, x_w, x_l, x_w, x_l, **hp).iloc[0]
    assert t["dL_dx_w"] == pytest.approx(-field.u, rel=1e-12)
    assert t["dL_dx_l"] == pytest.approx(-field.v, rel=1e-12, abs=1e-300)
    if name in ("dpo", "ipo", "simpo"):
        assert t["pushdown"] == pytest.approx(float(x_w / x_l), rel=1e-12)
    if name == "asft":
        assert t["pushdown"] == pytest.approx(float(prob_space.asft_ratio(x_w, x_l, 0.1)))
    if t["pushdown"] > 0:
        assert t["log10_pushdown"] == pytest.approx(math.log10(t["pushdown"]), abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_batch_step_equals_the_toy_closed_forms(name):
    """--batch-step on a one-token softmax: one step on the mean loss of three pairs is the
    toy's batch step, Δz = −η ∂(mean L)/∂z (objectives.tabular_logit_grad), so every pair's
    first-order Δℓ(y) = (e_y − π)·Δz, and the step taken equals toy.mass's exact step."""
    from llm.data import Example
    from toy import mass

    z = torch.tensor([0.3, -1.0, 0.8, 0.1, -0.4, 1.2], dtype=torch.float64)
    ws, ls, eta = [2, 0, 5], [4, 3, 1], 1e-2
    model = _OneTokenSoftmax(z)
    params = [p for _, p in dg.select_params(model, "all")]
    examples = [Example(i, (0,), (w,), (l,)) for i, (w, l) in enumerate(zip(ws, ls))]
    hp = dict(objectives.get(name).defaults)
    df, _ = dg.diagnose_pairs(
        model, params, examples, (name,), {name: hp}, eta, verify=True, batch_step=True
    )
    pi, logp = torch.softmax(z, 0), torch.log_softmax(z, 0)
    arms = {"chosen": torch.tensor(ws), "rejected": torch.tensor(ls)}
    if objectives.get(name).data == "chosen":
        arms.pop("rejected")
    dz = -eta * objectives.tabular_logit_grad(name, z, ref_logps_K=logp, hparams=hp, **arms)
    jac = torch.eye(6, dtype=torch.float64) - pi
    theta, logp_fn = mass.flat_policy(model, torch.zeros(1))
    exact = mass.one_step_mass(name, theta, logp_fn, logp, eta, hparams=hp, exact=True, **arms)
    for i, (w, l) in enumerate(zip(ws, ls)):
        r = df.iloc[i]
        assert r.batch_pred_dlogp_w == pytest.approx(float(jac[w] @ dz), rel=1e-9, abs=1e-15)
        assert r.batch_pred_dlogp_l == pytest.approx(float(jac[l] @ dz), rel=1e-9, abs=1e-15)
        d_w, d_l = float(exact.delta_logp[w]), float(exact.delta_logp[l])
        assert r.batch_meas_dlogp_w == pytest.approx(d_w, rel=1e-9, abs=1e-15)
        assert r.batch_meas_dlogp_l == pytest.approx(d_l, rel=1e-9, abs=1e-15)


def test_batch_first_order_matches_a_real_batch_step(tiny):
    tok, examples = tiny
    model = _tiny_model(tok)
    params = [p for _, p in dg.select_params(model, "all")]
    names = ("dpo", "asft")
    hp = dg.parse_hp(names, ())
    unit, _ = dg.diagnose_pairs(model, params, examples, names, hp, 1.0, batch_step=True)
    eta = 1e-3 / unit[["batch_pred_dlogp_w", "batch_pred_dlogp_l"]].abs().max().max()
    df, _ = dg.diagnose_pairs(model, params, examples, names, hp, eta, verify=True, batch_step=True)
    for side in ("w", "l"):
        p, m = df[f"batch_pred_dlogp_{side}"], df[f"batch_meas_dlogp_{side}"]
        assert ((p - m).abs() < 1e-2 * m.abs()).all(), (side, list(p), list(m))
    # the per-pair step on the same pairs is a different step: the batch is 1/n of each push
    # plus the other pairs' cross terms
    assert not df.batch_pred_dlogp_w.equals(df.pred_dlogp_w)


def test_rank_statistics():
    x = pd.Series([1.0, 2.0, 3.0, 4.0])
    assert dg.spearman(x, x**3) == pytest.approx(1.0)
    assert dg.spearman(x, -x) == pytest.approx(-1.0)
    assert dg.auc(x, pd.Series([False, False, True, True])) == 1.0
    assert dg.auc(x, pd.Series([True, False, True, False])) == 0.25
    assert dg.auc(pd.Series([1.0, 1.0]), pd.Series([True, False])) == 0.5
    assert math.isnan(dg.auc(x, pd.Series([True] * 4)))


def test_hp_parsing():
    hp = dg.parse_hp(("dpo", "asft", "simpo"), ("beta=0.2", "asft.lam=0.3"))
    assert hp["dpo"]["beta"] == 0.2 and hp["simpo"]["beta"] == 0.2
    assert hp["asft"]["lam"] == 0.3 and hp["simpo"]["gamma"] == 1.0


def test_cli_on_the_default_tiny_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "diag"
    assert dg.main(["--n-pairs", "6", "--verify", "--verify-steps", "2", "--out-dir", str(out),
                    "--no-progress"]) == 0  # fmt: skip
    table = pd.read_csv(out / "pairs.csv")
    assert len(table) == 6 * 3 and set(table.objective) == {"dpo", "asft", "sft"}
    for col in ("logp_w", "logp_mean_l", "P_w", "len_l", "ches", "ches_norm", "grad_wl",
                "grad_ww", "grad_ll", "dL_dx_w", "pushdown", "pred_dlogp_w", "pred_displace",
                "meas_dlogp_w", "meas_dlogp_l_k", "group"):  # fmt: skip
        assert col in table, col
    assert (table[table.objective == "sft"].pred_dlogp_w > 0).all()  # SFT raises ℓ_w
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["objectives"]) == {"dpo", "asft", "sft"}
    assert summary["objectives"]["dpo"]["sign_acc_w"] == 1.0
    assert len(summary["at_risk"]) == 6 and "rejected" in summary["at_risk"][0]
    config = json.loads((out / "config.json").read_text())
    assert config["param_set"] == "all" and config["versions"]["torch"]
    assert "most at risk under dpo" in capsys.readouterr().out
    # an existing table is never replaced silently; --summary-of re-prints it without a model
    assert dg.main(["--n-pairs", "2", "--out-dir", str(out)]) == 2
    assert dg.main(["--summary-of", str(out), "--top", "2"]) == 0
    assert "pairs: 6" in capsys.readouterr().out


def test_cli_lora_and_user_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "lora"
    assert dg.main(["--lora", "--n-pairs", "2", "--objective", "dpo", "orpo", "--format",
                    "parquet", "--out-dir", str(out), "--no-progress"]) == 0  # fmt: skip
    table = pd.read_parquet(out / "pairs.parquet")
    assert list(table.objective) == ["dpo", "orpo"] * 2
    assert json.loads((out / "config.json").read_text())["param_set"] == "lora"
    capsys.readouterr()
    bad = (
        ["--objective", "reinforce"],
        ["--objective", "nope"],
        ["--eta", "0"],
        ["--params", "lora"],
        ["--lora", "--params", "all"],
        ["--hp", "tau=1"],
        ["--max-len", "0"],
    )
    for args in bad:
        assert dg.main([*args, "--out-dir", str(tmp_path / "x")]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, (args, err)
    assert not (tmp_path / "x").exists()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _unpaired_rows() -> list[dict]:
    """Three desirable and two undesirable rows, each with its own prompt (KTO's layout)."""
    rows = [json.loads(x) for x in DATA.read_text().splitlines()[:5]]
    good = [{"prompt": r["prompt"], "completion": r["chosen"], "label": True} for r in rows[:3]]
    bad = [{"prompt": r["prompt"], "completion": r["rejected"], "label": False} for r in rows[3:]]
    return good + bad


def test_unpaired_rows_are_paired_as_training_does(tiny):
    """Each response is scored under its own prompt, as llm.data.collate feeds training."""
    from llm.data import collate, tokenize_rows
    from llm.logps import sequence_logps

    tok, _ = tiny
    rows = _unpaired_rows()
    examples, report = tokenize_rows(
        rows, tok, path="u.jsonl", max_len=160, max_prompt_len=128, objective="kto"
    )
    assert report.unpaired == {"desirable": 3, "undesirable": 2, "pairs": 3}
    assert all(e.rejected_prompt_ids not in (None, e.prompt_ids) for e in examples)
    model = _tiny_model(tok)
    params = [p for _, p in dg.select_params(model, "all")]
    batch = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        sums, counts = sequence_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
        )
    for i, ex in enumerate(examples):
        q = dg.pair_quantities(model, params, ex, "cpu")
        assert q["logp_w"] == pytest.approx(float(sums[i]), rel=1e-6)  # fp32 head there
        assert q["logp_l"] == pytest.approx(float(sums[i + len(examples)]), rel=1e-6)
        assert q["len_l"] == int(counts[i + len(examples)])


def test_cli_unpaired_kto_and_refusals(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    data = _write_jsonl(tmp_path / "unpaired.jsonl", _unpaired_rows())
    out = tmp_path / "kto"
    assert dg.main(["--data", str(data), "--objective", "kto", "--verify", "--out-dir", str(out),
                    "--no-progress", "--max-len", "160"]) == 0  # fmt: skip
    table = pd.read_csv(out / "pairs.csv")
    assert len(table) == 3 and "row" not in table and "group" not in table
    texts = dg.read_texts(out)
    assert texts[0]["rejected_prompt"] != texts[0]["prompt"]  # row 3's prompt, not row 0's
    assert json.loads((out / "summary.json").read_text())["objectives"]["kto"]["sign_acc_w"] == 1
    assert "matched into 3 pairs" in capsys.readouterr().err
    completion = _write_jsonl(tmp_path / "c.jsonl", [{"prompt": "a b", "completion": "c d"}] * 2)
    bad = {
        "GiB": ["--batch-step", "--batch-max-gib", "1e-6"],
        # unpaired rows train KTO only; a pairwise objective beside it is refused
        "unpaired preference rows": ["--data", str(data), "--objective", "kto", "dpo"],
        "no rejected response": ["--data", str(completion), "--objective", "sft"],
        "batch-coupled": ["--objective", "aot"],
        "chosen_full_logps": ["--objective", "orpo", "--hp", "nll=all"],
        "kl_logps": ["--objective", "kto", "--hp", "z0=mismatched"],
    }
    for needle, args in bad.items():
        assert dg.main([*args, "--out-dir", str(tmp_path / "x"), "--no-progress"]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and needle in err, (args, err)
    assert not (tmp_path / "x").exists()


def test_plot_style_is_the_figures():
    """The diagnose plot names objectives as every figure does (one palette, the papers' names)."""
    from analysis import common
    from llm.diagnose import plot

    assert plot.PALETTE is common.PALETTE and plot.DISPLAY_NAMES is common.DISPLAY_NAMES
    assert all(plot.display_name(k) == common.label(k) for k in [*common.DISPLAY_NAMES, "x"])
