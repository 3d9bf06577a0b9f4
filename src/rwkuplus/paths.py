"""Where rwkuplus keeps its cache: ``$RWKUPLUS_HOME`` or ``~/.cache/rwkuplus``."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    root = os.environ.get("RWKUPLUS_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "rwkuplus"
    path.mkdir(parents=True, exist_ok=True)
    return path
