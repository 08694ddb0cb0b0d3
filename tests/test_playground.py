"""The playground's parts without a browser: controls → argv → config (the CLI's own parser,
its own error lines), the reproduce box, the hyperparameter fields per objective, the figures
and numbers of a real run, stopping a run, and the command without gradio."""

import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import objectives
import toy
import toy.train
from errors import UserError
from objectives.display import display_name
from toy.playground import runs, views

ROOT = Path(__file__).resolve().parents[1]
TINY = {**runs.START_A, "rounds": 2, "steps_per_round": 3, "seeds": "0 1"}


def _cli_config(argv):
    """The config of the reproduce box's shell line, as the command line parses it."""
    words = shlex.split(runs.cli_line(argv))
    assert words[:3] == ["python", "-m", "toy.train"]
    return toy.train.parse(words[3:])


VARIANTS = {
    "start A": runs.START_A,
    "start B": runs.START_B,
    "hybrid": {**runs.START_A, "mode": "hybrid", "offline_fraction": 0.3},
    "kto hp": {**runs.START_A, "objective": "kto", "hp": "beta=0.2 lam_d=1.0 z0=mismatched"},
    "rwr bool": {**runs.START_A, "objective": "rwr", "hp": "normalize=false"},
    "tabular, more options": {
        **runs.START_B,
        "policy": "tabular",
        "reward": "R1_w20",
        "minibatch_size": 5,
        "n_train_contexts": None,
        "prompts_per_round": 20,
        "kl_penalty": 0.1,
        "baseline": "running",
        "seeds": "3, 4",
    },
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_controls_give_the_config_of_the_reproduce_line(name):
    values = VARIANTS[name]
    argv, cfg = runs.config_from(values)
    assert cfg == _cli_config(argv) == toy.train.parse(argv)
    assert cfg.out_dir == ""  # nothing written
    for field in ("objective", "mode", "reward", "policy", "lr", "rounds", "steps_per_round"):
        assert getattr(cfg, field) == values[field], field
    assert cfg.prompts_per_round == values["prompts_per_round"]
    assert cfg.seeds == tuple(int(s) for s in values["seeds"].replace(",", " ").split())
    assert cfg.n_train_contexts == (values["n_train_contexts"] or values["prompts_per_round"])
    obj = objectives.get(cfg.objective)
    typed = obj.parse_hparams(values["hp"].split())  # the field, as the registry reads it
    assert {**obj.defaults, **cfg.hparams()} == {**obj.defaults, **typed}
    if values["mode"] == "hybrid":
        assert cfg.offline_fraction == values["offline_fraction"]


def test_only_changed_hyperparameters_reach_the_command_line():
    argv, cfg = runs.config_from(runs.START_A)  # the field holds DPO's defaults
    assert "--hp" not in argv and cfg.hp == ()
    argv, cfg = runs.config_from({**runs.START_A, "hp": "beta=0.25 length_norm=sum"})
    assert argv[argv.index("--hp") + 1 : argv.index("--mode")] == ["beta=0.25"]
    assert cfg.hparams() == {"beta": 0.25}


def test_python_snippet_builds_and_runs_the_same_config():
    cfg = runs.config_from(TINY)[1]
    assert eval(runs.config_expression(cfg), {"toy": toy}) == cfg
    snippet = runs.python_snippet([("A", cfg)])
    assert snippet.startswith("import toy\n") and "# A · DPO · on-policy · R1\n" in snippet
    space = {}
    exec(snippet.replace("print(", "(lambda *a: None)("), space)  # the snippet, run for real
    expected = toy.run(cfg)
    assert space["cfg"] == cfg
    for key in ("reward/expected", "policy/kl_ref", "logps/chosen"):
        assert space["result"][key] == pytest.approx(expected[key], rel=1e-6, nan_ok=True)
    cfg_b = runs.config_from(runs.START_B)[1]
    both = runs.python_snippet([("A", cfg), ("B", cfg_b)])
    assert "cfg_a = toy.BanditConfig(" in both and "result_b = toy.run(cfg_b)" in both
    assert both.count("import toy") == 1
    space = {"toy": toy}
    exec(both.split("result_a =")[0], space)  # the configs only (B is the start's, 15 rounds)
    assert space["cfg_a"] == cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": 0}, "error: BanditConfig.rounds: must be at least 1, got 0"),
        ({"lr": -0.1}, "error: BanditConfig.lr: must be positive and finite, got -0.1"),
        ({"rounds": 2.5}, None),  # tyro's message, one line
        ({"seeds": "0 0"}, "error: BanditConfig.seeds: needs at least one seed, without repeats"),
        ({"hp": "beta=-1"}, "error: BanditConfig.hp: objective 'dpo': beta must be positive"),
        ({"minibatch_size": 3}, "error: BanditConfig.minibatch_size: must divide"),
    ],
)
def test_a_bad_value_gives_the_command_lines_error_line(change, message, capsys):
    values = {**runs.START_A, **change}
    argv = runs.argv_from(values)
    with pytest.raises(UserError) as caught:
        runs.config_from(values)
    shown = runs.error_line(caught.value)
    capsys.readouterr()
    assert toy.train.main(argv) == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert printed == [shown]  # the CLI prints exactly the page's line
    assert "\n" not in shown and shown.startswith("error: ")
    if message:
        assert shown.startswith(message), shown


