"""The playground's views: matplotlib figures of finished runs and the numbers panel (HTML).

A finished run is kept as a ``Shown`` (plain arrays: what the figures need, small enough for a
browser session's state). Figures are ``matplotlib.figure.Figure`` objects built without pyplot,
so several sessions can draw at once.
"""

from __future__ import annotations

import html
import math
import warnings
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from objectives.display import PALETTE
from toy.bandit import reference_probs, reward_vector
from toy.playground.runs import NUMBERS, Finished, final_numbers, label_of

CURVES = ("reward/expected", "policy/kl_ref", "logps/chosen", "logps/rejected")
TITLES = {
    "reward/expected": "expected reward E_π[r]",
    "policy/kl_ref": "KL(π ‖ π_ref)",
    "logps/chosen": "log π(y_w): chosen (winners of the batch's pairs)",
    "logps/rejected": "log π(y_l): rejected (losers of the batch's pairs)",
}
_FALLBACK = {"A": "#d62728", "B": "#1f77b4"}
_REF_COLOUR = "#9e9e9e"
_REWARD_COLOUR = "#2b2b2b"


@dataclass
class Shown:
    """What the views draw of one finished run."""

    tag: str
    label: str
    colour: str
    reward_name: str
    steps: np.ndarray
    """(T + 1,): the metrics' steps."""
    curves: dict[str, np.ndarray]
    """metric → (S, T + 1): per seed and step."""
    dist_steps: np.ndarray
    dist: np.ndarray
    """(len(dist_steps), S, K): mean over evaluation contexts of π(·|x)."""
    reward: np.ndarray
    ref: np.ndarray
    numbers: dict[str, tuple[float, float]]
    total_steps: int
    queries: int
    seeds: tuple[int, ...]
    seconds: float


def colour_of(tag: str, objective: str, taken: str | None = None) -> str:
    """The objective's colour (``objectives.display.PALETTE``), unless another run has it."""
    colour = PALETTE.get(objective, _FALLBACK.get(tag, "#444444"))
    return "#444444" if colour == taken else colour


def shown(done: Finished, taken: str | None = None) -> Shown:
    """The arrays the views need from a finished run."""
    result, cfg = done.result, done.result.config
    m = result.metrics.sort_values(["seed", "step"])
    s = len(cfg.seeds)
    curves = {k: m[k].to_numpy(dtype=float).reshape(s, -1) for k in CURVES}
    source = cfg.reward if cfg.reward_vector is None else cfg.reward_vector
    return Shown(
        tag=done.tag,
        label=label_of(done.tag, cfg),
        colour=colour_of(done.tag, cfg.objective, taken),
        reward_name=cfg.reward if cfg.reward_vector is None else "custom",
        steps=m[m.seed == cfg.seeds[0]].step.to_numpy(),
        curves=curves,
        dist_steps=np.asarray(result.dist_steps),
        dist=np.asarray(result.dist, dtype=float),
        reward=reward_vector(source, cfg.n_arms).numpy(),
        ref=reference_probs(cfg.n_arms).numpy(),
        numbers=final_numbers(result),
        total_steps=cfg.total_steps,
        queries=int(m["queries/reward"].max()),
        seeds=tuple(cfg.seeds),
        seconds=done.seconds,
    )


def _snapshot(run: Shown, step: int) -> int:
    """Index of the stored distribution nearest ``step`` from below (the first one if none)."""
    return max(int(np.searchsorted(run.dist_steps, step, side="right")) - 1, 0)


def dist_figure(runs: list[Shown], step: int, log_scale: bool = False,
                reward_name: str = "R1") -> Figure:  # fmt: skip
    """π̄ over the arms at the snapshot nearest ``step`` (mean over seeds, band: min to max),
    beside π_ref and the reward (right axis). Without runs: π_ref and ``reward_name``."""
    fig = Figure(figsize=(8, 3.3), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ref = runs[0].ref if runs else reference_probs().numpy()
    arms = np.arange(len(ref))
    ax.fill_between(arms, ref, step="mid", color=_REF_COLOUR, alpha=0.35, lw=0, label="π_ref")
    titles = []
    for run in runs:
        i = _snapshot(run, step)
        p = run.dist[i]  # (S, K)
        ax.plot(arms, p.mean(0), color=run.colour, lw=1.8, label=run.label)
        if len(p) > 1:
            ax.fill_between(arms, p.min(0), p.max(0), color=run.colour, alpha=0.18, lw=0)
        titles.append(f"{run.tag}: step {run.dist_steps[i]} of {run.total_steps}")
    ax.set_xlabel("arm y")
    ax.set_ylabel("π̄(y)  (mean over contexts)")
    ax.set_xlim(-0.5, len(ref) - 0.5)
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-6)
    else:
        ax.set_ylim(bottom=0)
    right = ax.twinx()
    rewards = {run.reward_name: run.reward for run in runs} or {
        reward_name: reward_vector(reward_name).numpy()
    }
    for (name, r), style in zip(rewards.items(), ("--", ":")):
        right.plot(arms, r, style, color=_REWARD_COLOUR, lw=1.2, label=f"reward {name}")
    right.set_ylim(0, 1.05)
    right.set_ylabel("reward r(y)")
    handles = [h for a in (ax, right) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
               fontsize=8, frameon=False)  # fmt: skip
    what = "; ".join(titles) if titles else "before training: π_ref and the reward"
    ax.set_title(f"Policy over the 100 arms — {what}", fontsize=10, loc="left")
    ax.grid(alpha=0.25)
    return fig


