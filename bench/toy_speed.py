"""Speed of the bandit: on-policy BoN on R1 (preset ``onpolicy_bon``: 10 prompts × N 10, 100
rounds × T 15 = 1,500 steps, MLP policy, every metric), 1 seed and 5 seeds batched.

    python -m bench.toy_speed [--repeats 3] [--load K] [--threads N] [--sweep]

Reports, best and median of ``--repeats``:

- in-process, after imports: ``toy.train.run`` with ``out_dir=""`` (π_ref initialisation, the
  loop, the metrics table), split into the π_ref initialisation (a cold run minus a run whose
  fitted initialisation is cached) and the rest;
- a per-step split of the loop (evaluation-metric forward, train forward + objective, backward,
  optimiser, record + checks) from one run of the real loop timed through ``toy.train.train``'s
  ``phases`` hook, its evaluation in the loop's thread so that it is timed; if the hook is
  missing or fails, it prints "split unavailable" and goes on;
- whole processes: ``python -m toy.train --preset onpolicy_bon --seeds 0 --out-dir ''
  --no-progress`` and the import costs from ``python -X importtime -c "import toy.train"``;
- ``--load K``: K CPU-bound busy-loop processes, started here and always stopped (also on
  Ctrl-C). Idle and loaded measurements alternate (idle, loaded, idle, loaded, ...) so both see
  the same machine; the ratio loaded/idle of the medians is printed;
- ``--sweep``: the whole-process time of ``python -m toy.sweep ...`` when ``toy/sweep.py``
  exists (skipped otherwise);
- the evaluation worker on and off (``MODESEEK_EVAL_THREAD`` 1 / 0), in-process, alternating,
  idle and loaded (``--no-worker-compare`` skips it);
- the arithmetic floor of each target (``arithmetic_floor``): the evaluation forward, the
  training MLP step and Adam alone, spread over the CPUs, beside the target and the measurement.

Ends with markdown tables (docs/speed.md's tables are regenerated from them). Not a test. Other
processes on the machine change every number: the header prints the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# torch and toy are imported lazily: the busy-loop children (spawned) import this module and
# must start in milliseconds.

REPO = Path(__file__).resolve().parent.parent
PRESET = "onpolicy_bon"
SWEEP_ARGS = "--preset onpolicy_dpo --grid lr=1e-3,3e-3,1e-2 beta=0.03,0.1,0.3 --seeds 0 1 2 3 4"
"""Default ``--sweep-args``: the speed target's sweep over 9 grid points × 5 seeds (45 runs)."""
IMPORT_ROOTS = ("torch", "numpy", "pandas", "tyro", "tqdm", "objectives", "rounds", "runio")


# ---------------------------------------------------------------------------- background load


