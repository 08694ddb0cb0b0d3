"""A bandit run's ``summary.png`` (``runio.summary_plot``): expected reward and KL(π ‖ π_ref)
over the steps, the mean over seeds with a min-max band, and the final distribution over the
arms (mean over eval contexts, then over seeds, with the seeds' min-max band) against π_ref,
with the reward on a second axis."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runio import summary_plot
from runio.summary_plot import Panel

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PANELS = (
    Panel("expected reward", ("reward/expected",)),
    Panel("KL(π ‖ π_ref)", ("policy/kl_ref",)),
)
"""The curves: toy.metrics' names."""


def curve_table(metrics: pd.DataFrame) -> dict[str, np.ndarray]:
    """The columns of the metrics table (one row per seed and step) that the curves read."""
    names = ("seed", "step", *(n for p in PANELS for n in p.names))
    return {n: metrics[n].to_numpy(dtype=float) for n in names if n in metrics}


def distribution_drawer(final, ref_K, reward_K, step: int):
    """A drawer (``runio.summary_plot.figure``'s ``extra``) of ``final`` (S, K): each seed's
    π over the K arms at ``step``, mean over seeds with a min-max band, against ``ref_K``
    (π_ref) and ``reward_K`` (right axis)."""
    final = np.atleast_2d(np.asarray(final, dtype=float))
    ref_K = np.asarray(ref_K, dtype=float)
    reward_K = np.asarray(reward_K, dtype=float)
    arms = np.arange(final.shape[1])

    def draw(ax: Axes) -> None:
        (ref,) = ax.plot(arms, ref_K, color="0.45", ls="--", lw=1.2, label="π_ref")
        (pol,) = ax.plot(arms, final.mean(0), color="C0", lw=1.4, label=f"π at step {step}")
        if len(final) > 1:
            ax.fill_between(arms, final.min(0), final.max(0), color="C0", alpha=0.2, lw=0)
        ax.set_xlabel("arm")
        ax.set_ylabel("probability")
        ax.set_title("final distribution", fontsize="medium")
        right = ax.twinx()
        (rew,) = right.plot(arms, reward_K, color="C3", lw=0.9, alpha=0.6, label="reward")
        right.set_ylabel("reward", color="C3")
        right.tick_params(axis="y", colors="C3")
        ax.legend(handles=[pol, ref, rew], fontsize="small")

    return draw


def figure(cfg, metrics: pd.DataFrame, dist, ref_K, reward_K) -> Figure | None:
    """The figure of a run: ``metrics`` (toy.metrics' table), ``dist`` (steps, S, K): the stored
    distributions, the last one drawn."""
    seeds = len(cfg.seeds)
    band = f"; mean over {seeds} seeds, band min-max" if seeds > 1 else f"; seed {cfg.seeds[0]}"
    drawer = distribution_drawer(np.asarray(dist)[-1], ref_K, reward_K, cfg.total_steps)
    return summary_plot.figure(
        curve_table(metrics), PANELS, extra=(drawer,), title=f"{cfg.run_name()}{band}"
    )


def write(cfg, run_dir: Path, metrics: pd.DataFrame, dist, ref_K, reward_K) -> Path | None:
    """``run_dir/summary.png`` (atomic); None and one warning line if it cannot be drawn."""
    return summary_plot.write(
        run_dir, lambda: figure(cfg, metrics, dist, ref_K, reward_K), tag="[toy]"
    )
