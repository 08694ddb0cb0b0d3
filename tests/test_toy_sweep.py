"""Batched sweeps and the fast training step: a sweep's rows are the single runs, the hand-written
MLP backward is autograd's, per-row Adam is torch's, minibatches cover the round, and
``eval_every`` skips steps without changing the evaluated ones."""

import numpy as np
import pandas as pd
import pytest
import torch

from runio import UserError
from toy import sweep as toy_sweep
from toy.config import BanditConfig
from toy.optim import RowAdam
from toy.policy import MLPPolicy, flatten_parameters
from toy.train import run, train

TINY = dict(
    prompts_per_round=4,
    samples_per_prompt=4,
    rounds=3,
    steps_per_round=2,
    init_steps=3,
    n_train_contexts=20,
    init_contexts=10,
    n_eval_contexts=7,
    out_dir="",
    progress=False,
)
COLS = ["reward/expected", "policy/kl_ref", "loss/train", "grad/norm", "logps/chosen"]


def test_sweep_rows_equal_the_single_runs():
    base = BanditConfig(objective="dpo", **TINY)
    grid = {"lr": [1e-3, 1e-2], "beta": ["0.05", "0.3"]}
    metrics, summary, groups = toy_sweep.sweep(base, grid, seeds=(0, 1), progress=False)
    assert len(groups) == 1  # lr and beta are per-row: one batch of 2 × 2 × 2 rows
    assert len(summary) == 8
    for lr in (1e-3, 1e-2):
        for beta in (0.05, 0.3):
            single = run(base.replace(lr=lr, hp=(f"beta={beta}",), seeds=(0, 1))).metrics
            rows = metrics[(metrics.lr == lr) & (metrics.beta == beta)]
            rows = rows.sort_values(["seed", "step"]).reset_index(drop=True)
            np.testing.assert_allclose(rows[COLS], single[COLS], rtol=1e-4, atol=1e-5)
            assert (rows.step.to_numpy() == single.step.to_numpy()).all()


def test_points_whose_shapes_differ_run_as_separate_batches():
    base = BanditConfig(objective="bon", **TINY)
    grid = {"prompts_per_round": [2, 4], "lr": [1e-3, 3e-3]}
    metrics, _, groups = toy_sweep.sweep(base, grid, seeds=(0,), progress=False)
    assert [len(g) for g in groups] == [2, 2]
    single = run(base.replace(prompts_per_round=2, lr=3e-3)).metrics
    rows = metrics[(metrics.prompts_per_round == 2) & (metrics.lr == 3e-3)]
    np.testing.assert_allclose(rows[COLS[:4]], single[COLS[:4]], rtol=1e-4, atol=1e-5)


def test_row_safe_detection():
    assert toy_sweep.row_safe("dpo", "beta")
    assert toy_sweep.row_safe("ipo", "tau")
    assert toy_sweep.row_safe("asft", "lam")
    assert not toy_sweep.row_safe("rwr", "normalize")  # a bool is never per-row
    assert not toy_sweep.row_safe("reinforce", "kl_coef")  # `if kl_coef:` needs a float


def test_bad_grids_name_the_problem():
    base = BanditConfig(objective="dpo", **TINY)
    with pytest.raises(UserError, match="not a BanditConfig field or a hyperparameter"):
        toy_sweep.parse_grid(["betta=0.1,0.2"], base)
    with pytest.raises(UserError, match="key=v1,v2"):
        toy_sweep.parse_grid(["lr"], base)
    grid = toy_sweep.parse_grid(["lr=1e-3,-1"], base)
    with pytest.raises(UserError, match=r"grid point \{'lr': -1.0\}.*lr"):
        toy_sweep.expand(base, grid, (0,))


