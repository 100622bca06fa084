"""The trainer's loader: validation of records, bad lines reported with their line numbers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from faithfulfaces_core.dataset import journal
from faithfulfaces_core.dataset.manifest import FORMAT_VERSION, ManifestError, VideoRecord, load_manifest


def record(key: str, root: Path, **changes) -> dict:
    crops = [f"crops/{key}/f000000.png", f"crops/{key}/f000004.png"]
    for crop in crops:
        (root / crop).parent.mkdir(parents=True, exist_ok=True)
        (root / crop).write_bytes(b"png")
    data = {
        "format": FORMAT_VERSION,
        "key": f"{key}.mp4",
        "video": f"/corpus/{key}.mp4",
        "prompt": "a person",
        "frame_indices": [0, 4],
        "crops": crops,
        "angles": [[10.0, 170.0, 0.0], [-30.0, -170.0, 5.0]],
        "boxes": [[1.0, 2.0, 30.0, 40.0]] * 2,
        "crop_boxes": [[0, 0, 40, 50]] * 2,
        "ranges": [40.0, 20.0, 5.0],
        "delta": 65.0,
        "frames_decoded": 9,
        "frames_sampled": 5,
        "width": 64,
        "height": 48,
        "fps": 25.0,
        "backends": {"detector": "insightface", "pose": "6drepnet", "captioner": "sidecar.txt"},
    }
    data.update(changes)
    return data


def write(root: Path, lines: list[str], *, tail: str = "") -> None:
    (root / "manifest.jsonl").write_text("".join(line + "\n" for line in lines) + tail)


def test_round_trip_and_accessors(tmp_path):
    rec = VideoRecord.model_validate(record("a", tmp_path))
    assert VideoRecord.model_validate_json(rec.line()) == rec
    write(tmp_path, [rec.line()])
    (loaded,) = load_manifest(tmp_path)
    assert loaded == rec
    assert loaded.angles_array().shape == (2, 3) and loaded.angles_array().dtype.name == "float32"
    assert loaded.crop_paths(tmp_path) == [tmp_path / c for c in rec.crops]
    assert loaded.video_path() == Path("/corpus/a.mp4")
    assert loaded.video_path("/mnt/data") == Path("/mnt/data/a.mp4")
    assert load_manifest(tmp_path / "manifest.jsonl") == [rec]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"delta": 70.0}, "do not match the angles"),
        ({"ranges": [40.0, 340.0, 5.0], "delta": 385.0}, "do not match the angles"),  # naive yaw range
        ({"format": FORMAT_VERSION + 1}, "rebuild the dataset"),
        ({"frame_indices": [4, 0]}, "strictly increasing"),
        ({"frame_indices": [0, 9]}, "only 9 frames were decoded"),
        ({"crops": ["/abs/f.png", "crops/a/f000004.png"]}, "must be relative"),
        ({"crops": ["crops/../../etc/passwd", "crops/a/f000004.png"]}, "must be relative"),
        ({"angles": [[1.0, 2.0, 3.0]]}, "do not match the 2 frame_indices"),
        ({"prompt": ""}, "prompt"),
        ({"extra": 1}, "extra"),
        ({"angles": [[1.0, 2.0], [3.0, 4.0]]}, "angles"),
    ],
)
def test_invalid_records_are_rejected_with_the_line_number(tmp_path, changes, message):
    good = json.dumps(record("a", tmp_path))
    bad = json.dumps(record("b", tmp_path, **changes))
    write(tmp_path, [good, bad, json.dumps(record("c", tmp_path))])
    with pytest.raises(ManifestError, match=rf"manifest.jsonl, line 2: .*{message}") as info:
        load_manifest(tmp_path)
    assert info.value.line == 2 and "on_error='skip'" in str(info.value)


def test_skip_reports_every_bad_line_and_keeps_the_good_ones(tmp_path):
    lines = [
        json.dumps(record("a", tmp_path)),
        "{not json",
        json.dumps(record("a", tmp_path)),  # duplicate key
        json.dumps(record("b", tmp_path)),
        json.dumps(record("d", tmp_path, crops=["crops/d/missing.png", "crops/d/f000004.png"])),
    ]
    write(tmp_path, lines, tail=json.dumps(record("e", tmp_path))[:40])  # interrupted last write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_manifest(tmp_path, on_error="skip")
    assert [r.key for r in records] == ["a.mp4", "b.mp4"]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4
    assert "line 2: not valid JSON" in messages[0]
    assert "line 3: duplicate key 'a.mp4' (first on line 1)" in messages[1]
    assert "line 5: crop file 'crops/d/missing.png' is missing" in messages[2]
    assert "line 6: truncated last line" in messages[3] and "rerun" in messages[3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [r.key for r in load_manifest(tmp_path, on_error="skip", check_files=False)] == [
            "a.mp4",
            "b.mp4",
            "d.mp4",
        ]


def test_missing_manifest_and_bad_option(tmp_path):
    with pytest.raises(ManifestError, match="No manifest at .*build_dataset.py build"):
        load_manifest(tmp_path)
    with pytest.raises(ValueError, match="'raise' or 'skip'"):
        load_manifest(tmp_path, on_error="ignore")


def test_journal_lines_are_whole_and_the_tail_is_repaired(tmp_path):
    path = tmp_path / "log.jsonl"
    journal.append_line(path, {"a": 1})
    journal.append_line(path, '{"b":2}')
    with open(path, "ab") as fh:
        fh.write(b'{"c":')
    assert [c for _, _, c in journal.iter_lines(path)] == [True, True, False]
    assert journal.repair_tail(path) == '{"c":'
    assert path.read_text() == '{"a":1}\n{"b":2}\n'
    assert journal.repair_tail(path) is None
    with pytest.raises(ValueError, match="newline"):
        journal.append_line(path, "x\ny")
