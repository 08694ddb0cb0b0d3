"""Generate the shipped prompt file data/shakespeare_prompts/train.jsonl for the rounds modes.

The prompts are those of the shipped preference pairs (``data/shakespeare_prefs/train.jsonl``,
itself built by ``llm.make_dataset``), de-duplicated in file order: one ``{"prompt": ...}`` row
each. Deterministic.

    python -m llm.make_prompts --pairs data/shakespeare_prefs/train.jsonl \
        --out data/shakespeare_prompts/train.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm import shipped


def prompts_of(pairs_path: str) -> list[str]:
    seen: dict[str, None] = {}
    for line in Path(pairs_path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            seen.setdefault(json.loads(line)["prompt"], None)
    return list(seen)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", default=shipped.PAIRS_TRAIN)  # the shipped files, from any cwd
    ap.add_argument("--out", default=shipped.PROMPTS)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = prompts_of(args.pairs)
    out.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows), encoding="utf-8")
    print(f"{len(rows)} prompts -> {out}")


if __name__ == "__main__":
    main()
