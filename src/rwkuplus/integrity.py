"""Cached folders checked when read: a manifest of sizes and checksums written at save time.

``write_manifest(folder)`` records every file's size and SHA-256 in ``rwkuplus-manifest.json``
(hashing reads each file back once, right after it was written). ``check_folder(folder)`` is what
a read does, and it is cheap: it compares the sizes with the manifest (one ``stat`` per file) and
checks each ``*.safetensors`` file's header against its length (8 + header + the tensors' data must
be the file's size; a few kilobytes read). That catches what actually damages caches (a copy cut
short, a full disk, a truncated file) and also checks folders written before manifests existed,
without adding the ~0.5 s a full hash of a 540 MB model would add to every load (the converted
default model loads in 0.2 s). ``check_folder(folder, full=True)`` also compares the checksums.

A problem comes back as one clause naming the file (``"model.safetensors is truncated (...)"``);
the caller decides whether to rebuild (a cache) or to stop with a UserError (a user's folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from .fileio import write_json

MANIFEST = "rwkuplus-manifest.json"
_FORMAT = "rwkuplus-manifest"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))


def write_manifest(folder: str | os.PathLike) -> Path:
    """Record the size and SHA-256 of every file now in ``folder`` (recursively; hidden files skipped)."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)}
    path = folder / MANIFEST
    write_json(path, {"format": _FORMAT, "version": 1, "files": files})
    return path


def safetensors_problem(path: Path) -> str | None:
    """Whether a safetensors file's header agrees with its length (None when it does)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes, no safetensors header)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                return f"{path.name} is truncated or not a safetensors file ({size} bytes, header of {n} announced)"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"{path.name} cannot be read ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError):
        return f"{path.name} has a damaged safetensors header"
    if not isinstance(header, dict):
        return f"{path.name} has a damaged safetensors header"
    try:
        end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"] or [0])
    except (KeyError, TypeError, ValueError, IndexError):
        return f"{path.name} has a damaged safetensors header"
    expected = 8 + n + end
    if size != expected:
        return (f"{path.name} is truncated ({size} bytes, its header says {expected})" if size < expected
                else f"{path.name} has {size - expected} bytes more than its header accounts for")
    return None


def check_folder(folder: str | os.PathLike, full: bool = False) -> str | None:
    """The first problem found in ``folder`` (see the module docstring), or None."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            files = data["files"]
            assert data.get("format") == _FORMAT and isinstance(files, dict)
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            return f"{MANIFEST} is damaged"
        for name, entry in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            size = path.stat().st_size
            if size != entry.get("size"):
                return f"{name} has {size} bytes, {entry.get('size')} were written"
    for path in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            return problem
    if full and manifest.is_file():
        for name, entry in files.items():
            if _sha256(folder / name) != entry.get("sha256"):
                return f"{name} does not match the checksum written with it"
    return None
