"""What every figure script shares: one palette keyed by objective, labels, and a saver that
writes byte-reproducible PNG and PDF files into ``figures/``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

from objectives.display import DISPLAY_NAMES, PALETTE  # noqa: F401 (every figure's)

FIGURES = Path(__file__).resolve().parent.parent / "figures"

MODE_NAMES = {"on_policy": "on-policy", "offline": "offline", "hybrid": "hybrid"}
# hyperparameter names as the papers write them
HP_SYMBOLS = {"beta": "β", "tau": "τ", "lam": "λ", "delta": "δ", "gamma": "γ", "eps": "ε",
              "clip_eps": "ε"}  # fmt: skip


def label(key: str, mode: str | None = None) -> str:
    """The paper's name of objective ``key`` (the key itself when it has none), prefixed with
    the sampling mode when given: ``label("dpo", "on_policy")`` is "on-policy DPO"."""
    name = DISPLAY_NAMES.get(key, key)
    return f"{MODE_NAMES.get(mode, mode)} {name}" if mode else name


def hp_text(*items: str) -> str:
    """``"beta=0.3"`` → "β 0.3" (several joined by ", ")."""
    out = []
    for item in items:
        key, _, value = item.partition("=")
        out.append(f"{HP_SYMBOLS.get(key, key)} {value}" if value else key)
    return ", ".join(out)


REWARD_COLOURS = {"R1": "#d62728", "R2": "#2ca02c", "R1_w20": "#ff7f0e", "R1_w30": "#9467bd"}
MODE_STYLES = {"on_policy": "-", "offline": "--", "hybrid": ":"}


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "svg.hashsalt": "modeseek"})


def save(fig, name: str) -> Path:
    """Write figures/<name>.png and .pdf without timestamps (same bytes on every rerun)."""
    FIGURES.mkdir(exist_ok=True)
    png = FIGURES / f"{name}.png"
    fig.savefig(png, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(
        FIGURES / f"{name}.pdf",
        bbox_inches="tight",
        metadata={"Creator": None, "Producer": None, "CreationDate": None},
    )
    plt.close(fig)
    return png


def seeds(quick: bool) -> tuple[int, ...]:
    """Five seeds for the figures, one in quick mode."""
    return (0,) if quick else (0, 1, 2, 3, 4)


def band(ax, metrics, y: str, x: str = "step", color=None, label=None, **kw):
    """Mean over seeds of ``y`` against ``x`` with a shaded ±1 std band; row 0 has no training
    metrics, so NaN rows are dropped first."""
    df = metrics[[x, y, "seed"]].dropna()
    stats = df.groupby(x)[y].agg(["mean", "std"]).fillna(0.0)
    ax.plot(stats.index, stats["mean"], color=color, label=label, **{"lw": 1.8, **kw})
    ax.fill_between(
        stats.index,
        stats["mean"] - stats["std"],
        stats["mean"] + stats["std"],
        color=color,
        alpha=0.2,
        lw=0,
    )
    return stats


def final(metrics, y: str = "reward/expected"):
    """Mean and std over seeds of ``y`` at the last step."""
    last = metrics[metrics.step == metrics.step.max()][y]
    return last.mean(), last.std(ddof=0)


def fixed_pool(kw: dict) -> dict:
    """Paper A's sweeps over P train on one fixed set of P prompts, each used once per round
    (the presets' ``n_train_contexts`` = P, the official ``num_train_states``). A preset whose
    ``prompts_per_round`` is overridden keeps its own pool size otherwise, and a pool smaller
    than P would repeat prompts within a round; so the pool follows P unless it is given."""
    if "prompts_per_round" in kw:
        kw.setdefault("n_train_contexts", kw["prompts_per_round"])
    return kw


def onpolicy(objective: str, reward: str, seed_tuple: tuple[int, ...], quick: bool, **kw):
    """The on-policy bandit config every figure shares for ``objective`` (10 prompts × 10
    samples, T 15, lr 1e-3, 100 rounds; 3 rounds in quick mode). Overriding
    ``prompts_per_round`` also sets the training pool to those P prompts (``fixed_pool``)."""
    from toy.config import preset
    from toy.gradients import BANDIT_HP

    kw.setdefault("rounds", 3 if quick else 100)
    fixed_pool(kw)
    return preset(
        "onpolicy_bon",
        objective=objective,
        hp=BANDIT_HP.get(objective, ()),
        reward=reward,
        seeds=seed_tuple,
        **kw,
    )


def offline(objective: str, reward: str, seed_tuple: tuple[int, ...], quick: bool, **kw):
    """One round of π_ref samples (100 prompts × 10), then T steps at lr 3e-3 (offline IPO's
    settings; 300 steps, 10 in quick mode). Overriding ``prompts_per_round`` also sets the
    training pool to those P prompts (``fixed_pool``)."""
    from toy.config import preset
    from toy.gradients import BANDIT_HP

    kw.setdefault("steps_per_round", 10 if quick else 300)
    fixed_pool(kw)
    return preset(
        "offline_ipo",
        objective=objective,
        hp=BANDIT_HP.get(objective, ()),
        reward=reward,
        seeds=seed_tuple,
        pair_threshold=0.0,
        **kw,
    )


def reward_vs_queries(ax, metrics, color=None, label=None):
    """Expected reward against cumulative reward queries (steps after the first update)."""
    return band(ax, metrics[metrics.step > 0], "reward/expected", x="queries/reward",
                color=color, label=label)  # fmt: skip
