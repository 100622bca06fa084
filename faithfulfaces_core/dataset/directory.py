"""A dataset directory on disk: lock, build settings, crash recovery, committing videos, finishing.

Commit order for a kept video (crash-safe): its crops are written into ``crops/<slug>.partial``
while in flight; the folder is renamed to ``crops/<slug>``; the manifest line is appended (one
write + fsync); then the done-log line. A kill at any point loses at most the videos in flight:
on restart ``recover`` cuts a truncated last line, counts every key in the manifest as done
(adding a missing done line), and deletes staging folders and crop folders no manifest line
refers to, so those videos are simply processed again. No line is ever duplicated.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import FaithfulFacesError
from . import journal
from .curate import STAGING_SUFFIX, VideoCuration, crop_folder, staging_folder
from .manifest import (
    BUILD_NAME,
    CROPS_DIR,
    DONE_NAME,
    MANIFEST_NAME,
    ManifestError,
    VideoRecord,
    read_manifest,
)
from .outcomes import DoneRecord

REPORT_NAME = "report.json"
HISTOGRAM_NAME = "delta_histogram.png"
LOCK_NAME = ".lock"
BUILD_FORMAT = 1


class DatasetDirectory:
    """Paths and state of one dataset directory (see ``manifest`` for the layout)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.manifest = self.root / MANIFEST_NAME
        self.done = self.root / DONE_NAME
        self.build_file = self.root / BUILD_NAME
        self.crops = self.root / CROPS_DIR
        self.report = self.root / REPORT_NAME
        self.histogram = self.root / HISTOGRAM_NAME

    # ------------------------------------------------------------------ lock
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use: a second build writing into the same directory is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / LOCK_NAME, "a+")
        try:
            try:
                if os.name == "nt":
                    import msvcrt

                    msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                else:
                    import fcntl

                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise FaithfulFacesError(
                    f"Another build is writing into {self.root} ({exc}). Wait for it to finish, or give this "
                    "run its own --out (shards each need their own directory; merge them afterwards)."
                ) from exc
            yield
        finally:
            fh.close()

    # ------------------------------------------------------------------ build settings
    def check_build(self, config: dict) -> None:
        """Write ``build.json``, or check that a resumed run uses the same settings.

        A directory with no recorded video yet (e.g. the first run stopped on a missing model)
        takes the new settings.
        """
        config = {"format": BUILD_FORMAT, **config}
        if self.build_file.is_file():
            old = json.loads(self.build_file.read_text(encoding="utf-8"))
            if old != config and self._has_results():
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise FaithfulFacesError(
                    f"{self.root} was built with other settings ({', '.join(diff)}: was "
                    f"{ {k: old.get(k) for k in diff} }, now { {k: config.get(k) for k in diff} }). "
                    "Resume with the same options, or build into a new --out directory."
                )
            if old == config:
                return
        self.root.mkdir(parents=True, exist_ok=True)
        journal.rewrite_lines(self.build_file, [json.dumps(config, indent=1, sort_keys=True)])

    def _has_results(self) -> bool:
        """Whether any video was recorded (a run that failed before its first video binds nothing)."""
        return any(p.is_file() and p.stat().st_size > 0 for p in (self.manifest, self.done))

    def build_config(self) -> dict:
        if not self.build_file.is_file():
            raise FaithfulFacesError(
                f"{self.root} has no {BUILD_NAME}; it is not a dataset directory built by build_dataset."
            )
        return json.loads(self.build_file.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ reading
    def manifest_records(self) -> list[VideoRecord]:
        """All manifest records; any bad line (other than a truncated tail, see ``recover``) raises."""
        if not self.manifest.exists():
            return []
        records, problems = read_manifest(self.manifest, check_files=False)
        if problems:
            p = problems[0]
            raise ManifestError(
                f"{self.manifest}, line {p.line}: {p.message}. Fix or delete that line (the video is then "
                "processed again) and rerun.",
                path=self.manifest,
                line=p.line,
            )
        return records

    def done_records(self) -> list[DoneRecord]:
        """The done-log in file order (a key appears twice only after a manual manifest edit)."""
        if not self.done.exists():
            return []
        out = []
        for number, text, complete in journal.iter_lines(self.done):
            if not complete:
                continue
            try:
                out.append(DoneRecord.model_validate_json(text))
            except ValueError as exc:
                raise FaithfulFacesError(
                    f"{self.done}, line {number}: not a valid done record ({str(exc).splitlines()[0]}). "
                    "Delete that line (the video is then processed again) and rerun."
                ) from exc
        return out

    # ------------------------------------------------------------------ recovery
    def recover(self) -> set[str]:
        """Repair after a kill; return the keys that are done (kept, rejected or failed)."""
        journal.repair_tail(self.manifest)
        journal.repair_tail(self.done)
        records = self.manifest_records()
        kept = {r.key: r for r in records}
        # a "kept" done line whose manifest line was removed by hand: process the video again
        done = {r.key for r in self.done_records() if r.outcome != "kept" or r.key in kept}
        for record in records:
            if record.key not in done:  # killed between the manifest line and the done line
                journal.append_line(
                    self.done,
                    DoneRecord(
                        key=record.key,
                        video=record.video,
                        outcome="kept",
                        reason="pose_variation_ok",
                        detail="recovered from the manifest",
                        frames_decoded=record.frames_decoded,
                        frames_sampled=record.frames_sampled,
                        frames_with_face=len(record.crops),
                        delta=record.delta,
                    ).model_dump_json(),
                )
                done.add(record.key)
        if self.crops.is_dir():
            live = {Path(r.crops[0]).parent.name for r in kept.values()}
            for folder in self.crops.iterdir():
                if folder.is_dir() and (folder.name.endswith(STAGING_SUFFIX) or folder.name not in live):
                    shutil.rmtree(folder)
        return done | set(kept)

    # ------------------------------------------------------------------ writing
    def commit(self, result: VideoCuration, record: VideoRecord | None) -> None:
        """Record one processed video durably (see the module docstring for the order)."""
        if result.kept:
            if record is None:
                raise ValueError("a kept video needs its manifest record")
            final = crop_folder(self.root, result.ref)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging_folder(self.root, result.ref), final)
            journal.append_line(self.manifest, record.line())
        journal.append_line(self.done, result.done_record().model_dump_json())

    def finalize(self) -> list[VideoRecord]:
        """Sort the manifest and the done-log by key (so any run order gives the same files)."""
        records = sorted(self.manifest_records(), key=lambda r: r.key)
        journal.rewrite_lines(self.manifest, [r.line() for r in records])
        latest = {r.key: r for r in self.done_records()}  # the last word on each key
        journal.rewrite_lines(self.done, [latest[k].model_dump_json() for k in sorted(latest)])
        return records