def test_another_objectives_hyperparameter_is_the_parsers_error():
    with pytest.raises(UserError, match="objective 'bon' has no hyperparameter"):
        runs.config_from({**runs.START_A, "objective": "bon"})  # the field still holds DPO's


def test_an_empty_number_is_one_line_too():
    with pytest.raises(UserError, match=r"^rounds: enter a value$"):
        runs.argv_from({**runs.START_A, "rounds": None})


@pytest.mark.parametrize("name", sorted(objectives.OBJECTIVES))
def test_hyperparameter_fields_match_the_registry(name):
    obj = objectives.get(name)
    settable = {k: v for k, v in obj.defaults.items() if obj.hp_rules[k].kind != "tensor-or-none"}
    items = runs.hp_field(name).split()
    assert [item.partition("=")[0] for item in items] == list(settable)
    assert obj.parse_hparams(items) == settable  # the field reads back as the defaults
    help_text = runs.hp_help(name)
    assert display_name(name) in help_text and obj.paper in help_text
    for key, rule in obj.hp_rules.items():
        assert (f"`{key}`: {rule.describe()}" in help_text) == (key in settable)
    argv, cfg = runs.config_from({**runs.START_A, "objective": name, "hp": " ".join(items)})
    assert "--hp" not in argv and cfg.hp == ()  # the defaults need no --hp


def test_presets_fill_the_controls():
    for name, preset in toy.config.PRESETS.items():
        values = runs.controls_of(preset, seeds="0")
        cfg = runs.config_from(values)[1]
        defaults = objectives.get(preset.objective).defaults
        assert {**defaults, **cfg.hparams()} == {**defaults, **preset.hparams()}, name
        assert cfg.replace(hp=()) == preset.replace(out_dir="", seeds=(0,), hp=()), name


def test_the_page_offers_every_objective_and_its_defaults():
    from toy.playground import app

    demo = app.build()
    dropdowns = [b for b in demo.blocks.values() if getattr(b, "elem_id", "") == "objective-A"]
    keys = [value for _, value in dropdowns[0].choices]
    assert keys == list(objectives.OBJECTIVES) and len(keys) == 26
    hp = next(b for b in demo.blocks.values() if getattr(b, "elem_id", "") == "hp-A")
    assert hp.value == runs.hp_field(str(runs.START_A["objective"]))


@pytest.fixture(scope="module")
def finished():
    argv, cfg_a = runs.config_from(TINY)
    argv_b, cfg_b = runs.config_from({**TINY, "objective": "bon", "hp": "", "mode": "offline"})
    return [runs.execute("A", argv, cfg_a), runs.execute("B", argv_b, cfg_b)]


