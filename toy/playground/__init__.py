"""The bandit playground: a local web page to train the toy bandit with any objective and watch
it (docs/playground.md).

    python -m toy.playground [--port N] [--no-browser]
    modeseek-playground

It serves on 127.0.0.1 only and needs no network. Every run is ``toy.run`` on the config
``toy.train.parse`` builds from the command line the page shows, with nothing written to disk.
Needs gradio (``pip install 'modeseek[playground]'``); importing this package does not import it.
"""

from __future__ import annotations

import argparse
import sys

INSTALL_HINT = "error: the playground needs gradio: pip install 'modeseek[playground]'"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m toy.playground",
        description="Serve the bandit playground on http://127.0.0.1:PORT (no network needed).",
    )
    p.add_argument("--port", type=int, default=None,
                   help="port to serve on (default: the first free one from 7860)")  # fmt: skip
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    return p


def main(argv: list[str] | None = None) -> int:
    """The console entry (``modeseek-playground``): serve the page until interrupted. Exit code
    2, with one line saying how to install it, when gradio is missing."""
    args = parser().parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    from toy.playground.app import launch

    try:
        launch(port=args.port, open_browser=not args.no_browser, block=True)
    except KeyboardInterrupt:
        pass
    except OSError as e:  # the port is taken, or cannot be bound
        print(f"error: cannot serve on 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        return 2
    return 0
