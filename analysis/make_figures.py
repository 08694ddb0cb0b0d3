"""Regenerate every figure: runs the ``main`` of each ``analysis/figNN_*.py`` in order.

``python -m analysis.make_figures [--quick] [--only fig01 ...]``; ``--quick`` runs each script
with tiny settings and writes to ``figures/quick/`` (the test suite runs every script this way so
the scripts cannot rot). Bandit runs are cached under ``runs/cache`` (see ``analysis.cache``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time

import analysis
from analysis import common


def figure_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(analysis.__path__) if m.name.startswith("fig")]
    return sorted(names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings, for smoke tests")
    parser.add_argument("--only", nargs="*", default=None, help="figure prefixes, e.g. fig01")
    args = parser.parse_args(argv)
    if args.quick:  # never overwrite the committed figures with tiny-setting ones
        common.FIGURES = common.FIGURES / "quick"
    total = time.perf_counter()
    for name in figure_modules():
        if args.only and not any(name.startswith(p) for p in args.only):
            continue
        start = time.perf_counter()
        importlib.import_module(f"analysis.{name}").main(quick=args.quick)
        print(f"{name}: {time.perf_counter() - start:.1f}s", flush=True)
    print(f"all figures: {time.perf_counter() - total:.1f}s")


if __name__ == "__main__":
    main()