def test_figures_draw_the_runs(finished):
    result = finished[0].result
    a = views.shown(finished[0])
    b = views.shown(finished[1], taken=a.colour)
    assert a.label == "A · DPO · on-policy · R1" and b.label.startswith("B · BoN (filtered BC)")
    assert a.colour != b.colour
    fig = views.dist_figure([a, b], step=result.config.total_steps)
    assert isinstance(fig, Figure)
    line = next(ln for ln in fig.axes[0].lines if ln.get_label() == a.label)
    assert np.allclose(line.get_ydata(), result.dist[-1].mean(0))  # the last snapshot
    early = views.dist_figure([a], step=0).axes[0].lines[0].get_ydata()
    assert np.allclose(early, result.dist[0].mean(0))
    assert isinstance(views.dist_figure([], 0, log_scale=True, reward_name="R2"), Figure)
    curves = views.curves_figure([a, b])
    reward = curves.axes[0].lines[0].get_ydata()
    m = result.metrics
    assert np.allclose(reward, m.groupby("step")["reward/expected"].mean().to_numpy())
    assert [ax.get_title(loc="left") for ax in curves.axes] == [
        views.TITLES[k] for k in views.CURVES[:2]
    ]
    logps = views.logps_figure([a, b])
    assert [ax.get_title(loc="left") for ax in logps.axes] == [
        views.TITLES[k] for k in views.CURVES[2:]
    ]
    assert views.curves_figure([]) is None and views.logps_figure([]) is None


def test_numbers_panel_shows_the_run_result(finished):
    result = finished[0].result
    html = views.numbers_html([views.shown(d) for d in finished])
    last = result.metrics[result.metrics.step == result.config.total_steps]
    for key, _ in runs.NUMBERS:
        mean = views.fmt(result[key])
        assert f"id='{views.number_id('A', key)}'>{mean}</span>" in html, key
        if mean != "—":
            assert f"± {views.fmt(last[key].std(ddof=0))}" in html
    assert f"id='num-A-steps'>{result.config.total_steps}</span>" in html


def test_runs_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, cfg = runs.config_from(TINY)
    done = runs.execute("A", argv, cfg)
    assert done.result.run_dir is None and list(tmp_path.iterdir()) == []


def test_stop_ends_a_run_inside_its_thread():
    argv, cfg = runs.config_from({**runs.START_A, "rounds": 2000, "seeds": "0"})
    outcome = []

    def work():
        try:
            runs.execute("A", argv, cfg, key="stop-test")
            outcome.append("finished")
        except runs.Stopped:
            outcome.append("stopped")

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 60
    while runs.running() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # inside the training loop
    assert runs.stop("stop-test")
    thread.join(timeout=20)
    assert not thread.is_alive() and outcome == ["stopped"] and runs.running() == 0
    # a stop that comes before the run starts stops it when it starts
    assert not runs.stop("early")
    with pytest.raises(runs.Stopped):
        runs.execute("A", argv, cfg, key="early")
    runs.begin("late")  # ... but not one from before the request began
    assert not runs.stop("late") and runs.begin("late") is None
    assert runs.execute("A", *runs.config_from(TINY), key="late").result.config.rounds == 2


def test_the_command_without_gradio_says_how_to_install_it():
    code = (
        "import sys; sys.modules['gradio'] = None\n"  # as if not installed: import fails
        "from toy.playground import main; sys.exit(main(['--no-browser']))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: the playground needs gradio: pip install 'modeseek[playground]'"
    ]


def test_the_command_serves_on_loopback_until_interrupted():
    import signal
    import urllib.request

    from toy.playground.screenshot import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "toy.playground", "--port", str(port), "--no-browser"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert first == f"Bandit playground on http://127.0.0.1:{port}/ (Ctrl-C stops it)\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and "bandit playground" in page.read().decode()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.stdout.close()
