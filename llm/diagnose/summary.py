"""The summary of a diagnose table (shares, sign accuracy, Spearman, CHES AUCs, at-risk pairs),
its printed form, and reading a table back (``--summary-of``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from llm.diagnose.config import TABLE_NAMES
from runio import UserError


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's ρ: Pearson's correlation of average ranks (no scipy needed)."""
    ok = x.notna() & y.notna()
    if ok.sum() < 3:
        return math.nan
    return float(x[ok].rank().corr(y[ok].rank()))


def auc(score: pd.Series, label: pd.Series) -> float:
    """P(score of a positive > score of a negative), ties counting ½ (Mann–Whitney U)."""
    ok = score.notna() & label.notna()
    score, label = score[ok], label[ok].astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = score.rank()
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def summarize(df: pd.DataFrame, risk: str | None = None, top: int = 10, texts=None) -> dict:
    """Per objective: predicted (and measured) displacement shares, sign accuracy, Spearman,
    CHES AUCs; per data group if the table has a ``group`` column; the at-risk pairs."""
    out: dict = {"pairs": int(df.pair.nunique()), "objectives": {}}
    measured = "meas_dlogp_w" in df
    for name, g in df.groupby("objective", sort=False):
        r: dict = {
            "pred_displace_share": float((g.pred_dlogp_w < 0).mean()),
            "pred_rejected_down_share": float((g.pred_dlogp_l < 0).mean()),
            "median_pushdown": float(g.pushdown.median()),
            "median_log10_pushdown": float(g.log10_pushdown.median()),
            "auc_ches_pred": auc(g.ches, g.pred_dlogp_w < 0),
            "auc_ches_norm_pred": auc(g.ches_norm, g.pred_dlogp_w < 0),
            "spearman_ches_pred_w": spearman(g.ches, g.pred_dlogp_w),
        }
        if measured:
            label = g.meas_dlogp_w < 0
            rel = ((g.pred_dlogp_w - g.meas_dlogp_w).abs() / g.meas_dlogp_w.abs()).median()
            r |= {
                "meas_displace_share": float(label.mean()),
                "meas_rejected_down_share": float((g.meas_dlogp_l < 0).mean()),
                "sign_acc_w": float((np.sign(g.pred_dlogp_w) == np.sign(g.meas_dlogp_w)).mean()),
                "sign_acc_l": float((np.sign(g.pred_dlogp_l) == np.sign(g.meas_dlogp_l)).mean()),
                "spearman_w": spearman(g.pred_dlogp_w, g.meas_dlogp_w),
                "spearman_l": spearman(g.pred_dlogp_l, g.meas_dlogp_l),
                "median_rel_err_w": float(rel),
                "auc_ches_meas": auc(g.ches, label),
                "auc_ches_norm_meas": auc(g.ches_norm, label),
                "auc_pred_meas": auc(-g.pred_dlogp_w, label),
                "spearman_ches_w": spearman(g.ches, g.meas_dlogp_w),
                "spearman_ches_norm_w": spearman(g.ches_norm, g.meas_dlogp_w),
            }
            if "meas_dlogp_w_k" in g:
                r["meas_displace_share_k"] = float((g.meas_dlogp_w_k < 0).mean())
                r["spearman_w_k"] = spearman(g.pred_dlogp_w, g.meas_dlogp_w_k)
        if "batch_pred_dlogp_w" in g:
            r |= _batch_summary(g)
        out["objectives"][name] = r
    if "group" in df:
        col = "meas_dlogp_w" if measured else "pred_dlogp_w"
        out["displace_share_by_group"] = _shares_by_group(df, col)
        if "batch_pred_dlogp_w" in df:
            col = "batch_meas_dlogp_w" if "batch_meas_dlogp_w" in df else "batch_pred_dlogp_w"
            out["batch_displace_share_by_group"] = _shares_by_group(df, col)
        out["ches_by_group"] = {
            str(k): float(v)
            for k, v in df.drop_duplicates("pair").groupby("group").ches.median().items()
        }
    risk = risk if risk in set(df.objective) else df.objective.iloc[0]
    g = df[df.objective == risk]
    # a batch step is the training-time regime (displacement shows there first): rank by it
    # when --batch-step ran, else by the one-pair prediction
    rank_by = "batch_pred_dlogp_w" if "batch_pred_dlogp_w" in g else "pred_dlogp_w"
    g = g.sort_values(rank_by).head(top)
    texts = texts or {}
    cols = ["pair", *(["row"] if "row" in g else []), "pred_dlogp_w", "pred_dlogp_l", "ches"]
    cols += ["ches_norm", "grad_cos"]
    cols += ["meas_dlogp_w"] if measured else []
    cols += [c for c in ("batch_pred_dlogp_w", "batch_meas_dlogp_w", "group") if c in g]
    out["at_risk_objective"] = risk
    out["at_risk_ranked_by"] = rank_by
    out["at_risk"] = [
        {**{c: _plain(r[c]) for c in cols}, **texts.get(int(r["pair"]), {})}
        for _, r in g.iterrows()
    ]
    return out


