"""What every figure script shares: one palette keyed by objective, labels, and a saver that
writes byte-reproducible PNG and PDF files into ``figures/``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

FIGURES = Path(__file__).resolve().parent.parent / "figures"

# One colour per objective, the same in every figure.
_ORDER = [
    "sft",
    "bon",
    "bon_pushdown",
    "rwr",
    "reinforce",
    "ppo",
    "dpo",
    "ipo",
    "slic",
    "orpo",
    "simpo",
    "asft",
    "kto",
]
PALETTE = dict(zip(_ORDER, sns.color_palette("tab20", len(_ORDER)).as_hex()))
REWARD_COLOURS = {"R1": "#d62728", "R2": "#2ca02c", "R1_w20": "#ff7f0e", "R1_w30": "#9467bd"}


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