def _spin(go, stop) -> None:
    """A CPU-bound busy loop (pure Python) while ``go`` is set, until ``stop``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    x = 0
    while not stop.is_set():
        if not go.wait(0.05):
            continue
        for _ in range(20_000):  # ~1 ms between checks
            x += 1


class BusyLoad:
    """K spinning processes, switched on and off with ``on()``/``off()``; ``close()`` stops
    them (use as a context manager so they stop on any exit, Ctrl-C included)."""

    def __init__(self, k: int):
        ctx = mp.get_context("spawn")
        self.go, self.stop = ctx.Event(), ctx.Event()
        self.procs = [
            ctx.Process(target=_spin, args=(self.go, self.stop), daemon=True, name=f"busy{i}")
            for i in range(k)
        ]
        for p in self.procs:
            p.start()

    def on(self) -> None:
        if self.procs:
            self.go.set()
            time.sleep(0.2)  # let the spinners reach the CPU

    def off(self) -> None:
        self.go.clear()
        if self.procs:
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.go.set()
        for p in self.procs:
            p.join(timeout=2)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
        self.procs = []

    def __enter__(self) -> BusyLoad:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- in-process


def _config(n_seeds: int):
    from toy.config import preset

    return preset(PRESET, seeds=tuple(range(n_seeds)), out_dir="", progress=False)


def _clear_init_cache() -> bool:
    """Forget fitted π_ref initialisations; False when ``toy.problem`` has no such cache."""
    try:
        from toy.problem import clear_init_cache
    except ImportError:
        return False
    clear_init_cache()
    return True


@contextlib.contextmanager
def _env_var(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the duration, then as it was."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def time_in_process(n_seeds: int) -> dict[str, float]:
    """One cold ``run`` (π_ref fitted) and one warm ``run`` (fit cached): seconds."""
    from toy.train import run

    cfg = _config(n_seeds)
    out = {}
    if _clear_init_cache():
        start = time.perf_counter()
        run(cfg)
        out["total"] = time.perf_counter() - start
        start = time.perf_counter()
        run(cfg)
        out["warm"] = time.perf_counter() - start
    else:  # no cache: the initialisation is skipped instead (init_steps=0)
        start = time.perf_counter()
        run(cfg)
        out["total"] = time.perf_counter() - start
        start = time.perf_counter()
        run(cfg.replace(init_steps=0))
        out["warm"] = time.perf_counter() - start
    out["init"] = max(0.0, out["total"] - out["warm"])
    return out


def threads_used(n_rows: int) -> int:
    """The intra-op thread count ``toy.train`` runs ``n_rows`` rows with."""
    import torch

    try:
        from toy.threads import resolve_threads
    except ImportError:
        return torch.get_num_threads()
    return resolve_threads(rows=n_rows)


# ---------------------------------------------------------------------------- per-step split

SPLIT_PHASES = ("eval", "collect", "forward", "backward", "optim", "record", "metrics")
SPLIT_NAMES = {
    "eval": "eval-metric forward",
    "collect": "collect (per round)",
    "forward": "train forward + objective",
    "backward": "backward",
    "optim": "optimiser",
    "record": "record + checks",
    "metrics": "metrics table",
}


class _Timer:
    """A reusable context manager adding its block's wall seconds to ``seconds[name]``."""

    __slots__ = ("name", "seconds", "start")

    def __init__(self, seconds: dict[str, float], name: str):
        self.seconds, self.name, self.start = seconds, name, 0.0
        seconds.setdefault(name, 0.0)

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.seconds[self.name] += time.perf_counter() - self.start


class PhaseClock:
    """``toy.train.train``'s ``phases`` hook: wall seconds per named phase in ``seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.timers: dict[str, _Timer] = {}

    def __call__(self, name: str) -> _Timer:
        if name not in self.timers:
            self.timers[name] = _Timer(self.seconds, name)
        return self.timers[name]


def instrumented_split(n_seeds: int) -> dict[str, float] | str:
    """Seconds per phase of one run of the real loop, ``toy.train.train`` timed through its
    ``phases`` hook: the π_ref initialisation (fit not cached), the loop's phases, then the
    metrics table. The evaluation forwards run in the loop's thread
    (``MODESEEK_EVAL_THREAD=0``) so that they are timed. A string saying why when the hook is
    missing or the run fails."""
    try:
        from toy.threads import EVAL_THREAD_VAR
        from toy.train import train
    except ImportError as err:
        return f"split unavailable ({err})"
    cfg, clock = _config(n_seeds), PhaseClock()
    try:
        _clear_init_cache()
        with _env_var(EVAL_THREAD_VAR, "0"):
            rec, prob = train(cfg, phases=clock)
        with clock("metrics"):
            rec.frame(cfg.seeds, prob.reward_K, prob.ref_logp_K)
    except Exception as err:  # an older toy.train without the hook, or a failed run
        return f"split unavailable ({type(err).__name__}: {err})"
    t = dict.fromkeys(("init", *SPLIT_PHASES), 0.0) | clock.seconds
    t["steps"] = float(cfg.total_steps)
    return t


def worker_vs_serial(n_seeds: int, repeats: int) -> dict[str, list[float]]:
    """In-process ``run`` (fit cached) with the evaluation worker and without it
    (``MODESEEK_EVAL_THREAD`` 1 / 0), alternating, ``repeats`` each: seconds."""
    from toy.threads import EVAL_THREAD_VAR
    from toy.train import run

    cfg, out = _config(n_seeds), {"worker": [], "serial": []}
    for _ in range(repeats):
        for name, value in (("worker", "1"), ("serial", "0")):
            with _env_var(EVAL_THREAD_VAR, value):
                start = time.perf_counter()
                run(cfg)
                out[name].append(time.perf_counter() - start)
    return out


# ---------------------------------------------------------------------------- arithmetic floor

TARGETS = {1: 0.6, 5: 1.5}
"""The in-process speed targets (seconds) by seed count; the sweep's is 4× one 1-seed run."""
SWEEP_ROWS = 45