def _shares_by_group(df: pd.DataFrame, col: str) -> dict[str, float]:
    """{"objective/group": share of the group's pairs with ``col`` < 0}."""
    shares = df.assign(d=df[col] < 0).groupby(["objective", "group"], sort=False).d.mean()
    return {f"{o}/{grp}": float(v) for (o, grp), v in shares.items()}


def _batch_summary(g: pd.DataFrame) -> dict:
    """--batch-step's statistics of one objective's rows (keys prefixed ``batch_``)."""
    pred_w, pred_l = g.batch_pred_dlogp_w, g.batch_pred_dlogp_l
    r = {
        "batch_pred_displace_share": float((pred_w < 0).mean()),
        "batch_pred_rejected_down_share": float((pred_l < 0).mean()),
        "batch_pred_mean_dlogp_w": float(pred_w.mean()),
        "batch_auc_ches_pred": auc(g.ches, pred_w < 0),
        "batch_spearman_ches_pred_w": spearman(g.ches, pred_w),
    }
    if "batch_meas_dlogp_w" not in g:
        return r
    meas_w, meas_l = g.batch_meas_dlogp_w, g.batch_meas_dlogp_l
    label = meas_w < 0
    return r | {
        "batch_meas_displace_share": float(label.mean()),
        "batch_meas_rejected_down_share": float((meas_l < 0).mean()),
        "batch_meas_mean_dlogp_w": float(meas_w.mean()),
        "batch_sign_acc_w": float((np.sign(pred_w) == np.sign(meas_w)).mean()),
        "batch_sign_acc_l": float((np.sign(pred_l) == np.sign(meas_l)).mean()),
        "batch_spearman_w": spearman(pred_w, meas_w),
        "batch_spearman_l": spearman(pred_l, meas_l),
        "batch_auc_ches_meas": auc(g.ches, label),
        "batch_auc_ches_norm_meas": auc(g.ches_norm, label),
        "batch_auc_pred_meas": auc(-pred_w, label),
        "batch_spearman_ches_w": spearman(g.ches, meas_w),
        "batch_spearman_ches_norm_w": spearman(g.ches_norm, meas_w),
    }


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _num(v) -> float:
    """A summary value for printing (None, JSON's NaN, as NaN)."""
    return math.nan if v is None else float(v)


