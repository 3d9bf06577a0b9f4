"""Fetch chosen targets of RWKU's official data from the Hugging Face hub (``jinzhuoran/RWKU``).

Only the ``Target/<index>_<Name>/`` folders of the chosen targets are downloaded (the ``All/``
files are hundreds of MB). Files come from a pinned revision, recorded in
``<out>/.rwkuplus_source.json`` so that every result can name the data it was computed on; the
loader (``rwku.load_benchmark``) copies it into ``Benchmark.source``.

``PINNED_REVISION`` is the newest commit of the dataset repository this project could identify
without network access (d72f493, "Update README.md", the commit that added the arXiv link to the
dataset card after the data uploads). Pass ``revision="main"`` to take whatever is newest; the
commit it resolved to is recorded when the hub reports it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download, list_repo_files
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import UserError
from ..fileio import read_json, write_json
from ..paths import home
from .rwku import REQUIRED_FILES, SOURCE_FILE, select_targets

REPO_ID = "jinzhuoran/RWKU"
PINNED_REVISION = "d72f493d481d1b0a9bdc6e869d32baeffad8904f"
CORPUS_FILES = ("positive", "negative", "pair", "reject", "passage")
_TARGET_FILE = re.compile(r"^Target/((\d+)_([^/]+))/([^/]+\.json)$")


def default_rwku_dir() -> Path:
    """Where ``rwkuplus data rwku`` fetches to by default (what the benchmark spec ``rwku`` loads)."""
    return home() / "rwku"


def _is_network_error(e: BaseException) -> bool:
    root = type(e).__module__.split(".")[0]
    return isinstance(e, (OSError, HfHubHTTPError)) or root in ("httpx", "httpx2", "requests", "urllib3")


def _hub_error(e: BaseException, what: str, revision: str) -> UserError:
    if isinstance(e, RepositoryNotFoundError):
        return UserError(f"The hub has no dataset {REPO_ID} (or it is private); cannot {what}.")
    if isinstance(e, RevisionNotFoundError):
        return UserError(f"--revision: the dataset {REPO_ID} has no revision {revision!r}.")
    if isinstance(e, EntryNotFoundError) and not isinstance(e, FileNotFoundError):
        return UserError(f"The dataset {REPO_ID} at revision {revision} lacks a file needed to {what} ({e}).")
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return UserError(f"Cannot reach the Hugging Face hub to {what} ({reason}); check the network or "
                     "HF_HUB_OFFLINE, or load a folder you already have with --benchmark rwku:DIR.")


def hub_target_folders(files: list[str]) -> dict[int, tuple[str, dict[str, str]]]:
    """index -> (folder name, {file name: repo path}) for every ``Target/<i>_<Name>/<file>.json``."""
    out: dict[int, tuple[str, dict[str, str]]] = {}
    for path in files:
        m = _TARGET_FILE.match(path)
        if m:
            folder, index, filename = m.group(1), int(m.group(2)), m.group(4)
            out.setdefault(index, (folder, {}))[1][filename] = path
    return out


def _wanted(filename: str, corpora: bool, phi: bool) -> bool:
    stem = filename[: -len(".json")]
    if stem.endswith("_phi"):
        return corpora and phi and stem[: -len("_phi")] in CORPUS_FILES
    return corpora or stem not in CORPUS_FILES


def fetch_rwku(targets, out_dir: str | os.PathLike | None = None, revision: str = PINNED_REVISION,
               corpora: bool = True, phi: bool = False, token: str | bool | None = None) -> Path:
    """Download the ``Target/`` folders of the chosen targets into ``out_dir`` (default ``default_rwku_dir()``).

    ``targets`` uses the loader's selection syntax (indices such as "1-10", or names).
    ``corpora=False`` skips the training corpora (positive, negative, pair, reject, passage);
    ``phi=True`` also fetches their Phi-3 variants. Files already present from the same revision
    are not downloaded again; a folder fetched at another revision is refused rather than mixed.
    """
    out = Path(out_dir) if out_dir is not None else default_rwku_dir()
    if not isinstance(revision, str) or not revision.strip():
        raise UserError(f"--revision: expected a branch, tag or commit of {REPO_ID}, got {revision!r}.")
    source_path = out / SOURCE_FILE
    previous = read_json(source_path) if source_path.exists() else None
    if previous is not None and (not isinstance(previous, dict) or previous.get("revision") != revision):
        got = previous.get("revision") if isinstance(previous, dict) else previous
        raise UserError(f"--out {out}: holds RWKU data from revision {got!r}, not {revision!r}; "
                        "fetch into another folder rather than mixing revisions.")
    try:
        files = list_repo_files(REPO_ID, repo_type="dataset", revision=revision, token=token)
    except Exception as e:  # noqa: BLE001 - only hub and network errors are turned into a sentence
        if isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)) or _is_network_error(e):
            raise _hub_error(e, "list the dataset's files", revision) from None
        raise
    folders = hub_target_folders(files)
    if not folders:
        raise UserError(f"The dataset {REPO_ID} at revision {revision} has no Target/<index>_<Name>/ folders.")
    chosen = select_targets([(i, f.split("_", 1)[1].replace("_", " ")) for i, (f, _) in sorted(folders.items())],
                            targets, aliases={i: [f] for i, (f, _) in folders.items()})
    resolved = None
    try:
        resolved = HfApi().dataset_info(REPO_ID, revision=revision, token=token).sha
    except Exception as e:  # noqa: BLE001
        if not (_is_network_error(e) or isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError))):
            raise
    fetched = list(previous.get("targets", [])) if previous else []
    count = 0
    for i in chosen:
        folder, repo_files = folders[i]
        missing = [f for f in REQUIRED_FILES if f not in repo_files]
        if missing:
            raise UserError(f"The dataset {REPO_ID} at revision {revision} lacks Target/{folder}/{missing[0]}.")
        for filename, repo_path in sorted(repo_files.items()):
            if not _wanted(filename, corpora, phi) or (out / repo_path).exists():
                continue
            try:
                hf_hub_download(REPO_ID, repo_path, repo_type="dataset", revision=revision, local_dir=out, token=token)
            except Exception as e:  # noqa: BLE001
                if _is_network_error(e) or isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)):
                    raise _hub_error(e, f"download {repo_path}", revision) from None
                raise
            count += 1
        if folder not in fetched:
            fetched.append(folder)
    fetched.sort(key=lambda f: int(f.split("_", 1)[0]))
    write_json(source_path, {
        "repo": REPO_ID,
        "revision": revision,
        "resolved_revision": resolved or (previous or {}).get("resolved_revision")
        or (revision if re.fullmatch(r"[0-9a-f]{40}", revision) else None),
        "targets": fetched,
        "corpora": corpora,
        "phi": phi,
    })
    return out
