"""The numbers behind the findings for figures 11-13 (docs/findings.md), read from the committed
metrics.

    python -m analysis.lm_findings            # length tasks + N-token bandit (toy runs cached)
    python -m analysis.lm_findings --no-toy   # skip the single-token side (no toy runs)

Prints markdown tables: per length task and method, the mean response length on held-out
prompts at step 0 and at the last step (mean ± std over seeds), and the first step at which the
seed-mean length is ≤ 1 token; per reward, mode and objective of the N-token bandit, the final
expected per-token reward and the first step at which the seed-mean reaches 0.9, beside the
single-token bandit with the same budget (figure 11's middle column).
"""

from __future__ import annotations

import argparse

import pandas as pd

from analysis import run_token_bandit as rtb
from analysis.run_length_tasks import DATA, METHODS


def first_step(curve: pd.Series, ok) -> str:
    """First index (step) of a seed-mean curve where ``ok`` holds, or "—"."""
    hits = curve[ok(curve)]
    return "—" if hits.empty else f"{int(hits.index[0])}"


def _pm(values: pd.Series, digits: int = 2) -> str:
    """Mean ± population std over seeds."""
    return f"{values.mean():.{digits}f} ± {values.std(ddof=0):.{digits}f}"


def length_table(metrics: pd.DataFrame) -> str:
    rows = ["| task | method | length at step 0 | length at last step | reward at last step "
            "| first step ≤ 1 token |", "|---|---|---|---|---|---|"]  # fmt: skip
    last = int(metrics.step.max())
    for task in ("min", "mode", "skew"):
        df = metrics[metrics.task == task]
        for key, (_, _, label) in METHODS.items():
            m = df[df.method == key]
            if m.empty:
                continue
            mean = m.groupby("step").eval_length.mean()
            end = m[m.step == last]
            short = first_step(mean, lambda c: c <= 1)
            rows.append(f"| {task} | {label} | {mean.iloc[0]:.2f} | {_pm(end.eval_length)} | "
                        f"{_pm(end.eval_reward)} | {short} |")  # fmt: skip
    return "\n".join(rows)


def token_table(table: pd.DataFrame, toy: bool) -> str:
    head = "| reward | mode | objective | N-token final | N-token step to 0.9 |"
    sep = "|---|---|---|---|---|"
    if toy:
        head += " single-token final | single-token step to 0.9 |"
        sep += "---|---|"
    rows = [head, sep]
    b = rtb.Budget()
    seeds = tuple(sorted(table.seed.unique().tolist()))
    for (reward, mode, objective), m in table.groupby(["reward", "mode", "objective"], sort=False):
        mean = m.groupby("step")["reward/expected"].mean()
        end = m[m.step == m.step.max()]["reward/expected"]
        row = (f"| {reward} | {mode} | {objective} | {_pm(end, 3)} | "
               f"{first_step(mean, lambda c: c >= 0.9)} |")  # fmt: skip
        if toy:
            from analysis.fig11_token_bandit import toy_metrics

            t = toy_metrics(objective, reward, mode, b, seeds)
            tm = t.groupby("step")["reward/expected"].mean()
            tend = t[t.step == t.step.max()]["reward/expected"]
            row += (f" {_pm(tend, 3)} | "
                    f"{first_step(tm, lambda c: c >= 0.9)} |")  # fmt: skip
        rows.append(row)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-toy", action="store_true", help="N-token numbers only")
    args = parser.parse_args(argv)
    print("## Length tasks (figures/data/length_tasks.csv)\n")
    print(length_table(pd.read_csv(DATA / "length_tasks.csv")))
    print("\n## N-token bandit (figures/data/token_bandit.csv)\n")
    print(token_table(pd.read_csv(DATA / "token_bandit.csv"), toy=not args.no_toy))


if __name__ == "__main__":
    main()
