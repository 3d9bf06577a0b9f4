"""One process per run folder: ``folder_lock(folder)`` holds ``<folder>/.lock`` while a run works there.

The lock file (JSON: pid, host, start time, command) is created in one step (``os.link`` of a
finished temporary file, which fails if the lock exists), so two processes cannot both take it. A
second process finds it and stops with a UserError naming the holder. A lock left by a process
that no longer exists on this host (a ``kill -9``, a crash, a reboot; a pid now used by a process
that started after the lock was taken counts as gone) is stale: it is taken over, with a line
saying so. A lock from another host cannot be checked; the message says how to
remove it. The lock is released when the ``with`` block ends, however it ends (an exception, Ctrl-C).

``claim(folder)`` is the same lock taken without an error: it yields False when a live process holds
it. A run folder shared by several processes (``rwkuplus run --join``) claims each unit's folder so
that no unit runs twice.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: treated as stale
    return data if isinstance(data, dict) else {}


def describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), where /proc tells (Linux); else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _stale(holder: dict) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") is None:
        return True  # a damaged lock file
    if holder["host"] != socket.gethostname():
        return False  # cannot be checked from here
    if not _pid_alive(pid):
        return True
    started, locked = _process_started(pid), holder.get("started")
    # A process that started after the lock was taken is another one that reuses the pid.
    return started is not None and isinstance(locked, (int, float)) and started > locked + 5


def _take(folder: Path, option: str, say: Callable[[str], None] | None) -> tuple[dict, dict | None]:
    """Try to take ``folder``'s lock: ``(me, None)`` when taken, ``(me, holder)`` when a live process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": " ".join(sys.argv)}
    tmp = folder / f".lock.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(me) + "\n", encoding="utf-8")
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
                return me, None
            except FileExistsError:
                holder = _read(path)
                if holder is None:  # released in the meantime
                    continue
                if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                    raise UserError(f"{option} {folder}: this process already runs in that folder.")
                if not _stale(holder):
                    return me, holder
                (say or print)(f"{folder}: taking over the lock of a process that no longer runs "
                               f"({describe(holder)}).")
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        raise UserError(f"{option} {folder}: could not take the folder's lock ({path}); try again.")
    finally:
        tmp.unlink(missing_ok=True)


def _release(folder: Path, me: dict) -> None:
    path = folder / LOCK_NAME
    holder = _read(path)
    if holder and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
        path.unlink(missing_ok=True)


def held_by(folder: str | os.PathLike) -> dict | None:
    """The live process holding ``folder``'s lock (its lock record), or None when the lock is free or stale."""
    holder = _read(Path(folder) / LOCK_NAME)
    return None if holder is None or _stale(holder) else holder


@contextmanager
def folder_lock(folder: str | os.PathLike, option: str = "--out",
                say: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block; see the module docstring."""
    folder = Path(folder)
    me, holder = _take(folder, option, say)
    if holder is not None:
        remedy = ("wait for it to finish, choose another --out, or add --join to share its work"
                  if holder.get("host") == me["host"] else f"if that process is gone, delete {folder / LOCK_NAME}")
        raise UserError(f"{option} {folder}: another rwkuplus run is working in this folder "
                        f"({describe(holder)}); {remedy}.")
    try:
        yield folder / LOCK_NAME
    finally:
        _release(folder, me)


@contextmanager
def claim(folder: str | os.PathLike, say: Callable[[str], None] | None = None) -> Iterator[bool]:
    """Try to hold ``folder``'s lock for the block without waiting: yields True when this process holds it,
    False when another live process does (the block should then leave the folder alone). Used for the units
    of a run folder that several processes share (``rwkuplus run --join``)."""
    folder = Path(folder)
    me, holder = _take(folder, "unit", say)
    try:
        yield holder is None
    finally:
        if holder is None:
            _release(folder, me)
