"""Every figure script runs end to end in quick mode (so the scripts cannot rot)."""

import pytest

from analysis import make_figures


@pytest.mark.parametrize("name", make_figures.figure_modules())
def test_figure_script_quick(name, tmp_path, monkeypatch):
    import importlib

    from analysis import cache, common

    monkeypatch.setattr(common, "FIGURES", tmp_path)
    monkeypatch.setattr(cache, "RUNS", tmp_path / "runs")
    importlib.import_module(f"analysis.{name}").main(quick=True)
    assert list(tmp_path.glob("*.png")) and list(tmp_path.glob("*.pdf"))


def test_every_objective_has_a_paper_name():
    """Figures print the papers' names, never a registry key (``analysis.common.label``)."""
    from analysis.common import DISPLAY_NAMES, label
    from objectives.registry import OBJECTIVES

    assert set(OBJECTIVES) <= set(DISPLAY_NAMES)
    assert label("sft") == "SFT (Pref-FT)"
    assert label("dpo", "on_policy") == "on-policy DPO"
    assert label("not_an_objective") == "not_an_objective"
