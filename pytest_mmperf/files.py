"""Atomic file writes: readers see the previous file or the whole new one, never half of it.

One home for the reports, the snapshot file, the synthetic JPEG datasets and the workers' sample
files. Torch-free and pytest-free.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = 0o644,
                 fsync: bool = True) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file in the same
    folder and ``os.replace``; creates missing parent folders.

    ``mode``: the file's permission bits (``mkstemp`` creates 0600; reports and committed files
    are meant to be read by others); ``None`` keeps an existing file's mode, else 0644.
    ``fsync=False`` skips flushing to disk (temporary files that only a child process reads).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`write_atomic` for text with the default mode (0644)."""
    return write_atomic(path, text)
