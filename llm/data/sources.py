"""Reading a data source into rows: a ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, a
saved ``datasets`` directory, a local dataset directory ``datasets.load_dataset`` reads, or a hub
dataset name (see the package docstring, ``llm.data``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from runio import UserError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def is_hub_name(path: str) -> bool:
    """Whether ``path`` (not an existing file) reads as a hub dataset name, ``name`` or
    ``owner/name``, rather than a missing file."""
    return bool(_HUB_NAME.match(path)) and not path.lower().endswith(FILE_SUFFIXES)


def read_rows(path: str, split: str = "train") -> list[dict]:
    """Rows of a JSONL / JSON / CSV / parquet file, a ``datasets`` directory (``split`` of a
    DatasetDict) or a hub dataset name (``split`` of it). Unreadable files are a ``UserError``
    naming the file and line."""
    p = Path(path).expanduser()
    if not p.exists():
        if is_hub_name(path):
            return _read_hub(path, split)
        raise UserError(f"data file {path!r} does not exist")
    if p.is_dir():
        return _read_dataset_dir(p, path, split)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(_text(p, path).split("\n")):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: line {i + 1}: invalid JSON ({e.msg})") from None
        return rows
    if suffix == ".json":
        try:
            obj = json.loads(_text(p, path))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
        return _json_rows(obj, path)
    if suffix == ".csv":
        import pandas as pd

        _text(p, path)  # names the line of any non-UTF-8 byte
        try:
            frame = pd.read_csv(p, keep_default_na=False, dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise UserError(f"{path}: not a readable CSV file ({_first_line(e)})") from None
        return frame.to_dict("records")
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(p).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: not a readable parquet file ({_first_line(e)})") from None
    raise UserError(
        f"{path}: unsupported format {suffix!r} (jsonl, json, csv, parquet, a dataset directory "
        "or a hub dataset name)"
    )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _text(p: Path, path: str) -> str:
    """The file as UTF-8 text; a non-UTF-8 byte is an error naming its line and column."""
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserError(
            f"{path}: line {line}, column {col}: byte 0x{raw[e.start]:02x} is not valid UTF-8 "
            "(data files must be UTF-8 text)"
        ) from None


def _json_rows(obj: object, path: str) -> list[dict]:
    """A .json file's rows: a list of row objects, or one object of equal-length column lists."""
    if isinstance(obj, list):
        return obj
    if not isinstance(obj, dict):
        raise UserError(
            f"{path}: top level is a {type(obj).__name__}; expected a list of row objects or "
            "an object of equal-length column lists"
        )
    accepted = "expected a list of row objects, or an object mapping each column to a list"
    if not obj:
        raise UserError(f"{path}: an empty object; {accepted}")
    not_lists = [k for k, v in obj.items() if not isinstance(v, list)]
    if not_lists:
        raise UserError(f"{path}: a single object (its {not_lists[0]!r} is not a list); {accepted}")
    lengths = {k: len(v) for k, v in obj.items()}
    if len(set(lengths.values())) > 1:
        raise UserError(
            f"{path}: columns have unequal lengths {lengths}; every column list needs one "
            "value per row"
        )
    keys = list(obj)
    return [dict(zip(keys, vals)) for vals in zip(*(obj[k] for k in keys))]


def _read_dataset_dir(p: Path, path: str, split: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError:  # not saved by save_to_disk: a directory of data files?
        return _load_dataset(str(p), split, f"{path}: a directory but neither a saved `datasets` "
                             "Dataset/DatasetDict nor a dataset directory `datasets.load_dataset` "
                             "reads")  # fmt: skip
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise UserError(f"{path}: no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    return ds.to_list()


def _read_hub(name: str, split: str) -> list[dict]:
    return _load_dataset(name, split, f"data {name!r}: not a local file or directory, and "
                         "`datasets.load_dataset` could not load it as a hub dataset (offline, "
                         "only datasets in the local cache load)")  # fmt: skip


def _load_dataset(name: str, split: str, context: str) -> list[dict]:
    """``datasets.load_dataset(name, split=split)`` as rows; any failure one ``UserError`` line."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # not found, offline and not cached, unknown split, bad files
        raise UserError(f"{context} ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(ds, datasets.Dataset):
        raise UserError(f"{context} (got a {type(ds).__name__}, not a Dataset split)")
    return ds.to_list()
