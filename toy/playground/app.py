"""The playground's page: the controls of configs A and B, the run and stop buttons, the views,
and the reproduce box, wired to ``toy.playground.runs`` and ``toy.playground.views``.

Served on 127.0.0.1 only, without telemetry, version checks, share links, run history or web
fonts (the theme uses the system's fonts), so the page needs no network.
"""

from __future__ import annotations

import html
import itertools
import os
from dataclasses import dataclass

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry
import gradio as gr

import objectives
from errors import NonFiniteError, UserError
from objectives.display import display_name
from toy.config import PRESETS
from toy.playground import runs, views

HOST = "127.0.0.1"
THEME = gr.themes.Soft(
    primary_hue="blue",
    neutral_hue="slate",
    font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)
CSS = """
#title h1 { margin-bottom: 0.1em; }
#status { min-height: 2.6em; }
#status .ok { color: #1b5e20; }
#status .stopped { color: #8a5300; }
#status .error { color: #b71c1c; font-weight: 600; }
#status code { white-space: pre-wrap; }
table.numbers { border-collapse: collapse; width: 100%; font-size: 0.92em; }
table.numbers th, table.numbers td { padding: 3px 10px; border-bottom: 1px solid #e3e6ea;
  text-align: left; }
table.numbers td { font-variant-numeric: tabular-nums; }
table.numbers .sd { color: #6b7280; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em;
  border-radius: 2px; vertical-align: -0.05em; }
.hint { color: #6b7280; }
"""
INTRO = """# Bandit playground
Train the 100-arm categorical bandit of paper A (docs/science.md §2) with any of the 24
objectives, watch where the policy's mass goes, and compare two configurations. Every run is
`toy.run` on the config that `python -m toy.train` builds from the command line shown under
**Reproduce**; nothing is written to disk."""
LABELS = {
    "mode": "mode (where round r > 0 samples from)",
    "offline_fraction": "offline fraction (hybrid: share of samples from π_ref)",
    "reward": "reward",
    "policy": "policy",
    "lr": "learning rate",
    "rounds": "R: rounds",
    "prompts_per_round": "P: prompts / round",
    "samples_per_prompt": "N: samples / prompt",
    "steps_per_round": "T: steps / round",
    "n_train_contexts": "prompt pool (empty: P)",
    "minibatch_size": "M: minibatch (empty: full batch)",
    "pair_threshold": "pair threshold",
    "kl_penalty": "kl_penalty β (exact KL in the loss)",
    "kl_reward": "kl_reward β (reward shaping)",
    "baseline": "baseline (REINFORCE, PPO)",
    "init_steps": "π_ref fitting steps",
    "dist_every": "store π every … steps",
}
CHOICES = {
    "mode": runs.MODES,
    "reward": runs.REWARD_NAMES,
    "policy": runs.POLICIES,
    "baseline": runs.BASELINES,
}
MAIN_ROWS = (("lr", "rounds"), ("prompts_per_round", "samples_per_prompt", "steps_per_round"))
MORE_ROWS = (
    ("n_train_contexts", "minibatch_size"),
    ("pair_threshold", "kl_penalty", "kl_reward"),
    ("init_steps", "dist_every"),
)


@dataclass
class Panel:
    """One configuration's controls (A or B)."""

    tag: str
    preset: gr.Dropdown
    controls: dict[str, gr.components.Component]
    hp_help: gr.Markdown

    def values(self, data: dict) -> dict[str, object]:
        return {name: data[c] for name, c in self.controls.items()}


def _number(tag: str, name: str, value: object, visible: bool = True) -> gr.Number:
    return gr.Number(value=value, label=LABELS[name], elem_id=f"{name}-{tag}", min_width=90,
                     visible=visible)  # fmt: skip


def _radio(tag: str, name: str, value: object) -> gr.Radio:
    return gr.Radio(list(CHOICES[name]), value=value, label=LABELS[name], elem_id=f"{name}-{tag}")