def _best(fn: Callable[[], object], n: int = 20) -> float:
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def arithmetic_floor(rows: int) -> dict[str, float]:
    """Per step, for ``rows`` batched runs on one thread (best of 20, ms): the evaluation
    forward alone (the real policy's forward and log-softmax on the shapes ``toy.train`` uses:
    blocks of steps × rows × 100 contexts), the training MLP's forward + hand-written backward
    alone (P 10 contexts per row) and the fused Adam step alone. No objective, autograd,
    recording, sampling or Python loop: a lower bound on any loop that computes every metric
    after every step exactly, in fp32. ``floor_s`` spreads that work perfectly over the
    machine's CPUs, except that one block's evaluation is one thread's work."""
    import torch

    from toy.optim import RowAdam
    from toy.policy import MLP_SIZES, MLPPolicy, flatten_parameters
    from toy.threads import small_problem_threads, usable_cpus

    cfg = _config(1)
    e, d = cfg.n_eval_contexts, MLP_SIZES[0]
    block = max(1, min(64, 2_000 // (rows * e)))  # as toy.evaluation.EvalBuffer
    with small_problem_threads(n_threads=1), torch.no_grad():
        gens = [torch.Generator().manual_seed(i) for i in range(block * rows)]
        evaluated, ctx = MLPPolicy(gens), torch.rand(block * rows, e, d)
        eval_ms = _best(lambda: torch.log_softmax(evaluated(ctx), -1)) / block * 1e3
        trained = MLPPolicy(gens[:rows])
        flat = flatten_parameters(trained)
        opt = RowAdam(flat, 1e-3)
        x = torch.rand(rows, cfg.prompts_per_round, d)
        grad = torch.randn(rows, cfg.prompts_per_round, MLP_SIZES[-1])

        def mlp_step():
            _, saved = trained.forward_saving(x)
            trained.backward_into(saved, grad)

        mlp_ms = _best(mlp_step) * 1e3
        adam_ms = _best(lambda: opt.step(flat.grad)) * 1e3
    cpus = usable_cpus()
    per_step = max(eval_ms, (eval_ms + mlp_ms + adam_ms) / cpus)
    return {"eval": eval_ms, "mlp": mlp_ms, "adam": adam_ms, "cpus": cpus,
            "floor_s": per_step * cfg.total_steps / 1e3}  # fmt: skip


# ---------------------------------------------------------------------------- whole process


def _env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if threads is not None:
        env["MODESEEK_THREADS"] = str(threads)
    return env


def time_command(cmd: list[str], threads: int | None, cwd: Path = REPO) -> float | str:
    """Wall seconds of ``cmd`` (a string with its error when it fails)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(threads), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"exit {proc.returncode}: {' / '.join(tail)}"
    return elapsed


def train_command() -> list[str]:
    return [sys.executable, "-m", "toy.train", "--preset", PRESET, "--seeds", "0",
            "--out-dir", "", "--no-progress"]  # fmt: skip


_IMPORT_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s+)(\S+)")


def import_costs(threads: int | None) -> dict[str, float] | str:
    """Cumulative seconds of ``import toy.train`` and of the first import of each package."""
    cmd = [sys.executable, "-X", "importtime", "-c", "import toy.train"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(threads), capture_output=True, text=True)
    if proc.returncode != 0:
        return f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    costs: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            name, cumulative = m.group(4), int(m.group(2)) / 1e6
            if name in IMPORT_ROOTS or name == "toy.train":
                costs[name] = max(costs.get(name, 0.0), cumulative)
    return costs


# ---------------------------------------------------------------------------- driver


def _stats(xs: list[float]) -> tuple[float, float]:
    return min(xs), statistics.median(xs)


def _fmt_s(x: float) -> str:
    return f"{x:.2f} s"


class Runner:
    """Runs each measurement once per condition per repeat, alternating idle and loaded."""

    def __init__(self, load: BusyLoad | None, repeats: int):
        self.load, self.repeats = load, repeats
        self.conditions = ["idle", "loaded"] if load is not None else ["idle"]

    @contextlib.contextmanager
    def condition(self, name: str) -> Iterator[None]:
        if name == "loaded":
            self.load.on()
        try:
            yield
        finally:
            if name == "loaded":
                self.load.off()

    def collect(self, fn: Callable[[], object], repeats: int | None = None) -> dict[str, list]:
        out: dict[str, list] = {c: [] for c in self.conditions}
        for _ in range(repeats or self.repeats):
            for c in self.conditions:
                with self.condition(c):
                    out[c].append(fn())
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement")
    parser.add_argument("--load", type=int, default=0, metavar="K",
                        help="also measure under K CPU-bound busy processes")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="force this intra-op thread count (MODESEEK_THREADS)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 5],
                        help="seed counts to time in-process (batched)")  # fmt: skip
    parser.add_argument("--no-process", action="store_true", help="skip whole-process timings")
    parser.add_argument("--no-split", action="store_true", help="skip the per-step split")
    parser.add_argument("--sweep", action="store_true", help="also time python -m toy.sweep")
    parser.add_argument("--no-worker-compare", action="store_true",
                        help="skip timing the loop without its evaluation worker")  # fmt: skip
    parser.add_argument("--sweep-args", default=SWEEP_ARGS, help="arguments of toy.sweep")
    args = parser.parse_args(argv)
    if args.threads is not None:
        os.environ["MODESEEK_THREADS"] = str(args.threads)

    load_before = os.getloadavg()[0]
    with BusyLoad(args.load) as busy:
        runner = Runner(busy if args.load else None, args.repeats)
        import torch

        import toy.train  # noqa: F401 - imports are not part of the in-process times

        _config(1)  # fail early on a bad preset
        print(
            f"torch {torch.__version__}, {os.cpu_count()} cores, threads used: "
            + ", ".join(f"{s} seed(s) → {threads_used(s)}" for s in args.seeds)
            + f"; load average {load_before:.2f} before start"
            + (f"; --load {args.load}" if args.load else ""),
            flush=True,
        )
        run(torch, runner, args)


def run(torch, runner: Runner, args) -> None:
    conds = runner.conditions
    # warm-up: first-call costs (allocator, lazy modules) are not the run's
    from toy.train import run as train_run

    train_run(_config(1))

    inproc = {}
    for s in args.seeds:
        inproc[s] = runner.collect(lambda s=s: time_in_process(s))
        for c in conds:
            tot, warm = [r["total"] for r in inproc[s][c]], [r["warm"] for r in inproc[s][c]]
            print(
                f"in-process {s} seed(s) [{c}]: total best {min(tot):.2f} s median "
                f"{statistics.median(tot):.2f} s; without π_ref init best {min(warm):.2f} s "
                f"median {statistics.median(warm):.2f} s",
                flush=True,
            )

    modes = {}
    if not args.no_worker_compare:
        for s in args.seeds:
            runs = runner.collect(lambda s=s: worker_vs_serial(s, 1))
            modes[s] = {c: {k: [x for r in rs for x in r[k]] for k in ("worker", "serial")}
                        for c, rs in runs.items()}  # fmt: skip
            for c, m in modes[s].items():
                w, r = (statistics.median(m[k]) for k in ("worker", "serial"))
                print(f"{s} seed(s) [{c}]: worker {w:.2f} s, serial {r:.2f} s", flush=True)

    floors = {rows: arithmetic_floor(rows) for rows in (*args.seeds, SWEEP_ROWS)}
    for rows, f in floors.items():
        print(f"arithmetic floor {rows} row(s): {f['floor_s']:.2f} s", flush=True)

    split = {}
    if not args.no_split:
        for s in args.seeds:
            split[s] = runner.collect(lambda s=s: instrumented_split(s), repeats=1)
            for c in conds:
                if isinstance(split[s][c][0], str):
                    print(f"per-step split {s} seed(s) [{c}]: {split[s][c][0]}", flush=True)

    process, imports = {}, {}
    if not args.no_process:
        process = runner.collect(lambda: time_command(train_command(), args.threads))
        for c in conds:
            bad = [x for x in process[c] if isinstance(x, str)]
            if bad:
                print(f"whole process [{c}] failed: {bad[0]}")
        imports = runner.collect(lambda: import_costs(args.threads))

    sweep = None
    if args.sweep:
        if not (REPO / "toy" / "sweep.py").exists():
            print("--sweep: toy/sweep.py does not exist yet; skipped")
        else:
            cmd = [sys.executable, "-m", "toy.sweep", *args.sweep_args.split()]
            with tempfile.TemporaryDirectory() as tmp:  # outputs written there, then removed
                sweep = runner.collect(lambda: time_command(cmd, args.threads, cwd=Path(tmp)))
            print(f"sweep: python -m toy.sweep {args.sweep_args}")

    report(torch, runner, args, inproc, split, process, imports, sweep, floors)
    report_modes(modes)


def _ok(xs: list) -> list[float]:
    return [x for x in xs if not isinstance(x, str)]


def report(torch, runner, args, inproc, split, process, imports, sweep, floors) -> None:
    conds = runner.conditions
    print()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores (os.cpu_count()), intra-op threads "
        + ", ".join(f"{threads_used(s)} for {s} seed(s)" for s in args.seeds)
        + f"; best / median of {runner.repeats}"
        + (f"; loaded = {args.load} busy-loop processes, runs alternating" if args.load else "")
        + f"; load average now {os.getloadavg()[0]:.2f}"
    )
    print()
    print("| condition | seeds | in-process total | π_ref init | loop + metrics | per step |")
    print("|---|---|---|---|---|---|")
    for s in args.seeds:
        for c in conds:
            rs = inproc[s][c]
            tot, warm = _stats([r["total"] for r in rs]), _stats([r["warm"] for r in rs])
            init = statistics.median([r["init"] for r in rs])
            steps = _config(s).total_steps
            print(
                f"| {c} | {s}{' (batched)' if s > 1 else ''} | {_fmt_s(tot[0])} / {_fmt_s(tot[1])}"
                f" | {init:.2f} s | {_fmt_s(warm[0])} / {_fmt_s(warm[1])}"
                f" | {warm[1] / steps * 1e3:.2f} ms |"
            )
    if split:
        print()
        print(
            "Per-step split (one instrumented run; ms per step; collect is per round, spread"
            " over its steps):"
        )
        print()
        header = " | ".join(SPLIT_NAMES[k] for k in SPLIT_PHASES)
        print(f"| condition | seeds | π_ref init | {header} | sum |")
        print("|---" * (len(SPLIT_PHASES) + 4) + "|")
        for s in args.seeds:
            for c in conds:
                t = split[s][c][0]
                if isinstance(t, str):
                    print(f"| {c} | {s} | {t} |" + " |" * (len(SPLIT_PHASES) + 1))
                    continue
                per = [t[k] / t["steps"] * 1e3 for k in SPLIT_PHASES]
                cells = " | ".join(f"{x:.3f}" for x in per)
                print(f"| {c} | {s} | {t['init']:.2f} s | {cells} | {sum(per):.3f} |")
    if process:
        print()
        print(f"Whole process, `{' '.join(['python', *train_command()[1:]])}`:")
        print()
        print("| condition | best | median |")
        print("|---|---|---|")
        for c in conds:
            ok = _ok(process[c])
            if ok:
                print(f"| {c} | {_fmt_s(min(ok))} | {_fmt_s(statistics.median(ok))} |")
            else:
                print(f"| {c} | failed | {process[c][0]} |")
        print()
        print('Import costs, `python -X importtime -c "import toy.train"` (cumulative, median):')
        for c in conds:
            runs = [r for r in imports[c] if isinstance(r, dict)]
            if not runs:
                print(f"- {c}: failed ({imports[c][0]})")
                continue
            names = sorted({k for r in runs for k in r}, key=lambda k: -runs[0].get(k, 0))
            med = {k: statistics.median([r.get(k, 0.0) for r in runs]) for k in names}
            total = med.pop("toy.train", float("nan"))
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in med.items() if v >= 0.005)
            absent = [k for k in IMPORT_ROOTS if k not in med]
            print(
                f"- {c}: toy.train {total:.2f} s; first imports: {parts}"
                + (f"; not imported: {', '.join(absent)}" if absent else "")
            )
    if sweep:
        print()
        print(f"Sweep, `python -m toy.sweep {args.sweep_args}`:")
        print()
        print("| condition | best | median |")
        print("|---|---|---|")
        for c in conds:
            ok = _ok(sweep[c])
            if ok:
                print(f"| {c} | {_fmt_s(min(ok))} | {_fmt_s(statistics.median(ok))} |")
            else:
                print(f"| {c} | failed | {sweep[c][0]} |")
    report_floor(args, inproc, sweep, floors)
    if args.load:
        print()
        print(f"Under load ({args.load} busy processes), ratio of medians loaded / idle:")
        print()
        print("| measurement | idle | loaded | ratio |")
        print("|---|---|---|---|")
        rows = [(f"in-process {s} seed(s)", [r["total"] for r in inproc[s]["idle"]],
                 [r["total"] for r in inproc[s]["loaded"]]) for s in args.seeds]  # fmt: skip
        if process:
            rows.append(("whole process, 1 seed", _ok(process["idle"]), _ok(process["loaded"])))
        if sweep:
            rows.append(("sweep", _ok(sweep["idle"]), _ok(sweep["loaded"])))
        for name, idle, loaded in rows:
            if idle and loaded:
                a, b = statistics.median(idle), statistics.median(loaded)
                print(f"| {name} | {_fmt_s(a)} | {_fmt_s(b)} | {b / a:.2f}× |")


def report_floor(args, inproc, sweep, floors) -> None:
    """The speed targets beside the arithmetic floor (``arithmetic_floor``) and the idle
    median."""
    print()
    print(
        "Arithmetic floor (idle, one thread per kernel, ms per step: evaluation forward | "
        "training MLP forward + backward | Adam; floor = that work spread perfectly over "
        f"{floors[SWEEP_ROWS]['cpus']} CPUs, {_config(1).total_steps} steps):"
    )
    print()
    print("| rows | eval | MLP step | Adam | floor | target | measured (idle median) |")
    print("|---|---|---|---|---|---|---|")
    one = statistics.median([r["total"] for r in inproc[1]["idle"]]) if 1 in inproc else None
    for rows, f in floors.items():
        if rows == SWEEP_ROWS:
            what = f"{rows} (sweep)"
            ok = _ok(sweep["idle"]) if sweep else []
            measured = _fmt_s(statistics.median(ok)) if ok else "not run"
            target = f"{_fmt_s(4 * one)} (4× 1 seed)" if one else "4× 1 seed"
        else:
            what = str(rows)
            measured = _fmt_s(statistics.median([r["total"] for r in inproc[rows]["idle"]]))
            target = _fmt_s(TARGETS[rows]) if rows in TARGETS else "-"
        print(f"| {what} | {f['eval']:.3f} | {f['mlp']:.3f} | {f['adam']:.3f} | "
              f"{_fmt_s(f['floor_s'])} | {target} | {measured} |")  # fmt: skip


def report_modes(modes) -> None:
    if not modes:
        return
    print()
    print("Evaluation worker on / off (in-process, π_ref fit cached, runs alternating; "
          "MODESEEK_EVAL_THREAD 1 / 0; best / median):")  # fmt: skip
    print()
    print("| condition | seeds | worker | serial | serial / worker (medians) |")
    print("|---|---|---|---|---|")
    for s, by_condition in modes.items():
        for c, m in by_condition.items():
            (wb, wm), (sb, sm) = _stats(m["worker"]), _stats(m["serial"])
            print(f"| {c} | {s} | {_fmt_s(wb)} / {_fmt_s(wm)} | {_fmt_s(sb)} / {_fmt_s(sm)} | "
                  f"{sm / wm:.2f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