def _band(ax, run: Shown, key: str) -> None:
    """Mean over seeds, with a band of ± one standard deviation over seeds."""
    y = run.curves[key]
    with warnings.catch_warnings():  # steps where no seed had a valid pair are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, sd = np.nanmean(y, 0), np.nanstd(y, 0)
    ax.plot(run.steps, mean, color=run.colour, lw=1.6, label=run.label)
    if len(y) > 1:
        ax.fill_between(run.steps, mean - sd, mean + sd, color=run.colour, alpha=0.2, lw=0)


def _panels(runs: list[Shown], keys: tuple[str, str], title: str) -> Figure | None:
    if not runs:
        return None
    fig = Figure(figsize=(8, 3.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, keys):
        for run in runs:
            _band(ax, run, key)
        ax.set_title(TITLES[key], fontsize=10, loc="left")
        ax.set_xlabel("gradient step")
        ax.grid(alpha=0.25)
    axes[0].legend(fontsize=8, loc="best")
    seeds = ", ".join(f"{r.tag}: {len(r.seeds)}" for r in runs)
    fig.suptitle(f"{title} — line: mean over seeds ({seeds}); band: ± 1 sd", fontsize=9)
    return fig


def curves_figure(runs: list[Shown]) -> Figure | None:
    """Expected reward and KL(π ‖ π_ref) against the step, with seed bands."""
    return _panels(runs, ("reward/expected", "policy/kl_ref"), "Reward and KL")


def logps_figure(runs: list[Shown]) -> Figure | None:
    """log π of the chosen and rejected responses of each step's batch, with seed bands."""
    return _panels(runs, ("logps/chosen", "logps/rejected"), "Likelihood of chosen and rejected")


def fmt(x: float) -> str:
    """A number as the panel shows it: 4 decimals; '—' for a missing value (NaN)."""
    return "—" if not math.isfinite(x) else f"{x:.4f}"


def number_id(tag: str, key: str) -> str:
    """The element id of a number in the panel: ``num-A-reward-expected``."""
    return f"num-{tag}-{key.replace('/', '-')}"


def numbers_html(runs: list[Shown]) -> str:
    """The numbers panel: each metric at the last step, mean ± sd over seeds, per run."""
    if not runs:
        return "<p class='hint'>Press <b>Run</b> to train; the final numbers appear here.</p>"
    head = "".join(
        f"<th><span class='swatch' style='background:{r.colour}'></span>"
        f"{html.escape(r.label)}</th>" for r in runs
    )  # fmt: skip
    rows = []
    for key, label in NUMBERS:
        cells = []
        for r in runs:
            mean, sd = r.numbers[key]
            sd_text = f" <span class='sd'>± {fmt(sd)}</span>" if math.isfinite(mean) else ""
            cells.append(f"<td><span id='{number_id(r.tag, key)}'>{fmt(mean)}</span>{sd_text}</td>")
        rows.append(f"<tr><th scope='row'>{html.escape(label)}</th>{''.join(cells)}</tr>")
    extra = (
        ("gradient steps", "steps", lambda r: str(r.total_steps)),
        ("reward queries", "queries", lambda r: str(r.queries)),
        ("seeds", "seeds", lambda r: " ".join(map(str, r.seeds))),
        ("wall time", "seconds", lambda r: f"{r.seconds:.1f} s"),
    )
    for label, key, value in extra:
        cells = "".join(f"<td><span id='num-{r.tag}-{key}'>{value(r)}</span></td>" for r in runs)
        rows.append(f"<tr><th scope='row'>{label}</th>{cells}</tr>")
    note = ""
    if any(not math.isfinite(r.numbers[k][0]) for r in runs for k, _ in NUMBERS):
        note = "<p class='hint'>—: no valid pair in the last step's batch (its samples tied).</p>"
    return (
        "<table class='numbers'><thead><tr><th>at the last step (mean ± sd over seeds)</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
    )
