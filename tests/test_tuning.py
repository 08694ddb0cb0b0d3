"""The tuning's selection rule on hand-made tables, its output format, and `steps --tuned`."""

import json
import math

import pandas as pd
import pytest

from analysis import tune
from runio import UserError
from toy import gradients


def _table(rows):
    cols = ["mode", "objective", "lr", "hp_name", "hp_value", "reward_mean", "n_seeds",
            "steps_to_90", "seeds_reaching_90"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def test_fewest_steps_among_points_where_every_seed_gets_there():
    t = _table([
        ("on_policy", "dpo", 1e-3, "beta", "0.1", 0.999, 3, 500.0, 3),
        ("on_policy", "dpo", 1e-2, "beta", "0.1", 0.700, 3, 90.0, 2),  # faster, one seed misses
        ("on_policy", "dpo", 3e-3, "beta", "0.3", 0.990, 3, 210.0, 3),  # the choice
        ("on_policy", "dpo", 3e-3, "beta", "0.03", 0.995, 3, 210.0, 3),  # tie: higher reward wins
        ("on_policy", "bon", 1e-3, "", "", 0.999, 3, 450.0, 3),
    ])  # fmt: skip
    sel = tune.select(t)
    chosen = sel[sel.selected]
    assert chosen[["objective", "lr", "hp_value"]].values.tolist() == [
        ["dpo", 3e-3, "0.03"],
        ["bon", 1e-3, ""],
    ]


def test_highest_final_reward_when_no_point_gets_every_seed_there():
    t = _table([
        ("offline", "ipo", 1e-3, "tau", "0.05", 0.48, 3, 300.0, 1),
        ("offline", "ipo", 3e-3, "tau", "0.05", 0.83, 3, math.nan, 0),
        ("offline", "ipo", 1e-2, "tau", "0.05", math.nan, 3, math.nan, 0),  # diverged
        ("on_policy", "ipo", 1e-3, "tau", "0.05", 0.99, 3, 520.0, 3),  # another setting
    ])  # fmt: skip
    sel = tune.select(t)
    assert sel.selected.tolist() == [False, True, False, True]
    values = tune.chosen(sel)
    assert values["offline"]["ipo"] == {"lr": 3e-3, "hp": ["tau=0.05"]}
    assert values["on_policy"]["ipo"]["lr"] == 1e-3


def test_tiny_tuning_runs_and_marks_one_point_per_objective():
    t, seconds = tune.run_tuning(names=("bon", "ipo"), offline_names=("dpo",), quick=True,
                                 progress=False)  # fmt: skip
    assert seconds > 0
    assert t.groupby(["mode", "objective"]).selected.sum().tolist() == [1, 1, 1]
    assert len(t) == 2 + 4 + 4  # bon: 2 lrs; ipo and offline dpo: 2 lrs × 2 values
    ipo = t[(t.objective == "ipo") & (t["mode"] == "on_policy")]
    assert set(ipo.hp_name) == {"tau"} and set(ipo.hp_value) == {"0.015", "0.05"}


def test_steps_tuned_uses_each_objectives_values(tmp_path):
    path = tmp_path / "tuned.json"
    values = {"bon": {"lr": 1e-2, "hp": []}, "dpo": {"lr": 3e-3, "hp": ["beta=0.3"]}}
    path.write_text(json.dumps({"on_policy": values}))
    loaded = gradients.load_tuned(path)
    df = gradients.steps_to_mass(["bon", "dpo"], seeds=(0,), tuned=loaded, rounds=2,
                                 reward="R2")  # fmt: skip
    assert df.lr.tolist() == [1e-2, 3e-3] and df.hp.tolist() == ["", "beta=0.3"]
    assert list(df.columns[:5]) == ["objective", "steps to 50%", "seeds reaching 50%",
                                    "steps to 90%", "seeds reaching 90%"]  # fmt: skip
    with pytest.raises(UserError, match="no tuned values for 'ipo'"):
        gradients.steps_to_mass(["ipo"], seeds=(0,), tuned=loaded, rounds=2)
    with pytest.raises(UserError, match=r"run `python -m analysis\.tune`"):
        gradients.load_tuned(tmp_path / "missing.json")