SUMMARY_COLUMNS = {
    "one step on each pair alone": [
        ("pred_displace_share", "pred Δℓ_w<0"),
        ("meas_displace_share", "meas Δℓ_w<0"),
        ("meas_displace_share_k", "k steps Δℓ_w<0"),
        ("pred_rejected_down_share", "pred Δℓ_l<0"),
        ("meas_rejected_down_share", "meas Δℓ_l<0"),
        ("sign_acc_w", "sign acc w"),
        ("sign_acc_l", "sign acc l"),
        ("spearman_w", "Spearman w"),
        ("spearman_l", "Spearman l"),
        ("auc_ches_meas", "AUC CHES"),
        ("auc_ches_norm_meas", "AUC CHES/|y|"),
        ("auc_ches_pred", "AUC CHES (pred)"),
        ("spearman_ches_pred_w", "ρ(CHES,pred w)"),
        ("spearman_ches_w", "ρ(CHES,meas w)"),
        ("median_pushdown", "push-down"),
    ],
    "one step on the batch of all pairs": [
        ("batch_pred_displace_share", "pred Δℓ_w<0"),
        ("batch_meas_displace_share", "meas Δℓ_w<0"),
        ("batch_pred_rejected_down_share", "pred Δℓ_l<0"),
        ("batch_meas_rejected_down_share", "meas Δℓ_l<0"),
        ("batch_sign_acc_w", "sign acc w"),
        ("batch_sign_acc_l", "sign acc l"),
        ("batch_spearman_w", "Spearman w"),
        ("batch_spearman_l", "Spearman l"),
        ("batch_auc_ches_meas", "AUC CHES"),
        ("batch_auc_ches_norm_meas", "AUC CHES/|y|"),
        ("batch_auc_ches_pred", "AUC CHES (pred)"),
        ("batch_spearman_ches_pred_w", "ρ(CHES,pred w)"),
        ("batch_spearman_ches_w", "ρ(CHES,meas w)"),
    ],
}
"""The summary's printed tables: (key, label) per column, shown when some objective has it."""


def format_summary(s: dict, width: int = 100) -> str:
    lines = [f"pairs: {s['pairs']}"]
    for title, keys in SUMMARY_COLUMNS.items():
        present = [(k, lab) for k, lab in keys if any(k in r for r in s["objectives"].values())]
        if not present:
            continue
        widths = [max(len(lab), 7) for _, lab in present]
        lines.append(f"{title}:")
        head = " ".join(f"{lab:>{w}}" for (_, lab), w in zip(present, widths))
        lines.append(f"{'objective':<9} {head}")
        for name, r in s["objectives"].items():
            cells = [f"{_num(r.get(k)):>{w}.3g}" for (k, _), w in zip(present, widths)]
            lines.append(f"{name:<9} " + " ".join(cells))
    for key, what in (("displace_share_by_group", "one pair"), ("batch_displace_share_by_group",
                                                                 "batch")):  # fmt: skip
        if key in s:
            groups = ", ".join(f"{k} {v:.2f}" for k, v in s[key].items())
            lines.append(f"share with Δℓ_w < 0 by group ({what}): {groups}")
    how = (
        "one step on the batch"
        if s.get("at_risk_ranked_by", "").startswith("batch")
        else "one step"
    )
    lines.append(
        f"most at risk under {s['at_risk_objective']} (lowest predicted Δℓ_w after {how}):"
    )
    for r in s["at_risk"]:
        row = f" (row {r['row']})" if "row" in r else ""
        head = f"  pair {r['pair']}{row}: pred Δℓ_w {r['pred_dlogp_w']:.3g}, CHES {r['ches']:.3g}"
        if "meas_dlogp_w" in r:
            head += f", measured {r['meas_dlogp_w']:.3g}"
        if "batch_pred_dlogp_w" in r:
            head += f"; in the batch: pred {r['batch_pred_dlogp_w']:.3g}"
        if "batch_meas_dlogp_w" in r:
            head += f", measured {r['batch_meas_dlogp_w']:.3g}"
        if "group" in r:
            head += f" [{r['group']}]"
        lines.append(head)
        for key in ("prompt", "chosen", "rejected_prompt", "rejected"):
            if key in r:
                text, room = " ".join(str(r[key]).split()), width - 6 - len(key)
                if len(text) > room:  # a prompt's end is nearest the response
                    text = "…" + text[-room + 1 :] if "prompt" in key else text[: room - 1] + "…"
                lines.append(f"    {key}: {text}")
    return "\n".join(lines)


def read_table(out_dir: Path) -> pd.DataFrame:
    for name in TABLE_NAMES:
        if (out_dir / name).exists():
            path = out_dir / name
            return pd.read_parquet(path) if name.endswith("parquet") else pd.read_csv(path)
    raise UserError(f"{out_dir}: no pairs.csv or pairs.parquet (run llm.diagnose first)")


def read_texts(out_dir: Path) -> dict[int, dict]:
    path = out_dir / "texts.jsonl"
    if not path.exists():
        return {}
    recs = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return {int(r.pop("pair")): r for r in recs}
