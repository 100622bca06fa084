"""Append-only JSONL files that survive a kill: one record = one ``write`` + ``fsync``.

A record is appended with a single ``os.write`` of the whole line (newline included) to a file
opened with ``O_APPEND``, then ``fsync``-ed, so a reader sees either the whole line or, if the
process died inside the write, a last line without its newline. ``repair_tail`` cuts such a
truncated last line off before a run appends again, so a resumed run never glues a new record
onto a half-written one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from os import PathLike
from pathlib import Path


def append_line(path: str | PathLike, record: dict | str) -> None:
    """Append ``record`` (a dict, dumped as compact JSON, or a ready line) as one durable line."""
    line = (
        record if isinstance(record, str) else json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    )
    if "\n" in line:
        raise ValueError("a journal line must not contain a newline")
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # only on exotic file systems; still one record per call
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_tail(path: str | PathLike) -> str | None:
    """Truncate a last line that has no newline (an interrupted append); return it, or None."""
    path = Path(path)
    if not path.exists():
        return None
    size = path.stat().st_size
    if size == 0:
        return None
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return None
        fh.seek(0)
        data = fh.read()
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return data[keep:].decode("utf-8", errors="replace")


def iter_lines(path: str | PathLike) -> Iterator[tuple[int, str, bool]]:
    """``(line_number, text, complete)`` for each line (1-based); ``complete`` is False only for a
    last line without its newline. Blank lines are skipped."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            complete = raw.endswith(b"\n")
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                yield number, text, complete


def rewrite_lines(path: str | PathLike, lines: list[str]) -> None:
    """Replace ``path`` atomically with ``lines`` (each without newline)."""
    from ..checkpoints import atomic_write  # imports torch: only needed when a run finishes

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)

    atomic_write(path, write)
