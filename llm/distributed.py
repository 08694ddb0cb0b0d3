"""The training Accelerator, and a check that every process a launcher asked for joined it.

``build_accelerator(precision)``: ``precision`` is auto/fp32/bf16 (auto = bf16 only when CUDA
supports it). When a launcher asked for several processes and no device that accelerate can
group is visible (no CUDA, XPU, NPU...; Apple MPS cannot be grouped), the Accelerator is built with
``cpu=True``, so processes started by a torchrun-style launcher (``accelerate launch --multi_gpu``
or ``distributed_type: MULTI_GPU``, ``torchrun``) form one gloo process group on CPU instead of
each running alone. A single process keeps accelerate's default device (e.g. MPS).

Process-count check (accelerate 1.x launchers; the environment is read before the Accelerator
is built, since accelerate writes ``WORLD_SIZE`` itself once a CPU process group exists):

- Detectable, exact count: torchrun (what ``accelerate launch`` uses for MULTI_GPU / FSDP /
  ``--multi_gpu``, on CPU too) sets ``WORLD_SIZE`` (and ``LOCAL_WORLD_SIZE``) in every process;
  MPI launchers set ``PMI_SIZE`` / ``OMPI_COMM_WORLD_SIZE`` / ``MV2_COMM_WORLD_SIZE``. If that
  count exceeds the Accelerator's ``num_processes``, the processes did not join one group (e.g.
  a CUDA-less process built without ``cpu=True``): each would train alone on the same run dir.
- Detectable, count unknown: accelerate's simple launcher (``distributed_type: MULTI_CPU`` or
  ``NO``, or ``--cpu`` / no config on a machine without GPUs) starts ONE process per machine
  whatever ``num_processes`` says, and puts no process count in the environment. It does set
  ``ACCELERATE_USE_CPU`` always and ``MASTER_ADDR``/``MASTER_PORT`` only when num_processes > 1 or
  num_machines > 1; those three together with no world-size variable mean ">= 2 requested, 1
  started". False positive: a 1-process ``accelerate launch`` from a shell that exports
  ``MASTER_ADDR`` and ``MASTER_PORT`` itself (the error says to unset them).
- Not detectable: the exact N a MULTI_CPU launch asked for; a requested count that no launcher
  wrote down (plain ``python -m llm.train``, ``accelerate.Accelerator`` in a notebook); launchers
  other than the above. Processes that never start under torchrun are not a concern here: the
  others then block in rendezvous and torchrun fails the job before training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from errors import UserError

WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
CPU_CONFIG = "configs/accelerate_cpu_2proc.yaml"


@dataclass(frozen=True)
class Requested:
    """How many processes a launcher asked for: ``count`` (a lower bound unless ``exact``) and
    the environment variables that say so."""

    count: int
    exact: bool
    source: str


def requested_processes(env: Mapping[str, str] | None = None) -> Requested | None:
    """The process count the launcher's environment states, or None when it states none."""
    env = os.environ if env is None else env
    for var in WORLD_SIZE_VARS:
        value = env.get(var, "").strip()
        if value.isdigit():
            return Requested(int(value), True, f"{var}={value}")
    if "ACCELERATE_USE_CPU" in env and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        return Requested(2, False, "MASTER_ADDR/MASTER_PORT set by accelerate launch")
    return None


def check_process_count(requested: Requested | None, started: int) -> None:
    """Raise ``UserError`` when fewer processes joined the Accelerator than were requested."""
    if requested is None or started >= requested.count:
        return
    if requested.exact:
        raise UserError(
            f"the launcher asked for {requested.count} processes ({requested.source}) but the "
            f"Accelerator has {started}: the processes did not join one process group (on a "
            "machine without CUDA they need Accelerator(cpu=True) for gloo), so each would train "
            "alone on the same run directory"
        )
    raise UserError(
        f"accelerate launch asked for at least {requested.count} processes ({requested.source}) "
        f"but {started} started: its simple launcher (distributed_type MULTI_CPU or NO, or "
        "--cpu) starts one process per machine; for N processes on one CPU machine use "
        f"--config_file {CPU_CONFIG} (distributed_type: MULTI_GPU) or --multi_gpu "
        "--num_processes N; if you meant one process, unset MASTER_ADDR and MASTER_PORT"
    )


def resolve_precision(precision: str) -> str:
    """'bf16' or 'fp32': auto = bf16 only when CUDA supports it."""
    if precision == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else "fp32"
    return precision


def groupable_device() -> bool:
    """Whether a device that accelerate can put in a multi-process group is visible."""
    if torch.cuda.is_available():
        return True
    acc = getattr(torch, "accelerator", None)  # torch >= 2.6
    if acc is None or not acc.is_available():
        return False
    return acc.current_accelerator().type != "mps"


def build_accelerator(precision: str, log_with: str | None = None, project_dir: str | None = None):
    """The Accelerator for training (CPU and gloo for a multi-process launch without a groupable
    device), after checking that all requested processes joined it. ``log_with`` and
    ``project_dir``: accelerate's experiment tracker and the directory of its files."""
    from accelerate import Accelerator

    requested = requested_processes()
    cpu = requested is not None and requested.count > 1 and not groupable_device()
    mixed = "bf16" if resolve_precision(precision) == "bf16" else "no"
    tracking = {"log_with": log_with, "project_dir": project_dir} if log_with else {}
    accelerator = Accelerator(mixed_precision=mixed, cpu=cpu, **tracking)
    check_process_count(requested, accelerator.num_processes)
    return accelerator
