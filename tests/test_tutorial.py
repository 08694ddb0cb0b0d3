"""The tutorial notebook (docs/tutorial.py, jupytext percent format): its text round-trips
through jupytext unchanged, and it executes end to end in a fresh kernel (quick settings, in an
empty working directory, offline) with the numbers its prose claims: on-policy DPO far above
offline best-of-N on the bandit, DPO's push-down ratio 3 and ASFT's 1/33 at (0.3, 0.1), the
bandit's steps to 50% mass on the optimal arm, on-policy DPO shortening a tiny GPT-2's
responses faster than offline DPO, and llm.diagnose's predictions matching the real step."""

import json
import math
import os
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="the docs extra (pip install -e '.[docs]')")
nbclient = pytest.importorskip("nbclient", reason="the dev extra (pip install -e '.[dev]')")
pytest.importorskip("ipykernel", reason="the dev extra (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.py"

# Appended to the notebook before it runs: the values the assertions need, as one JSON line.
PROBE = """\
import json, os, sys
import matplotlib.pyplot as plt
print("PROBE " + json.dumps({
    "executable": sys.executable,
    "cwd": os.getcwd(),
    "settings": [ROUNDS, list(SEEDS), LM_ROUNDS, N_PAIRS],
    "final": final["expected reward"].to_dict(),
    "modal_arms": final["most likely arm, per seed"].to_dict(),
    "pushdown": claims.reset_index().iloc[:, [0, 1, 2, 4]].values.tolist(),
    "steps_50": steps_to_mass["steps to 50%"].to_dict(),
    "lm": {m: r.metrics["eval/response/length_mean"].tolist() for m, r in lm_runs.items()},
    "diagnose_pairs": summary["pairs"],
    "reading": reading.astype(float).to_dict(orient="index"),
    "titles": sorted(a.get_title() for n in plt.get_fignums() for a in plt.figure(n).axes),
    "work_left": WORK.exists(),
}))
"""


def test_percent_format_round_trips():
    text = TUTORIAL.read_text(encoding="utf-8")
    nb = jupytext.reads(text, fmt="py:percent")
    assert jupytext.writes(nb, fmt="py:percent") == text
    # read by extension, as mkdocs-jupyter does, it is the same percent-format notebook
    by_extension = jupytext.read(TUTORIAL)
    assert by_extension.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    assert [c.source for c in by_extension.cells] == [c.source for c in nb.cells]
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and nb.cells[0].source.startswith("# From the bandit")
    assert kinds.count("markdown") >= 10 and kinds.count("code") >= 10
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "ROUNDS =" in params[0].source
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook executed once with nbclient in a kernel on this interpreter (a kernelspec
    written for ``sys.executable`` and found first through JUPYTER_PATH), its working
    directory an empty temporary one, the repository importable through PYTHONPATH."""
    import nbformat
    from ipykernel.kernelspec import write_kernel_spec

    tmp = tmp_path_factory.mktemp("tutorial")
    jupyter, cwd = tmp / "jupyter", tmp / "cwd"
    cwd.mkdir()
    write_kernel_spec(jupyter / "kernels" / "python3")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "JUPYTER_PATH": str(jupyter),
        "PYTHONPATH": path,
        "HF_HUB_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "MODESEEK_TUTORIAL_QUICK": "1",
    }
    nb = jupytext.read(TUTORIAL)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        client = nbclient.NotebookClient(
            nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(cwd)}}
        )
        client.execute()  # raises CellExecutionError naming the cell on any error
    return nb, cwd


def _stdout(nb) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def _probe(nb) -> dict:
    lines = [x for x in _stdout(nb).splitlines() if x.startswith("PROBE ")]
    assert len(lines) == 1
    return json.loads(lines[0].removeprefix("PROBE "))


def test_tutorial_runs_in_a_fresh_kernel(executed):
    nb, cwd = executed
    probe = _probe(nb)
    assert os.path.realpath(probe["executable"]) == os.path.realpath(sys.executable)
    assert os.path.realpath(probe["cwd"]) == os.path.realpath(cwd)
    assert probe["settings"] == [25, [0, 1], 3, 6]  # MODESEEK_TUTORIAL_QUICK=1
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    assert list(cwd.iterdir()) == []  # nothing written where it ran
    assert probe["work_left"] is False  # its temporary directory removed at the end
    titles = set(probe["titles"])
    assert {"on-policy DPO, seed 0", "final distribution (mean over seeds)"} <= titles
    assert {"expected reward", "tiny GPT-2, Min Length"} <= titles


def test_bandit_claims(executed):
    nb, _ = executed
    probe = _probe(nb)
    final = probe["final"]
    methods = {"on-policy DPO", "offline DPO", "on-policy best-of-N", "offline best-of-N"}
    assert set(final) == methods
    # A1: on-policy sampling beats offline data when the peak lies where π_ref has little mass
    assert final["on-policy DPO"] > 0.95 and final["on-policy best-of-N"] > 0.9
    # offline best-of-N climbs towards the expected reward of the best of 10 π_ref samples
    assert "expected R1 of the best of 10 samples from π_ref = 0.313" in _stdout(nb)
    assert 0.2 < final["offline best-of-N"] < 0.313 + 0.02
    assert final["on-policy DPO"] > final["offline best-of-N"] + 0.5
    # on-policy DPO ends on arm 70 for each seed: "70 (0.xx), 70 (0.xx)"
    arms = [int(s.split(" ")[0]) for s in probe["modal_arms"]["on-policy DPO"].split(", ")]
    assert arms == [70, 70]
    # steps to 50% mass on arm 70, seeds 0 and 1 (per seed: DPO 358 and 295, BoN 320 and 238)
    assert probe["steps_50"]["on-policy DPO"] == pytest.approx(326.5, abs=15)
    assert probe["steps_50"]["on-policy best-of-N"] == pytest.approx(279.0, abs=15)
    assert "after 375 gradient steps" in _stdout(nb)


def test_pushdown_claim(executed):
    nb, _ = executed
    rows = _probe(nb)["pushdown"]  # x_l, DPO β 0.1, DPO β 10, ASFT λ 0.1 at x_w = 0.3
    assert [r[0] for r in rows] == pytest.approx([0.1, 0.01, 1e-3, 1e-6])
    for x_l, dpo_small_beta, dpo_large_beta, asft in rows:
        assert dpo_small_beta == pytest.approx(0.3 / x_l, rel=1e-9)
        assert dpo_large_beta == pytest.approx(0.3 / x_l, rel=1e-9)
        assert asft == pytest.approx(0.1 * 0.3 / (1.1 * (1 - x_l)), rel=1e-9)
        assert asft < 0.1 / 1.1
    assert "at π(y_w) = 0.3, π(y_l) = 0.1: DPO 3.000, ASFT 0.0303" in _stdout(nb)


def test_language_model_and_diagnosis_claims(executed):
    nb, _ = executed
    probe = _probe(nb)
    on, off = probe["lm"]["on_policy"], probe["lm"]["offline"]
    assert len(on) == len(off) == 3
    assert on[0] == off[0] > 10  # round 0 samples the reference in both modes
    assert on[-1] < on[0] - 2  # on-policy DPO shortens the responses ...
    assert on[-1] < off[-1]  # ... faster than offline DPO
    assert probe["diagnose_pairs"] == 6
    reading = probe["reading"]
    assert set(reading) == {"dpo", "asft", "sft"}
    for name, row in reading.items():
        assert row["sign accuracy Δℓ_w"] == 1.0, name  # the prediction has the real step's sign
        assert row["measured Δℓ_w < 0"] == 0.0, name  # no displacement on the random-init model
    assert reading["dpo"]["measured Δℓ_l < 0"] == 1.0  # DPO pushes every rejected response down
    assert reading["asft"]["measured Δℓ_l < 0"] < 0.5  # ASFT lifts most of them
    # ASFT's push-down stays below λ/(1 + λ) (λ = 0.1); SFT has none
    assert reading["asft"]["median log10 push-down"] < math.log10(0.1 / 1.1)
    assert reading["sft"]["median log10 push-down"] == -math.inf
