"""The input corpus: which videos there are, their stable keys, and which shard each belongs to.

A video's **key** names it independently of where the corpus is mounted: its path relative to
the input folder (POSIX separators), or the path as written in a list file / on the command
line. Keys decide shards, resume and merge, so every machine that runs the same command on the
same corpus computes the same keys.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path, PurePosixPath

from ..errors import FaithfulFacesError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass(frozen=True, order=True)
class VideoRef:
    key: str
    path: Path
    frames: tuple[int, int] | None = None  # one shot of the file: (start, end) ordinals; None = all

    @property
    def slug(self) -> str:
        """A file-system-safe, unique folder name for this video's crops: ``<stem>-<hash12>``."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePosixPath(self.key).stem)[:40] or "video"
        return f"{stem}-{hashlib.sha256(self.key.encode('utf-8')).hexdigest()[:12]}"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the videos whose key hashes to ``index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise FaithfulFacesError(
                f"Shard {self.index}/{self.count} is out of range: use i/n with n >= 1 and 0 <= i < n "
                "(0-based; e.g. --shard 0/4 ... --shard 3/4 for four machines)."
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise FaithfulFacesError(f"Shard '{text}' is not of the form i/n (e.g. 0/4).")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def shard_of(key: str, count: int) -> int:
    """Deterministic shard of ``key``: the first 8 bytes of its SHA-256, big-endian, modulo ``count``."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def _is_video(path: Path, extensions: Sequence[str]) -> bool:
    return path.suffix.lower() in extensions


def _list_file(path: Path) -> list[VideoRef]:
    refs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        refs.append(
            VideoRef(PurePosixPath(*Path(line).parts).as_posix(), p if p.is_absolute() else path.parent / p)
        )
    return refs


def discover_videos(
    inputs: Iterable[str | PathLike], *, extensions: Sequence[str] = VIDEO_EXTENSIONS
) -> list[VideoRef]:
    """Videos from folders (searched recursively), video files and list files, sorted by key.

    A list file is any other file: one video path per line (``#`` comments, blank lines
    skipped), relative paths taken from the list file's folder.
    """
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    refs: list[VideoRef] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and _is_video(file, exts):
                    refs.append(VideoRef(file.relative_to(path).as_posix(), file))
        elif path.is_file() and _is_video(path, exts):
            refs.append(VideoRef(PurePosixPath(*Path(item).parts).as_posix(), path))
        elif path.is_file():
            refs.extend(_list_file(path))
        else:
            raise FaithfulFacesError(
                f"Input '{item}' does not exist. Give folders of videos, video files, or text files "
                "listing one video path per line."
            )
    seen: dict[str, Path] = {}
    for ref in refs:
        if ref.key in seen and seen[ref.key].resolve() != ref.path.resolve():
            raise FaithfulFacesError(
                f"Two inputs give the same video key '{ref.key}' ({seen[ref.key]} and {ref.path}); keys must be "
                "unique. Pass their common parent folder as the input instead."
            )
        seen[ref.key] = ref.path
    return sorted({ref.key: ref for ref in refs}.values())
