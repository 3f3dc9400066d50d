"""Writing a file so that a reader, or a process killed mid-write, never sees it half written."""
from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


def temporary_name(path: str | os.PathLike) -> Path:
    """A hidden sibling of `path`, unique to this process and thread, so two writers never share a temp file."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files in `folder` left by processes that were killed mid-write (a checkpoint's can
    be hundreds of MB); returns them. Called under the folder's run lock, so no live writer elsewhere uses it."""
    stale = []
    for path in Path(folder).glob(".*.tmp"):
        parts = path.name.rsplit(".", 3)  # .<name>.<pid>.<thread>.tmp
        if len(parts) == 4 and parts[1].isdigit() and not Path(f"/proc/{parts[1]}").exists():
            path.unlink(missing_ok=True)
            stale.append(path)
    return stale


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces `path` in one rename, on error it is removed."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_stream_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` fills an open temporary file that then replaces `path`: for writers whose output would depend
    on the file's name, like torch.save, which names the archive inside after the file it is given by path (a
    per-process temporary name would make every save differ)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        write(file)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True))
