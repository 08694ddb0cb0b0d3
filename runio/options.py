"""The run knobs both worlds share, declared once: ``toy.BanditConfig`` and ``llm.TrainConfig``
inherit them (one name, type, meaning and help text). ``SCALE_DEFAULTS`` lists the knobs whose
default is the world's own."""

from __future__ import annotations

from dataclasses import dataclass

SCALE_DEFAULTS = ("lr", "eval_every")
"""Knobs whose default differs between the worlds: Adam on a 100-arm MLP takes 1e-3 and AdamW
on a pretrained transformer 1e-4; the bandit's exact evaluation costs less than a step (every
step: 1), a language model's a pass over held-out data (only at the end: 0)."""


@dataclass(frozen=True)
class RunOptions:
    """What every run has: the objective's hyperparameters, the optimiser's step size, when to
    evaluate, and where and how its outputs are written."""

    hp: tuple[str, ...] = ()
    """Objective hyperparameters as key=value (e.g. beta=0.1); unset ones keep the registry
    defaults (``objectives.OBJECTIVES[name].defaults``)."""
    lr: float = 1e-3
    """Peak learning rate of the optimiser."""
    eval_every: int = 1
    """Evaluate after every this-many optimiser steps (step 0 included) and after the last. A
    language model's rounds modes evaluate at a round's end when a multiple of eval_every falls
    in the round; 0 (a language model only): after the last step only."""
    name: str | None = None
    """Run name (the directory under out_dir). None: derived from the config plus a short hash
    of every field that changes the results, so different configs never share a directory."""
    out_dir: str = "runs"
    """Where <out_dir>/<name>/ is written; '' to write nothing (the result is returned only)."""
    progress: bool = True
    """Show a progress bar."""
    plot: bool = True
    """Write summary.png into the run directory at the end of a run: reward and KL to π_ref
    over the steps where logged (the bandit: mean over seeds with a min-max band, and the final
    distribution over the arms against π_ref and the reward; a language model's pairs mode: loss,
    implicit rewards, margin and pair accuracy). Nothing with out_dir=''; a figure that cannot
    be drawn is a warning, never a failed run. --no-plot: none."""
    report_to: str = "none"
    """Experiment tracking through accelerate's trackers: none, tensorboard or wandb (pip
    install 'modeseek[wandb]'), in <out_dir>/<name>/tracking/. Every metrics.jsonl record's
    numbers are logged under the same names at its step, with the resolved config as
    hyperparameters (the bandit, after training: with several seeds the mean over seeds plus
    <name>/seed_<s>). wandb runs offline unless WANDB_MODE is set or an API key is configured."""
    resume: bool = False
    """Continue the run already in out_dir/name: a complete one (COMPLETE written) is loaded
    and returned without training; an incomplete one (killed) must have the same config and
    continues from its last checkpoint (a language model) or reruns from scratch (the bandit:
    seconds, deterministic, so identical to an uninterrupted run). A missing one is started."""
    overwrite: bool = False
    """Delete an existing run of the same name and start afresh. Without --resume or
    --overwrite an existing non-empty run directory is an error (never silently replaced)."""