def test_cli_writes_a_tidy_table(tmp_path, capsys):
    out = tmp_path / "sw"
    assert toy_sweep.main(["--grid", "lr=1e-3,1e-2", "tau=0.05,0.1", "--seeds", "0", "1",
                           "--set", "objective=ipo", "rounds=2", "steps_per_round=2",
                           "prompts_per_round=4", "init_steps=2", "n_eval_contexts=5",
                           "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    metrics = pd.read_csv(out / "metrics.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert {"lr", "tau", "seed", "step", "reward/expected"} <= set(metrics.columns)
    assert len(summary) == 8 and set(summary.tau) == {0.05, 0.1}
    assert len(metrics) == 8 * 5  # 4 steps + step 0 per run
    assert "8 runs in 1 batch(es)" in capsys.readouterr().out


def test_hand_written_backward_equals_autograd():
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    policy = MLPPolicy(gens, gain=1.0)
    flat = flatten_parameters(policy)
    x, weight = torch.randn(3, 7, 100), torch.randn(3, 7, 100)
    flat.grad.zero_()
    (policy(x) * weight).sum().backward()
    expected = flat.grad.clone()
    logits, saved = policy.forward_saving(x)
    torch.testing.assert_close(logits, policy(x).detach(), rtol=1e-5, atol=1e-6)
    flat.grad.fill_(float("nan"))  # every entry must be overwritten
    policy.backward_into(saved, weight.clone())
    torch.testing.assert_close(flat.grad, expected, rtol=1e-4, atol=1e-6)


def test_row_adam_equals_torch_adam_per_row():
    g = torch.Generator().manual_seed(0)
    start = torch.randn(3, 40, generator=g)
    lrs = (1e-3, 1e-2, 3e-2)
    mine = start.clone()
    opt = RowAdam(mine, torch.tensor(lrs))
    refs = [torch.nn.Parameter(start[i].clone()) for i in range(3)]
    torch_opts = [torch.optim.Adam([p], lr=lr, foreach=False) for p, lr in zip(refs, lrs)]
    for _ in range(25):
        grad = torch.randn(3, 40, generator=g)
        grad[0, :5] = 0.0  # parameters that never get a gradient
        opt.step(grad)
        for i, (p, o) in enumerate(zip(refs, torch_opts)):
            p.grad = grad[i].clone()
            o.step()
    torch.testing.assert_close(mine, torch.stack([p.detach() for p in refs]), rtol=0, atol=1e-6)


def test_minibatches_cover_the_round_each_pass():
    cfg = BanditConfig(objective="bon", minibatch_size=2, seeds=(0, 1), **TINY)
    assert cfg.total_steps == 3 * 2 * 2  # rounds × passes × P/M
    rec, _ = train(cfg)
    prompts = rec.batch_prompts[1:].reshape(3 * 2, 2, 2, 2)  # (round·pass, minibatch, S, M)
    covered = prompts.permute(0, 2, 1, 3).reshape(6, 2, 4).sort(-1).values
    assert (covered == torch.arange(4)).all()
    full = run(cfg.replace(minibatch_size=4)).metrics
    same = run(cfg.replace(minibatch_size=None)).metrics
    np.testing.assert_allclose(full[COLS[:4]], same[COLS[:4]], rtol=1e-6, atol=1e-7)
    with pytest.raises(UserError, match="minibatch_size: must divide"):
        cfg.replace(minibatch_size=3)


def test_eval_every_skips_steps_but_not_their_values():
    cfg = BanditConfig(objective="ipo", seeds=(0,), **TINY)
    every = run(cfg).metrics.set_index("step")
    sparse = run(cfg.replace(eval_every=4)).metrics.set_index("step")
    evaluated = sparse["reward/expected"].dropna().index.tolist()
    assert evaluated == [0, 4, 6]  # multiples of 4 and the last step
    np.testing.assert_allclose(sparse.loc[evaluated, "reward/expected"],
                               every.loc[evaluated, "reward/expected"], rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(sparse["loss/train"], every["loss/train"], rtol=1e-6)
