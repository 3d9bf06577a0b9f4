"""Progress that shows in a terminal and in a log: the one mechanism every long loop uses.

``bar(total, desc)`` is a tqdm bar when stderr is a terminal (as before: nothing else is printed
there). When it is not (CI, ``nohup``, a cluster job, output piped to a file), it is a *line
progress* on stdout instead (stderr stays for warnings and errors): a line when it starts, a line
when it ends, and in between a heartbeat thread writes one line for everything in progress at
least every ``interval()`` seconds (default 30; the
environment variable ``RWKUPLUS_PROGRESS_SECONDS`` changes it), whether or not the work advanced, so a
long single step still shows the job is alive. ``activity(message)`` is the same for work without a
count (a phase of the subject build), and ``say(message)`` prints a line to stdout without breaking
a terminal's bar. Nested bars and activities are shown together, outermost first::

    [progress 02:30] units 3/10 (GA / Alice Smith / step 7) > utility Gen 40/100
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

DEFAULT_INTERVAL = 30.0

_lock = threading.RLock()
_active: list["LineProgress"] = []
_state = {"last": 0.0, "thread": None}


def interval() -> float:
    """Seconds between progress lines in a log (``RWKUPLUS_PROGRESS_SECONDS``, default 30)."""
    try:
        value = float(os.environ.get("RWKUPLUS_PROGRESS_SECONDS", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL


def is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(total: int | None, desc: str | None, *, unit: str = "it", initial: int = 0, leave: bool = True,
        enabled: bool = True):
    """A progress bar: tqdm in a terminal, a line progress elsewhere; a silent one when ``desc`` is
    None or ``enabled`` is false. Both have ``update``, ``set_postfix_str`` and ``close``."""
    if desc is None or not enabled:
        return _Silent()
    if is_terminal():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return LineProgress(total, desc, initial=initial, announce=leave)


@contextmanager
def activity(message: str, enabled: bool = True) -> Iterator[None]:
    """Work without a count: ``message`` is printed now (stdout) and, in a log, repeated by the
    heartbeat with the time spent until the work ends."""
    if not enabled:
        yield
        return
    say(message)
    if is_terminal():
        yield
        return
    p = LineProgress(None, message.rstrip(". "), announce=False)
    try:
        yield
    finally:
        p.close()


def say(message: str) -> None:
    """A line on stdout (through tqdm in a terminal, so that a bar in progress is not broken)."""
    if is_terminal():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()
    else:
        print(message, flush=True)


def close_all() -> None:
    """End every line progress still open (one left by an exception), without its 'done' line; the
    command line calls it when a command ends, however it ends."""
    with _lock:
        for p in list(_active):
            p.close(quiet=True)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """The non-terminal display: see the module docstring."""

    def __init__(self, total: int | None, desc: str, initial: int = 0, announce: bool = True):
        # announce=False (an inner bar, tqdm's leave=False): no start and end lines, only the heartbeat's.
        self.total, self.desc, self.n, self.postfix, self.announce = total, desc, initial, "", announce
        self.started = time.monotonic()
        self.closed = False
        with _lock:
            if not _active:  # the first line of the heartbeat comes one interval from now
                _state["last"] = time.monotonic()
            _active.append(self)
            if announce:
                _write(f"{self.desc}: started" + (f" ({self.n}/{self.total})" if self.total else ""))
            _ensure_heartbeat()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def describe(self) -> str:
        text = self.desc + (f" {self.n}/{self.total}" if self.total else (f" {self.n}" if self.n else ""))
        return text + (f" ({self.postfix})" if self.postfix else "")

    def close(self, quiet: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        with _lock:
            if self in _active:
                _active.remove(self)
            if self.announce and not quiet:
                _write(f"{self.describe()}: done in {_clock(time.monotonic() - self.started)}")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _write(line: str) -> None:
    print(f"[progress] {line}", file=sys.stdout, flush=True)
    _state["last"] = time.monotonic()


def _heartbeat_line() -> str | None:
    with _lock:
        if not _active:
            return None
        outer = _active[0]
        return f"[progress {_clock(time.monotonic() - outer.started)}] " + " > ".join(p.describe() for p in _active)


def _ensure_heartbeat() -> None:
    thread = _state["thread"]
    if thread is not None and thread.is_alive():
        return
    thread = threading.Thread(target=_beat, name="rwkuplus-progress", daemon=True)
    _state["thread"] = thread
    thread.start()


def _beat() -> None:
    while True:
        every = interval()
        time.sleep(min(every, 1.0) / 4)
        with _lock:
            if not _active:
                _state["thread"] = None
                return
            if time.monotonic() - _state["last"] >= every:
                line = _heartbeat_line()
                if line:
                    print(line, file=sys.stdout, flush=True)
                _state["last"] = time.monotonic()
