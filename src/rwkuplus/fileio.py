"""Atomic writes and small JSON / JSONL helpers: a file is either complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def ensure_dir(path: str | os.PathLike, option: str = "--out", create: bool = True) -> Path:
    """Create the output folder ``path`` (and its parents; with ``create=False`` only check that it
    could be); a path that is a file, or lies under one, is a UserError naming ``option``."""
    from .errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: expected a folder, but it is an existing file; choose another {option}.")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{option} {path}: cannot create the folder, {parent} is a file.")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{option} {path}: cannot create the folder, a part of its path is a file.") from None
    except PermissionError:
        raise UserError(f"{option} {path}: cannot create the folder (permission denied).") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file is a UserError naming the file."""
    from .errors import UserError

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found.") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    from .errors import UserError

    path = Path(path)
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}: line {i} is not valid JSON ({e.msg}).") from None
    except FileNotFoundError:
        raise UserError(f"{path}: file not found.") from None
    return rows