def panel(tag: str, start: dict[str, object]) -> Panel:
    """The controls of one configuration, showing ``start``."""
    c: dict[str, gr.components.Component] = {}
    preset = gr.Dropdown(
        [("(the playground's start)", ""), *((n, n) for n in runs.PRESET_NAMES)],
        value="", label="start from a preset (toy.preset)", elem_id=f"preset-{tag}",
    )  # fmt: skip
    c["objective"] = gr.Dropdown(
        [(f"{display_name(k)}  ·  {k}", k) for k in objectives.OBJECTIVES],
        value=start["objective"], label=f"objective ({len(objectives.OBJECTIVES)} in the registry)",
        elem_id=f"objective-{tag}",
    )  # fmt: skip
    c["hp"] = gr.Textbox(
        value=start["hp"], label="hyperparameters (key=value …, the registry's defaults)",
        elem_id=f"hp-{tag}", lines=1,
    )  # fmt: skip
    hp_help = gr.Markdown(runs.hp_help(str(start["objective"])), elem_id=f"hp-help-{tag}")
    c["mode"] = _radio(tag, "mode", start["mode"])
    c["reward"] = _radio(tag, "reward", start["reward"])
    with gr.Row():
        c["policy"] = _radio(tag, "policy", start["policy"])
        hybrid = start["mode"] == "hybrid"
        c["offline_fraction"] = _number(tag, "offline_fraction", start["offline_fraction"], hybrid)
    for row in MAIN_ROWS:
        with gr.Row():
            for name in row:
                c[name] = _number(tag, name, start[name])
    c["seeds"] = gr.Textbox(value=start["seeds"], label="seeds (run together as one batch)",
                            elem_id=f"seeds-{tag}")  # fmt: skip
    with gr.Accordion("More options", open=False):
        for row in MORE_ROWS:
            with gr.Row():
                for name in row:
                    c[name] = _number(tag, name, start[name])
        c["baseline"] = _radio(tag, "baseline", start["baseline"])
    return Panel(tag, preset, c, hp_help)


def _wire_panel(p: Panel) -> None:
    obj = p.controls["objective"]
    obj.input(lambda o: runs.hp_field(o), obj, p.controls["hp"], show_progress="hidden")
    obj.change(runs.hp_help, obj, p.hp_help, show_progress="hidden")
    names = list(p.controls)

    def load_preset(name: str, seeds: str):
        if not name:
            return [gr.skip()] * len(names)
        values = runs.controls_of(PRESETS[name], seeds=seeds)
        return [values[n] for n in names]

    p.preset.input(load_preset, [p.preset, p.controls["seeds"]], [p.controls[n] for n in names],
                   show_progress="hidden")  # fmt: skip


_SERIAL = itertools.count(1)


def _status(kind: str, text: str, line: str | None = None) -> str:
    """The status line: ``run-ok``, ``run-error`` (with the CLI's ``error-line``) or
    ``run-stopped``; ``data-serial`` changes with every outcome (the browser test waits on it)."""
    body = html.escape(text)
    if line is not None:
        body += f" <code id='error-line'>{html.escape(line)}</code>"
    return f"<div id='run-{kind}' class='{kind}' data-serial='{next(_SERIAL)}'>{body}</div>"


def reproduce(a: Panel, b: Panel, compare: gr.Checkbox):
    """The fn filling the reproduce box from the controls."""

    def fill(data: dict):
        clis, configs = [], []
        for p in (a, b) if data[compare] else (a,):
            try:
                argv, cfg = runs.config_from(p.values(data))
            except UserError as e:
                clis.append(f"# {p.tag}: {runs.error_line(e)}")
                continue
            clis.append(runs.cli_line(argv))
            configs.append((p.tag, cfg))
        return "\n".join(clis), runs.python_snippet(configs) if configs else ""

    return fill


