"""Merge dataset directories (the shards of one corpus) into one.

Shards are built independently (``--shard i/n`` on any number of machines, each into its own
directory); merging checks that they used the same curation settings and hold disjoint videos,
copies (or hard-links) the crop folders, and writes one sorted manifest, one done-log and a
fresh report. The merged manifest equals the one an unsharded run would have written. When
the sources are exactly the shards 0..n-1 of one split, the result is recorded as shard 0/1,
so a later ``build`` into it resumes like an unsharded run.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from ..errors import FaithfulFacesError
from . import journal
from .directory import BUILD_FORMAT, DatasetDirectory
from .manifest import CROPS_DIR, VideoRecord
from .outcomes import DoneRecord
from .report import build_report, print_report, write_report
from .sources import Shard


def _merged_shard(shards: list[str]) -> str:
    parsed = [Shard.parse(s) for s in shards]
    counts = {s.count for s in parsed}
    if len(counts) == 1 and sorted(s.index for s in parsed) == list(range(next(iter(counts)))):
        return str(Shard())
    return "merged:" + ",".join(shards)


def merge_datasets(
    sources: Sequence[str | PathLike], out: str | PathLike, *, link: bool = False, print_summary: bool = True
) -> tuple[list[VideoRecord], dict]:
    """Merge ``sources`` into the new directory ``out``; returns (manifest records, report).

    ``link=True`` hard-links crop files instead of copying them (same file system only).
    """
    if not sources:
        raise FaithfulFacesError("Nothing to merge: give the dataset directories of the shards.")
    dirs = [DatasetDirectory(s) for s in sources]
    dest = DatasetDirectory(out)
    _check_destination(dirs, dest)
    configs = [d.build_config() for d in dirs]
    _check_same_settings(dirs, configs)
    records, done = _collect(dirs)
    with dest.locked():
        _copy_crops(records, dest, link=link)
        journal.rewrite_lines(dest.build_file, [_merged_build_config(configs)])
        journal.rewrite_lines(dest.done, [done[k].model_dump_json() for k in sorted(done)])
        ordered = [records[k][0] for k in sorted(records)]
        journal.rewrite_lines(dest.manifest, [r.line() for r in ordered])
        report = build_report(
            list(done.values()),
            threshold=float(configs[0]["settings"]["threshold"]),
            shard=f"merge of {len(dirs)}",
        )
        write_report(report, dest.report, dest.histogram)
    (dest.root / CROPS_DIR).mkdir(parents=True, exist_ok=True)
    if print_summary:
        print_report(report)
    return ordered, report


def _check_destination(dirs: list[DatasetDirectory], dest: DatasetDirectory) -> None:
    if dest.root.exists() and any(dest.root.iterdir()):
        raise FaithfulFacesError(f"Merge output {dest.root} is not empty; give a new or empty directory.")
    if any(d.root.resolve() == dest.root.resolve() for d in dirs):
        raise FaithfulFacesError("The merge output must not be one of the sources.")


def _check_same_settings(dirs: list[DatasetDirectory], configs: list[dict]) -> None:
    first = configs[0]
    for d, config in zip(dirs[1:], configs[1:], strict=True):
        if config.get("settings") != first.get("settings"):
            raise FaithfulFacesError(
                f"{d.root} was built with other curation settings than {dirs[0].root} "
                f"({config.get('settings')} vs {first.get('settings')}); only shards of one build can be merged."
            )


def _collect(
    dirs: list[DatasetDirectory],
) -> tuple[dict[str, tuple[VideoRecord, DatasetDirectory]], dict[str, DoneRecord]]:
    """Every shard's manifest records (key → record, its shard) and done records; disjoint, one model set."""
    records: dict[str, tuple[VideoRecord, DatasetDirectory]] = {}
    done: dict[str, DoneRecord] = {}
    for d in dirs:
        for record in d.manifest_records():
            if record.key in records:
                raise FaithfulFacesError(
                    f"Video '{record.key}' is in both {records[record.key][1].root} and {d.root}; shards must hold "
                    "disjoint videos (build each with its own --shard i/n of the same n)."
                )
            records[record.key] = (record, d)
        for rec in d.done_records():
            done[rec.key] = rec
    backends = {r.backends for r, _ in records.values()}
    if len(backends) > 1:
        raise FaithfulFacesError(
            f"The shards used different models ({sorted(b.model_dump_json() for b in backends)}); a dataset "
            "should be curated and captioned by one set of models. Rebuild the odd shard."
        )
    return records, done


def _copy_crops(records: dict[str, tuple[VideoRecord, DatasetDirectory]], dest: DatasetDirectory, *,
                link: bool) -> None:
    copy = os.link if link else shutil.copy2
    for key in sorted(records):
        record, d = records[key]
        folder = Path(record.crops[0]).parent
        shutil.copytree(d.root / folder, dest.root / folder, copy_function=copy)


def _merged_build_config(configs: list[dict]) -> str:
    """The merged directory's build record: the shared settings, the merged shard, the models."""
    models = [c.get("models") for c in configs]
    return json.dumps(
        {
            "format": BUILD_FORMAT,
            "settings": configs[0].get("settings"),
            "shard": _merged_shard([c.get("shard", "0/1") for c in configs]),
            "models": models[0] if all(m == models[0] for m in models) else {"merged": models},
        },
        indent=1,
        sort_keys=True,
    )
