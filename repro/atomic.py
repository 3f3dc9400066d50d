"""Writing a file so that a reader, or a process killed mid-write, never sees it half written."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


# a temporary's name holds its writer: host, pid and thread, since the ranks of a job on several nodes write into
# one shared run folder and containers on different nodes reuse the same pids
HOST = socket.gethostname().replace(".", "-")
# another host's temporary older than this is left by a killed writer (no file the suite writes takes an hour)
FOREIGN_STALE_SECONDS = 3600.0


def temporary_name(path: str | os.PathLike) -> Path:
    """A hidden sibling of `path`, unique to this host, process and thread, so two writers never share one."""
    path = Path(path)
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{threading.get_ident()}.tmp")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files in `folder` left by processes that were killed mid-write (a checkpoint's can
    be hundreds of MB); returns them. Called under the folder's run lock: a temporary of this host is stale when
    its process is gone, one of another host (where /proc cannot tell) when it has not been written to for an
    hour, so a live writer on another node is never cut off."""
    stale = []
    for path in Path(folder).glob(".*.tmp"):
        parts = path.name.rsplit(".", 4)  # .<name>.<host>.<pid>.<thread>.tmp
        if len(parts) != 5 or not parts[2].isdigit():
            continue
        here = parts[1] == HOST
        try:
            gone = not Path(f"/proc/{parts[2]}").exists() if here else \
                time.time() - path.stat().st_mtime > FOREIGN_STALE_SECONDS
        except FileNotFoundError:  # its writer just renamed it into place
            continue
        if gone:
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
