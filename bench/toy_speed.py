"""Wall time of a 1,500-step bandit run (10 prompts × N 10, 100 rounds × T 15, MLP policy, all
metrics), for 1 seed and for 5 seeds batched, split into the π_ref initialisation and the loop.

    python -m bench.toy_speed [--repeats 3]

Reports the best of ``repeats`` (the machine is noisy) with the thread count. Not a test.
"""

from __future__ import annotations

import argparse
import time

import torch

from toy.config import preset
from toy.policy import MLPPolicy
from toy.train import _INIT_CACHE, train


def time_run(n_seeds: int, init_steps: int | None = None) -> float:
    cfg = preset("onpolicy_bon", seeds=tuple(range(n_seeds)), out_dir="", progress=False)
    if init_steps is not None:
        cfg = cfg.replace(init_steps=init_steps)
    _INIT_CACHE.clear()  # time the π_ref initialisation every time
    start = time.perf_counter()
    train(cfg)
    return time.perf_counter() - start


def eval_forward_ms(n_seeds: int, repeats: int = 300) -> float:
    """The floor set by the metrics: one no-grad forward over the 100 evaluation contexts."""
    gens = [torch.Generator().manual_seed(s) for s in range(n_seeds)]
    policy, ctx = MLPPolicy(gens), torch.rand(n_seeds, 100, 100)
    with torch.no_grad():
        policy(ctx)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.log_softmax(policy(ctx), -1)
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'seeds':>5} {'total s':>8} {'init s':>7} {'loop s':>7} {'ms/step':>8} "
        f"{'eval fwd ms':>11}"
    )
    for n_seeds in (1, 5):
        total = min(time_run(n_seeds) for _ in range(args.repeats))
        loop = min(time_run(n_seeds, init_steps=0) for _ in range(args.repeats))
        floor = min(eval_forward_ms(n_seeds) for _ in range(args.repeats))
        print(
            f"{n_seeds:>5} {total:>8.2f} {total - loop:>7.2f} {loop:>7.2f} "
            f"{loop / 1500 * 1e3:>8.3f} {floor:>11.3f}"
        )


if __name__ == "__main__":
    main()
