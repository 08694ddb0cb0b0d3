"""The house plan, held against the code: the layering of the packages, no import cycles between
library files, rooms of at most 400 lines, one vocabulary for the knobs both worlds share, and
the small public API README uses."""

import ast
import dataclasses
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("errors", "objectives", "rounds", "runio")
WORLDS = ("toy", "llm")
LIBRARY = CORE + WORLDS
OUTSIDE = ("analysis", "bench", "experiments", "tests")
FORBIDDEN = {
    **{core: set(WORLDS) | set(OUTSIDE) for core in CORE},
    "toy": {"llm", *OUTSIDE},
    "llm": {"toy", *OUTSIDE},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LIBRARY:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (function-level imports included),
    with relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Library module → the library modules it imports (a package's own parents excluded: a
    module importing its package's face is no cycle)."""
    edges = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(name, path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        edges[name] = targets
    return edges


def test_layering_rules_hold():
    broken = [
        f"{path.relative_to(ROOT)} imports {imported}"
        for name, path in _modules().items()
        for imported in _imports(name, path)
        if imported.split(".")[0] in FORBIDDEN[name.split(".")[0]]
    ]
    assert not broken, broken


def test_no_import_cycles_between_library_files():
    modules = _modules()
    edges = _edges(modules)
    # a cycle of package faces (__init__ re-exporting) only is not one between files
    faces = {n for n, p in modules.items() if p.name == "__init__.py"}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                if not set(cycle) <= faces:
                    cycles.append(" -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(modules):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_layering_check_can_fail(tmp_path):
    """The walk resolves relative and function-level imports (so the rules above can fail)."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from ..llm import train\n    import toy.bandit\n")
    assert {"toy.bandit", "llm", "llm.train"} <= _imports("rounds.m", f)


def test_no_library_file_over_400_lines():
    big = {str(p.relative_to(ROOT)): n for p in _modules().values()
           if (n := len(p.read_text().splitlines())) > 400}  # fmt: skip
    assert not big, big


# ---- one vocabulary ------------------------------------------------------------------------


def _help(cls, name: str) -> str:
    """The help text tyro shows for a field (its docstring, inherited ones included)."""
    from tyro import _docstrings

    return _docstrings.get_field_docstring(cls, name, ()) or ""


def test_shared_knobs_have_one_name_type_default_and_help():
    from llm.config import TrainConfig
    from rounds.options import SCALE_DEFAULTS as ROUND_SCALE
    from rounds.options import RoundOptions
    from runio.options import SCALE_DEFAULTS as RUN_SCALE
    from runio.options import RunOptions
    from toy.config import BanditConfig

    toy = {f.name: f for f in dataclasses.fields(BanditConfig)}
    llm = {f.name: f for f in dataclasses.fields(TrainConfig)}
    shared = [f.name for f in (*dataclasses.fields(RoundOptions), *dataclasses.fields(RunOptions))]
    assert {"kl_penalty", "kl_reward", "baseline", "pair_threshold", "out_dir"} <= set(shared)
    for name in shared:
        assert name in toy and name in llm, name
        if name != "mode":
            assert _help(BanditConfig, name) == _help(TrainConfig, name) != "", name
        if name == "mode":  # the LLM adds offline preference pairs (and says so in its help)
            modes = [get_args(get_type_hints(c)[name]) for c in (BanditConfig, TrainConfig)]
            assert set(modes[0]) < set(modes[1]), name
            continue
        assert toy[name].type == llm[name].type, name
        if name not in ROUND_SCALE + RUN_SCALE:
            assert toy[name].default == llm[name].default, name
    # seed(s): one seed per language-model run; the bandit batches independent seeds
    assert llm["seed"].type == "int" and toy["seeds"].type == "tuple[int, ...]"


def test_model_options_are_shared_by_training_and_diagnosis():
    from llm.config import TrainConfig
    from llm.diagnose import DiagnoseConfig
    from llm.options import DataOptions, LoraOptions, ModelOptions

    for options in (ModelOptions, DataOptions, LoraOptions):
        assert issubclass(TrainConfig, options) and issubclass(DiagnoseConfig, options)
        for f in dataclasses.fields(options):
            assert _help(TrainConfig, f.name) == _help(DiagnoseConfig, f.name) != "", f.name


# ---- the public API ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("objectives", ["OBJECTIVES", "get", "Objective"]),
        ("toy", ["BanditConfig", "preset", "run", "sweep"]),
        ("llm", ["TrainConfig", "run"]),
        ("rounds", ["Round", "round_loss", "make_round"]),
    ],
)
def test_public_api(module, names):
    import importlib

    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, missing


def test_both_runs_return_the_same_result_type(tmp_path):
    import llm
    import toy
    from runio import RunResult

    bandit = toy.run(toy.preset("onpolicy_dpo", rounds=1, steps_per_round=2, out_dir=""))
    assert isinstance(bandit, RunResult) and bandit.run_dir is None
    assert bandit["reward/expected"] == bandit.metrics["reward/expected"].iloc[-1]
    lm = llm.run(llm.TrainConfig(dry_run=True, out_dir=str(tmp_path)))  # data checked, no model
    assert isinstance(lm, RunResult) and lm.config.dry_run and "data" in lm


def test_file_map_matches_the_tree():
    """Every path in the file map of docs/contributing.md exists, and every library, experiment
    and benchmark module is named by a row (itself or its folder)."""
    import re

    text = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    table = text[text.index("## File map") : text.index("## Dimension key")]
    named = {m for row in table.splitlines() if row.startswith("| `")
             for m in re.findall(r"`([\w./-]+)`", row.split("|")[1])}  # fmt: skip
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing
    modules = [p for pkg in (*LIBRARY, "experiments", "bench") for p in (ROOT / pkg).rglob("*.py")
               if p.name != "__init__.py" or p.parent.name in ("toy", "llm", "errors")]  # fmt: skip
    unnamed = []
    for path in modules:
        rel = path.relative_to(ROOT)
        folders = {str(rel.parents[i]) + "/" for i in range(len(rel.parents) - 1)}
        if str(rel) not in named and not folders & named:
            unnamed.append(str(rel))
    assert not unnamed, unnamed
