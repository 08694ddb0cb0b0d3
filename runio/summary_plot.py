"""``summary.png``: a run's curves at a glance, written into its run directory at the end of a
run (``toy.train``, ``llm.train``; ``--no-plot`` turns it off).

Each panel draws the metrics it names that the run logged (a name never logged, or never
finite, is left out; a panel with none is left out). With several seeds in one table (the
bandit batches them) a curve is the mean over seeds at each step with a band from the lowest
to the highest seed. The drawing uses a ``matplotlib.figure.Figure`` of its own on the Agg
canvas: no pyplot, so no global backend, state or rcParams change for other code.

``write`` never raises (save ``KeyboardInterrupt``): the run's outputs are written before it,
and a figure that cannot be drawn or saved is one warning line on stderr.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runio.files import atomic_write

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not with runio
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FILE = "summary.png"
DPI = 100


@dataclass(frozen=True)
class Panel:
    """One axes of the figure: ``names`` (metrics.jsonl keys) drawn over the step."""

    title: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Curve:
    """A metric over the steps where it is finite: ``mean`` over seeds (the value itself for
    one seed) and, with several seeds, the band ``low`` .. ``high`` (min and max over seeds)."""

    name: str
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def columns(records: Iterable[Mapping]) -> dict[str, np.ndarray]:
    """metrics.jsonl records → one float array per key (NaN where a record lacks the key or
    holds something that is not a number)."""
    records = list(records)
    keys = dict.fromkeys(k for r in records for k in r)

    def number(value: object) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else math.nan

    return {k: np.array([number(r.get(k)) for r in records], dtype=float) for k in keys}


def curve(table: Mapping[str, np.ndarray], name: str) -> Curve | None:
    """``table[name]`` over ``table["step"]`` (its finite values only), by step; with a
    ``"seed"`` column holding several seeds, the mean over seeds per step and the min–max band.
    None when ``name`` is missing or never finite."""
    if name not in table:
        return None
    steps = np.asarray(table["step"], dtype=float)
    values = np.asarray(table[name], dtype=float)
    ok = np.isfinite(values) & np.isfinite(steps)
    if not ok.any():
        return None
    steps, values = steps[ok], values[ok]
    seeds = table.get("seed")
    if seeds is None or len(np.unique(np.asarray(seeds)[ok])) < 2:
        order = np.argsort(steps, kind="stable")
        return Curve(name, steps[order], values[order])
    at, index = np.unique(steps, return_inverse=True)
    mean = np.bincount(index, weights=values) / np.bincount(index)
    low, high = np.full(len(at), np.inf), np.full(len(at), -np.inf)
    np.minimum.at(low, index, values)
    np.maximum.at(high, index, values)
    return Curve(name, at, mean, low, high)


def figure(
    table: Mapping[str, np.ndarray],
    panels: Sequence[Panel],
    extra: Sequence[Callable[[Axes], None]] = (),
    title: str = "",
) -> Figure | None:
    """The summary figure: one axes per panel with at least one curve (``curve``), then one per
    ``extra`` drawer (called with its empty axes), at most three to a row (four: two by two).
    None when there is nothing to draw."""
    drawn = []
    for panel in panels:
        found = [c for c in (curve(table, name) for name in panel.names) if c is not None]
        if found:
            drawn.append((panel, found))
    n = len(drawn) + len(extra)
    if n == 0:
        return None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    ncols = 2 if n == 4 else min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows + 0.3), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (panel, found) in zip(axes, drawn):
        for c in found:
            marker = "o" if len(c.steps) <= 25 else None
            (line,) = ax.plot(c.steps, c.mean, label=c.name, marker=marker, ms=3, lw=1.4)
            if c.low is not None:
                ax.fill_between(c.steps, c.low, c.high, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(panel.title, fontsize="medium")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax, draw in zip(axes[len(drawn) :], extra):
        draw(ax)
    for ax in axes[n:]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title, fontsize="medium", parse_math=False)  # a name may hold '$'
    return fig


def save(fig: Figure, path: Path) -> None:
    """``fig`` as a PNG at ``path``, written atomically (``runio.atomic_write``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=DPI))


def write(run_dir: Path, draw: Callable[[], Figure | None], tag: str = "") -> Path | None:
    """Write ``run_dir/summary.png`` from ``draw()`` (its data read and its figure built inside
    the guard); returns the path, or None when ``draw`` had nothing to draw or anything failed:
    then one line ``<tag> warning: summary.png not written (<why>)`` on stderr, never an
    exception, so a plot cannot cost a run its outputs."""
    path = Path(run_dir) / FILE
    try:
        fig = draw()
        if fig is None:
            return None
        save(fig, path)
        return path
    except Exception as e:
        why = " ".join(f"{type(e).__name__}: {e}".split())
        why = why if len(why) <= 200 else why[:197] + "..."
        print(f"{tag} warning: {FILE} not written ({why})".lstrip(), file=sys.stderr)
        return None
