"""The playground in a real browser: the app served from this process, headless Chromium driven
by Playwright. Change controls, run, and check that the page shows what ``toy.run`` gives for
the command line the page shows; that the plots change and scrub; that a bad value shows the
command line's one-line error; that Stop ends a run; and that the page loads nothing from
outside 127.0.0.1.

Needs Chromium (Debian's ``chromium``, or ``MODESEEK_CHROMIUM=/path/to/chrome``): without one
this test fails, saying so (``make browser`` installs it)."""

import shlex
import time

import pytest

import toy
import toy.train
from toy.playground import runs, screenshot, views

# gradio's in-memory event log (its monitoring page) calls a pandas option pandas deprecates
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")


@pytest.fixture(scope="module")
def page():
    if screenshot.find_chromium() is None:
        pytest.fail(screenshot.NO_BROWSER)
    with screenshot.serve() as url, screenshot.page_at(url) as page:
        outside = []
        local = ("http://127.0.0.1", "data:", "blob:", "about:")
        page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
        page.outside = outside
        yield page


def _cli_lines(page, *needles: str) -> list[str]:
    """The reproduce box's command lines, once every one of ``needles`` is in them (the box
    follows the controls a moment later)."""
    page.wait_for_function(
        "needles => { const t = document.querySelector('#cli .cm-content').innerText;"
        " return needles.every(n => t.includes(n)); }",
        arg=list(needles),
    )
    return page.locator("#cli .cm-content").inner_text().strip().splitlines()


def _argv(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[:3] == ["python", "-m", "toy.train"], line
    return words[3:]


def _tab(page, tag: str) -> None:
    page.get_by_role("tab", name=f"Config {tag}").click()


def test_a_run_shows_toy_runs_numbers_and_new_plots(page):
    before = screenshot.plot_image(page, "plot-dist")
    assert before and before.startswith("data:image/png")
    screenshot.choose(page, "objective-A", "IPO")
    page.wait_for_function(
        "v => document.querySelector('#hp-A textarea, #hp-A input').value === v",
        arg=runs.hp_field("ipo"),
    )  # the objective's hyperparameters, from the registry
    screenshot.set_value(page, "rounds-A", 3)
    screenshot.set_value(page, "seeds-A", "0 1")
    screenshot.set_value(page, "hp-A", "tau=0.05")
    argv = _argv(_cli_lines(page, "--rounds 3 ", "--seeds 0 1 ", "--hp tau=0.05")[0])
    assert screenshot.run_and_wait(page) == "run-ok"
    cfg = toy.train.parse(argv)
    assert (cfg.objective, cfg.rounds, cfg.seeds, cfg.hp) == ("ipo", 3, (0, 1), ("tau=0.05",))
    expected = toy.run(cfg)
    for key, _ in runs.NUMBERS:
        shown = page.locator(f"#{views.number_id('A', key)}").inner_text()
        assert shown == views.fmt(expected[key]), key
    assert page.locator("#num-A-steps").inner_text() == str(cfg.total_steps)
    assert page.locator("#num-B-steps").count() == 0  # no comparison asked for
    after = screenshot.plot_image(page, "plot-dist")
    assert after != before
    curves = screenshot.plot_image(page, "plot-curves")
    assert curves and screenshot.plot_image(page, "plot-logps")
    # scrub back to step 0: the distribution plot is redrawn, the curves are not
    slider = page.locator("#step input[type='range']")
    slider.focus()
    slider.press("Home")
    page.wait_for_function(
        "src => document.querySelector('#plot-dist img').getAttribute('src') !== src", arg=after
    )
    assert screenshot.plot_image(page, "plot-curves") == curves


def test_comparison_puts_b_beside_a(page):
    page.locator("#compare input").check()
    _tab(page, "B")
    screenshot.set_value(page, "rounds-B", 2)
    screenshot.set_value(page, "seeds-B", "0")
    lines = _cli_lines(page, "--objective bon", "--rounds 2 ", "--seeds 0 --out-dir")
    assert len(lines) == 2
    assert screenshot.run_and_wait(page) == "run-ok"
    cfg_b = toy.train.parse(_argv(lines[1]))
    assert (cfg_b.objective, cfg_b.mode, cfg_b.rounds) == ("bon", "offline", 2)
    expected = toy.run(cfg_b)
    shown = page.locator(f"#{views.number_id('B', 'reward/expected')}").inner_text()
    assert shown == views.fmt(expected["reward/expected"])
    assert "BoN (filtered BC)" in page.locator("#numbers").inner_text()
    page.locator("#compare input").uncheck()


def test_a_bad_value_shows_the_command_lines_error_line(page, capsys):
    _tab(page, "A")
    screenshot.set_value(page, "rounds-A", 0)
    _cli_lines(page, "error: BanditConfig.rounds")
    assert screenshot.run_and_wait(page) == "run-error"
    shown = page.locator("#error-line").inner_text()
    argv = runs.argv_from({**runs.START_A, "rounds": 0})
    capsys.readouterr()
    assert toy.train.main(argv) == 2
    assert capsys.readouterr().err.strip() == shown
    assert shown == "error: BanditConfig.rounds: must be at least 1, got 0"


def test_stop_ends_the_run(page):
    _tab(page, "A")
    screenshot.set_value(page, "rounds-A", 3000)
    _cli_lines(page, "--rounds 3000 ")
    before = screenshot.serial(page)
    page.locator("#run").click()
    deadline = time.monotonic() + 30
    while runs.running() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runs.running() == 1
    # the click event itself: under heavy load, waiting for the button to be "stable" (two
    # equal animation frames while the progress bar redraws) took Playwright up to 20 s
    page.locator("#stop").dispatch_event("click")
    page.wait_for_function(
        "s => { const n = document.querySelector('#run-stopped');"
        " return n && n.getAttribute('data-serial') !== s; }",
        arg=before,
    )
    deadline = time.monotonic() + 15
    while runs.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runs.running() == 0  # the training thread itself ended, not only the request


def test_the_page_needs_no_network(page):
    assert page.outside == []