def build() -> gr.Blocks:
    """The page (not yet launched)."""
    with gr.Blocks(title="modeseek · bandit playground", analytics_enabled=False) as demo:
        gr.Markdown(INTRO, elem_id="title")
        shown = gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=360):
                compare = gr.Checkbox(False, label="compare A with B (same plots)",
                                      elem_id="compare")  # fmt: skip
                with gr.Tabs():
                    with gr.Tab("Config A", elem_id="tab-A"):
                        a = panel("A", runs.START_A)
                    with gr.Tab("Config B", elem_id="tab-B"):
                        b = panel("B", runs.START_B)
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column(scale=7):
                status = gr.HTML(_status("hint", "Ready."), elem_id="status")
                numbers = gr.HTML(views.numbers_html([]), elem_id="numbers")
                dist = gr.Plot(views.dist_figure([], 0, reward_name=str(runs.START_A["reward"])),
                               show_label=False, elem_id="plot-dist", format="png")  # fmt: skip
                with gr.Row():
                    step = gr.Slider(0, 1, value=0, step=1, scale=5, elem_id="step",
                                     label="step (nearest stored snapshot below)")  # fmt: skip
                    log_y = gr.Checkbox(False, label="log scale", scale=1, elem_id="log-y")
                curves = gr.Plot(show_label=False, elem_id="plot-curves", format="png")
                logps = gr.Plot(show_label=False, elem_id="plot-logps", format="png")
        fill = reproduce(a, b, compare)
        with gr.Accordion("Reproduce: the same run from a shell or from Python", open=True):
            first_cli, first_py = fill({c: runs.START_A[n] for n, c in a.controls.items()}
                                       | {compare: False})  # fmt: skip
            cli = gr.Code(first_cli, language="shell", label="command line", elem_id="cli",
                          wrap_lines=True, lines=1, max_lines=6)  # fmt: skip
            py = gr.Code(first_py, language="python", label="Python", elem_id="python",
                         lines=4, max_lines=40)  # fmt: skip
        for p in (a, b):
            _wire_panel(p)
            p.controls["mode"].change(
                lambda m: gr.update(visible=m == "hybrid"), p.controls["mode"],
                p.controls["offline_fraction"], show_progress="hidden",
            )  # fmt: skip
        inputs = {*a.controls.values(), *b.controls.values(), compare}
        triggers = [c.change for c in inputs]
        gr.on(triggers, fill, inputs, [cli, py], show_progress="hidden",
              trigger_mode="always_last")  # fmt: skip

        def on_run(data: dict, request: gr.Request, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
            key = getattr(request, "session_hash", None) or ""
            runs.begin(key)
            skip = [gr.skip()] * 6
            todo = []
            for p in (a, b) if data[compare] else (a,):
                try:
                    todo.append((p.tag, *runs.config_from(p.values(data))))
                except UserError as e:
                    return [_status("error", f"{p.tag}:", runs.error_line(e)), *skip]
            done = []
            try:
                for tag, argv, cfg in todo:
                    progress(0, desc=f"{tag}: {cfg.run_name()}")
                    done.append(runs.execute(tag, argv, cfg, key))
            except (UserError, NonFiniteError) as e:
                return [_status("error", f"{tag}:", runs.error_line(e)), *skip]
            except runs.Stopped:
                return [_status("stopped", "Stopped."), *skip]
            out: list[views.Shown] = []
            for d in done:
                out.append(views.shown(d, taken=out[0].colour if out else None))
            last = max(r.total_steps for r in out)
            took = ", ".join(f"{r.tag} in {r.seconds:.1f} s" for r in out)
            return [
                _status("ok", f"Done: {took}."),
                views.numbers_html(out),
                views.dist_figure(out, last, data[log_y]),
                views.curves_figure(out),
                views.logps_figure(out),
                out,
                gr.update(maximum=last, value=last),
            ]

        event = run_btn.click(
            on_run, {*inputs, log_y}, [status, numbers, dist, curves, logps, shown, step],
            show_progress_on=[status], concurrency_limit=1,
        )  # fmt: skip

        def on_stop(request: gr.Request):
            runs.stop(getattr(request, "session_hash", None) or "")
            return _status("stopped", "Stopped.")

        stop_btn.click(on_stop, None, status, cancels=[event], show_progress="hidden")

        def redraw(out, at, log_scale, reward):
            return views.dist_figure(out, int(at), bool(log_scale), reward_name=str(reward))

        gr.on([step.input, log_y.input], redraw, [shown, step, log_y, a.controls["reward"]], dist,
              show_progress="hidden", trigger_mode="always_last")  # fmt: skip
    return demo


def launch(port: int | None = None, open_browser: bool = True, block: bool = True) -> gr.Blocks:
    """Serve the page on 127.0.0.1 (``port`` None: Gradio picks a free one from 7860); with
    ``block`` False, return once it is up (the server runs in a thread)."""
    demo = build()
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=HOST,
        server_port=port,
        inbrowser=open_browser,
        share=False,
        prevent_thread_lock=True,
        quiet=True,
        theme=THEME,
        css=CSS,
        footer_links=[],
        run_history=False,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
        show_error=False,
    )
    if block:
        print(f"Bandit playground on {demo.local_url} (Ctrl-C stops it)", flush=True)
        demo.block_thread()
    return demo
