"""``build_dataset``: a corpus of raw videos → a training dataset directory (paper §3.4).

One call does it all: find the videos, keep this shard's, skip those already done (resume),
curate the rest (in this process, or in ``workers`` spawned processes that each build their own
models from picklable specs), caption the kept ones, commit each video durably as it finishes,
then sort the manifest and write the report. See ``directory`` for the crash-safety contract
and ``curate`` for the keep/reject rules.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import FaithfulFacesError
from . import backends as bk
from . import outcomes as oc
from .captions import CaptionMissing, CaptionRequest
from .curate import CurationSettings, VideoCuration, curate_video, staging_folder
from .decode import VideoReadError
from .directory import DatasetDirectory
from .lifetime import die_with_parent
from .manifest import Backends, VideoRecord
from .outcomes import DoneRecord
from .report import RunStats, build_report, print_report, write_report
from .shots import detect_shots, shot_key
from .sources import VIDEO_EXTENSIONS, Shard, VideoRef, discover_videos

IGNORED_MODEL_KWARGS = ("device", "batch_size")  # placement, not results: may change on resume


@dataclass
class Models:
    """The three models one process runs."""

    detector: Any
    estimator: Any
    captioner: Any

    @classmethod
    def build(cls, detector: Any, estimator: Any, captioner: Any) -> Models:
        return cls(bk.build(detector), bk.build(estimator), bk.build(captioner))

    def backends(self) -> Backends:
        return Backends(detector=self.detector.name, pose=self.estimator.name, captioner=self.captioner.name)


def process_video(
    ref: VideoRef, models: Models, settings: CurationSettings, root: Path
) -> list[tuple[VideoCuration, VideoRecord | None]]:
    """Curate one video: one sample, or (``settings.shots``) one sample per shot."""
    if not settings.shots:
        return [process_sample(ref, models, settings, root)]
    try:
        shots = detect_shots(ref.path, threshold=settings.shot_threshold, min_frames=settings.shot_min_frames)
    except VideoReadError as exc:
        return [(VideoCuration(ref=ref, detail=str(exc)), None)]
    out = []
    for i, shot in enumerate(shots):
        result, record = process_sample(VideoRef(shot_key(ref.key, i), ref.path, shot), models, settings, root)
        result.source, result.shots = ref.key, len(shots)
        out.append((result, record))
    return out


def finished_videos(records: Iterable[DoneRecord], done: set[str]) -> set[str]:
    """Keys of split videos all of whose shots are in ``done`` (a video cut off mid-way is redone)."""
    counts = {r.source: r.shots for r in records if r.source is not None and r.shots is not None}
    return {key for key, n in counts.items() if all(shot_key(key, i) in done for i in range(n))}


def process_sample(
    ref: VideoRef, models: Models, settings: CurationSettings, root: Path
) -> tuple[VideoCuration, VideoRecord | None]:
    """Curate and (if kept) caption one sample; its crops wait in the staging folder for ``commit``."""
    result = curate_video(ref, models.detector, models.estimator, settings, root)
    if not result.kept:
        return result, None
    request = CaptionRequest(
        ref=ref,
        frame_indices=tuple(f.index for f in result.frames),
        frames_decoded=result.frames_decoded,
        fps=result.info.fps if result.info else None,
    )
    try:
        result.prompt = models.captioner.caption(request)
    except CaptionMissing as exc:
        shutil.rmtree(staging_folder(root, ref), ignore_errors=True)
        result.reject(oc.NO_CAPTION, str(exc))
        return result, None
    except BaseException:
        shutil.rmtree(staging_folder(root, ref), ignore_errors=True)
        raise
    return result, result.video_record(models.backends())


# ---------------------------------------------------------------------- worker processes
_WORKER: tuple[Models, CurationSettings, Path] | None = None


def _init_worker(
    detector: Any, estimator: Any, captioner: Any, settings: CurationSettings, root: Path, threads: int
) -> None:
    global _WORKER
    die_with_parent()
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    models = Models.build(detector, estimator, captioner)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    _WORKER = (models, settings, root)


def _work(ref: VideoRef) -> list[tuple[VideoCuration, VideoRecord | None]]:
    if _WORKER is None:
        raise RuntimeError("worker not initialised")
    models, settings, root = _WORKER
    return process_video(ref, models, settings, root)


# ---------------------------------------------------------------------- the build
@dataclass
class BuildResult:
    directory: Path
    records: list[VideoRecord]  # the finished manifest
    report: dict
    processed: int  # videos this run processed
    skipped: int  # videos of this shard done by an earlier run


def _describe(source: Any) -> str:
    if isinstance(source, bk.ModelSpec):
        kept = {k: v for k, v in source.kwargs.items() if k not in IGNORED_MODEL_KWARGS}
        return bk.ModelSpec(source.factory, kept).describe()
    return bk.describe(source)


def _build_config(settings: CurationSettings, shard: Shard, models_args: tuple) -> dict:
    """What ``build.json`` records of a run (settings, shard, the three models), so that a resumed run
    with other ones is refused."""
    models = {k: _describe(s) for k, s in zip(("detector", "pose", "captioner"), models_args, strict=True)}
    return {"settings": settings.as_dict(), "shard": str(shard), "models": models}


def _results_in_process(todo: Sequence[VideoRef], models_args: tuple, settings: CurationSettings, root: Path):
    models = Models.build(*models_args)
    for ref in todo:
        yield process_video(ref, models, settings, root)


def _results_in_pool(
    todo: Sequence[VideoRef],
    models_args: tuple,
    settings: CurationSettings,
    root: Path,
    workers: int,
    threads: int,
):
    for source, what in zip(models_args, ("face detector", "pose estimator", "captioner"), strict=True):
        bk.check_picklable(source, what)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(*models_args, settings, root, threads),
    )
    pending: set[Future] = set()
    queue = iter(todo)
    try:
        while True:
            while len(pending) < 2 * workers:
                ref = next(queue, None)
                if ref is None:
                    break
                pending.add(pool.submit(_work, ref))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _videos_to_do(directory: DatasetDirectory, refs: list, retry_errors: bool) -> tuple[set, list]:
    """(keys already done, the refs still to curate) after recovering the journal of an earlier run."""
    done = directory.recover()
    if retry_errors:
        latest = {r.key: r for r in directory.done_records()}
        done -= {k for k, r in latest.items() if r.outcome == oc.ERROR}
    done |= finished_videos(directory.done_records(), done)
    return done, [r for r in refs if r.key not in done]


def _curate_and_commit(directory: DatasetDirectory, todo: list, done: set, models_args: tuple,
                       settings: CurationSettings, *, workers: int, threads: int, desc: str, progress: bool,
                       on_commit: Callable[[VideoCuration], None] | None) -> RunStats:
    """Curate ``todo`` (in this process or a pool), committing each sample durably as it arrives."""
    from tqdm.auto import tqdm

    counts: Counter[str] = Counter()
    frames_decoded = frames_sampled = 0
    start = time.perf_counter()  # throughput: model building + processing + commits
    bar = tqdm(total=len(todo), desc=desc, unit="video", disable=not progress, dynamic_ncols=True)
    try:
        if todo:
            results = (
                _results_in_process(todo, models_args, settings, directory.root)
                if workers == 1
                else _results_in_pool(todo, models_args, settings, directory.root, workers, threads)
            )
            samples = (pair for batch in results for pair in batch if pair[0].ref.key not in done)
            with closing(results):  # stops the workers if a commit or a hook raises
                for result, record in samples:
                    directory.commit(result, record)
                    counts[result.outcome] += 1
                    frames_decoded += result.frames_decoded
                    frames_sampled += result.frames_sampled
                    bar.set_postfix(kept=counts[oc.KEPT], rejected=counts[oc.REJECTED], errors=counts[oc.ERROR],
                                    refresh=False)
                    bar.update(1)
                    if on_commit is not None:
                        on_commit(result)
    finally:
        bar.close()
    return RunStats(videos=sum(counts.values()), frames_decoded=frames_decoded, frames_sampled=frames_sampled,
                    wall_seconds=time.perf_counter() - start)


def build_dataset(
    inputs: Iterable[str | PathLike],
    out: str | PathLike,
    *,
    detector: Any,
    estimator: Any,
    captioner: Any,
    settings: CurationSettings | None = None,
    workers: int = 1,
    shard: Shard | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    progress: bool = True,
    print_summary: bool = True,
    threads_per_worker: int | None = None,
    retry_errors: bool = False,
    on_commit: Callable[[VideoCuration], None] | None = None,
) -> BuildResult:
    """Curate the videos of ``inputs`` (folders, files, list files) into the dataset directory ``out``.

    ``detector`` / ``estimator`` / ``captioner``: a ``ModelSpec`` (built in each worker) or a built
    object. ``workers > 1`` runs that many spawned processes. ``shard``: process only the videos
    whose key hashes to this shard. Rerunning with the same ``out`` resumes; ``retry_errors``
    also processes again the videos that failed to decode before (e.g. after re-encoding them).
    ``on_commit`` is called after each video is durably recorded (progress hooks, tests).
    """
    settings = settings or CurationSettings()
    shard = shard or Shard()
    if workers < 1:
        raise FaithfulFacesError(f"workers must be >= 1, got {workers}.")
    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    directory = DatasetDirectory(out)
    refs = [r for r in discover_videos(inputs, extensions=extensions) if shard.holds(r.key)]
    models_args = (detector, estimator, captioner)
    with directory.locked():
        directory.check_build(_build_config(settings, shard, models_args))
        done, todo = _videos_to_do(directory, refs, retry_errors)
        run = _curate_and_commit(directory, todo, done, models_args, settings, workers=workers, threads=threads,
                                 desc=f"curating videos (shard {shard})", progress=progress, on_commit=on_commit)
        records = directory.finalize()
        report = build_report(
            directory.done_records(), threshold=settings.threshold, run=run, shard=str(shard)
        )
        write_report(report, directory.report, directory.histogram)
    if print_summary:
        print_report(report)
    return BuildResult(
        directory=directory.root,
        records=records,
        report=report,
        processed=run.videos,
        skipped=len(refs) - len(todo),
    )
