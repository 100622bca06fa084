"""Training data: the manifest index and its skip report, the promised errors, the seeded batch plan,
step batches; and the training config (files, overrides, validation, help)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faithfulfaces_core.dataset.manifest import ManifestError
from faithfulfaces_core.dataset.variation import pose_ranges
from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.training.config import (
    RESUME_MAY_CHANGE,
    SECTIONS,
    TrainConfig,
    load_config,
    options_help,
    resume_differences,
)
from faithfulfaces_core.training.data import (
    BatchPlan,
    Identity,
    MicroSteps,
    StepBatches,
    draw_views,
    index_dataset,
    pose_distance,
    spread,
)
from faithfulfaces_core.training.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data_src"), identities=6, crops_per_identity=5, frames=9)


@pytest.fixture
def dataset(source, tmp_path) -> Path:
    """A private copy the test may damage (videos are shared, crops and manifest copied)."""
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("videos"))
    return root


def data_cfg(root: Path, **changes):
    values = {"dataset_dir": str(root), "height": 32, "width": 32, "num_frames": 5, "frame_stride": 2,
              "aligner_batch_size": 3, "batch_size": 2, "reference_candidates": 3, **changes}
    return TrainConfig.model_validate({"data": values}).data


def lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def write_lines(root: Path, records: list, extra: list[str] = ()) -> None:
    text = [json.dumps(r) if isinstance(r, dict) else r for r in records] + list(extra)
    (root / "manifest.jsonl").write_text("".join(t + "\n" for t in text))


# --- index and report ------------------------------------------------------------------------------

def test_clean_dataset_is_fully_used(dataset):
    index = index_dataset(data_cfg(dataset))
    assert index.report.videos == 6 and index.report.identities == 6
    assert index.report.summary() == "6 videos for flow matching, 6 identities for InfoNCE"
    assert index.items[0].candidates == spread(5, 3) == (0, 2, 4)


def test_bad_lines_and_a_missing_crop_are_skipped_counted_and_reported(dataset):
    records = lines(dataset)
    (dataset / records[1]["crops"][2]).unlink()
    write_lines(dataset, records, ["{not json", json.dumps({**records[0], "key": "x.mp4", "delta": 1.0})])
    index = index_dataset(data_cfg(dataset))
    report = index.report
    assert report.lines == 8 and report.videos == 5 and report.identities == 5
    assert [n for n, _ in report.bad_lines] == [2, 7, 8]
    assert f"crop file '{records[1]['crops'][2]}' is missing" in report.bad_lines[0][1]
    assert "not valid JSON" in report.bad_lines[1][1] and "do not match the angles" in report.bad_lines[2][1]
    assert report.summary().endswith("3 bad manifest lines skipped")
    assert report.to_dict()["records"] == 5 and report.details()[0].startswith(f"{dataset / 'manifest.jsonl'}, line 2:")
    with pytest.raises(ManifestError, match=r"manifest.jsonl, line 2: crop file .* is missing.*on_bad_line=skip") as info:
        index_dataset(data_cfg(dataset, on_bad_line="raise"))
    assert info.value.line == 2


def test_missing_and_short_videos_serve_the_aligner_only(dataset, tmp_path):
    records = lines(dataset)
    records[0]["video"] = str(tmp_path / "gone.mp4")
    records[1].update(frame_indices=[0, 1, 2, 3, 4], frames_decoded=5, frames_sampled=5)  # a clip needs 9 frames
    write_lines(dataset, records)
    index = index_dataset(data_cfg(dataset))
    assert index.report.missing_videos == [records[0]["key"]]
    assert index.report.too_short == [f"{records[1]['key']} (5 frames, 9 needed)"]
    assert index.report.videos == 4 and index.report.identities == 6
    assert {index.items[i].key for i in index.videos} == {r["key"] for r in records[2:]}
    # corpus_root relocates every video: nothing is there
    with pytest.raises(FaithfulFacesError, match="No video is usable for flow matching.*data.corpus_root"):
        index_dataset(data_cfg(dataset, corpus_root=str(tmp_path / "elsewhere")))


def test_one_identity_has_no_negatives(dataset):
    records = lines(dataset)
    write_lines(dataset, records[:1])
    with pytest.raises(FaithfulFacesError, match=r"InfoNCE needs at least 2 identities .* has 1\. Add videos"):
        index_dataset(data_cfg(dataset, aligner_batch_size=2))


def test_crops_at_one_pose_are_no_identity(dataset):
    records = lines(dataset)
    same = records[0]["angles"][0]
    for r in records[1:]:
        r["angles"] = [same] * len(r["angles"])
        r["ranges"], r["delta"] = [0.0, 0.0, 0.0], 0.0
    write_lines(dataset, records)
    with pytest.raises(FaithfulFacesError, match="InfoNCE needs at least 2 identities") as info:
        index_dataset(data_cfg(dataset, aligner_batch_size=2))
    assert "5 videos without two crops at different poses" in str(info.value)
    index = index_dataset(data_cfg(dataset), check_batches=False)
    assert len(index.report.no_pose_pair) == 5


def test_aligner_batch_larger_than_the_identities_names_the_maximum(dataset):
    with pytest.raises(FaithfulFacesError, match=r"data.aligner_batch_size=7 .* only 6 identities.*at most 6"):
        index_dataset(data_cfg(dataset, aligner_batch_size=7))


def test_pose_distance_is_circular():
    a = np.array([[0.0, 170.0, 0.0]])
    b = np.array([[0.0, -170.0, 0.0], [10.0, 0.0, -5.0]])
    np.testing.assert_allclose(pose_distance(a, b), [[20.0, 185.0]])


# --- plan -------------------------------------------------------------------------------------------

def test_plan_draws_are_seeded_distinct_and_at_different_poses(dataset):
    cfg = data_cfg(dataset, min_pose_difference=40.0, aligner_batch_size=6)
    index = index_dataset(cfg)
    plan = BatchPlan(index, seed=3, batch_size=2, aligner_batch_size=6)
    pairs = plan.identity_views(5)
    assert pairs == BatchPlan(index, seed=3, batch_size=2, aligner_batch_size=6).identity_views(5)
    assert pairs != plan.identity_views(6)
    assert pairs != BatchPlan(index, seed=4, batch_size=2, aligner_batch_size=6).identity_views(5)
    assert len({item for item, _ in pairs}) == 6  # no identity twice: no false negatives
    for item, (a, b) in pairs:
        angles = index.items[item].angles
        assert pose_distance(angles[a : a + 1], angles[b : b + 1])[0, 0] >= 40.0
    # every epoch visits each video once; references come from the candidates
    seen = [v for g in range(3) for v in plan.videos(g)]
    assert sorted(i for i, _ in seen) == list(range(6))
    assert all(c in index.items[i].candidates for i, c in seen)
    assert plan.noise_seed(4) == plan.noise_seed(4) != plan.noise_seed(5)


def _paper_pairs(index, seed: int, g: int, size: int) -> list[tuple[int, tuple[int, int]]]:
    """The paper's pair draw written out: distinct identities; a crop with a partner, then one of
    its partners, from the same seeded stream (tag 29) the plan uses."""
    rng = np.random.default_rng([seed, 29, g])
    out = []
    for k in rng.choice(len(index.identities), size=size, replace=False):
        identity = index.identities[int(k)]
        angles = index.items[identity.item].angles
        far = pose_distance(angles, angles) >= 40.0
        anchors = np.flatnonzero(far.any(1))
        a = int(anchors[int(rng.integers(len(anchors)))])
        partners = np.flatnonzero(far[a])
        out.append((identity.item, (a, int(partners[rng.integers(len(partners))]))))
    return out


def test_two_views_are_the_paper_pairs(dataset):
    index = index_dataset(data_cfg(dataset, min_pose_difference=40.0, aligner_batch_size=5))
    plan = BatchPlan(index, seed=11, batch_size=1, aligner_batch_size=5)
    assert plan.views_per_identity == 2
    for g in range(20):
        assert plan.identity_views(g) == _paper_pairs(index, 11, g, 5), g


def test_three_views_are_pairwise_far_and_short_videos_are_reported(dataset):
    records = lines(dataset)
    # two pose clusters: any three crops hold two of one cluster, so this video has at most 2 views
    records[2]["angles"] = [[0.0, -40.0, 0.0], [0.0, -41.0, 0.0], [0.0, 40.0, 0.0], [0.0, 41.0, 0.0],
                            [0.0, 40.5, 0.0]]
    ranges = pose_ranges(np.array(records[2]["angles"]))
    records[2]["ranges"], records[2]["delta"] = [float(r) for r in ranges], float(ranges.sum())
    write_lines(dataset, records)
    cfg = data_cfg(dataset, views_per_identity=3, min_pose_difference=20.0, aligner_batch_size=5)
    index = index_dataset(cfg)
    report = index.report
    assert report.identities == 5 and report.videos == 6 and report.views_per_identity == 3
    assert report.too_few_views == [f"{records[2]['key']} (at most 2 of 3 views)"]
    assert report.summary().endswith("1 videos with fewer than 3 crops at pairwise different poses (flow matching only)")
    assert report.details() == [f"too few views for InfoNCE: {records[2]['key']} (at most 2 of 3 views)"]
    assert report.to_dict()["too_few_views"] == report.too_few_views and report.to_dict()["views_per_identity"] == 3
    plan = BatchPlan(index, seed=2, batch_size=2, aligner_batch_size=5, views_per_identity=3)
    for g in range(10):
        drawn = plan.identity_views(g)
        assert len({item for item, _ in drawn}) == 5 and all(len(set(crops)) == 3 for _, crops in drawn)
        for item, crops in drawn:
            angles = index.items[item].angles[list(crops)]
            far = pose_distance(angles, angles) >= 20.0
            assert far[~np.eye(3, dtype=bool)].all(), (item, crops)
    batch = StepBatches(index, plan, cfg, face_size=16)[4]
    assert batch["view_faces"].shape == (3, 5, 3, 16, 16) and batch["view_euler"].shape == (3, 5, 3)
    for v, crops in enumerate(zip(*(c for _, c in plan.identity_views(4)), strict=True)):
        expected = [index.items[i].angles[c] for (i, _), c in zip(plan.identity_views(4), crops, strict=True)]
        assert torch.equal(batch["view_euler"][v], torch.from_numpy(np.stack(expected)))
    # the batch asks for more identities than have 3 views: the error offers fewer views
    with pytest.raises(FaithfulFacesError, match=r"aligner_batch_size=6 .* only 5 identities.*at most 5, lower "
                                                 r"data.views_per_identity \(now 3\)"):
        index_dataset(data_cfg(dataset, views_per_identity=3, min_pose_difference=20.0, aligner_batch_size=6))


def test_draw_views_never_picks_a_crop_that_cannot_complete_the_set():
    """Crops 0, 1, 2 are pairwise far; crop 3 is far from 0 only, so it has a partner but no third view."""
    far = np.zeros((4, 4), dtype=bool)
    for i, j in ((0, 1), (0, 2), (1, 2), (0, 3)):
        far[i, j] = far[j, i] = True
    identity = Identity(item=0, anchors=np.arange(4), far=far)
    rng = np.random.default_rng(5)
    draws = [draw_views(identity, 3, rng) for _ in range(600)]
    assert {tuple(sorted(d)) for d in draws} == {(0, 1, 2)}
    firsts = np.bincount([d[0] for d in draws], minlength=4)
    assert firsts[3] == 0 and all(150 < n < 250 for n in firsts[:3]), firsts  # uniform over the crops that fit
    assert {draw_views(identity, 2, rng) for _ in range(200)} >= {(3, 0), (0, 3)}  # two views: crop 3 pairs


def test_processes_read_disjoint_videos(dataset):
    index = index_dataset(data_cfg(dataset))
    plan = BatchPlan(index, seed=0, batch_size=1, aligner_batch_size=3)
    cfg = data_cfg(dataset)
    ranks = [StepBatches(index, plan, cfg, face_size=16, rank=r, world=2) for r in (0, 1)]
    keys = [k for micro in range(3) for r in ranks for k in r[micro]["keys"]]
    assert sorted(keys) == sorted(item.key for item in index.items)


def test_step_batch_contents(dataset):
    cfg = data_cfg(dataset)
    index = index_dataset(cfg)
    batches = StepBatches(index, BatchPlan(index, seed=1, batch_size=2, aligner_batch_size=3), cfg, face_size=16)
    batch = batches[7]
    assert batch["micro"] == 7 and batch["g"] == 7 and len(batch["prompts"]) == 2
    assert batch["clips"].shape == (2, 3, 5, 32, 32) and -1.0 <= batch["clips"].min() < batch["clips"].max() <= 1.0
    assert batch["reference_faces"].shape == (2, 3, 16, 16) and batch["reference_euler"].shape == (2, 3)
    assert batch["view_faces"].shape == (2, 3, 3, 16, 16) and batch["view_euler"].shape == (2, 3, 3)
    assert not torch.equal(batch["view_faces"][0], batch["view_faces"][1])
    assert batch["reference_images"][0].shape == (32, 32, 3)
    again = batches[7]
    assert all(torch.equal(batch[k], again[k]) for k in ("clips", "view_faces", "view_euler"))
    assert list(MicroSteps(4, 7)) == [4, 5, 6] and list(MicroSteps(4, 7, repeat_first=True)) == [0, 0, 0]


# --- config -------------------------------------------------------------------------------------------

def test_config_files_of_every_format_and_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  batch_size: 3\noptim:\n  learning_rate: 2.0e-5\n")
    (tmp_path / "c.toml").write_text("[data]\nbatch_size = 3\n[optim]\nlearning_rate = 2e-5\n")
    (tmp_path / "c.json").write_text(json.dumps({"data": {"batch_size": 3}, "optim": {"learning_rate": 2e-5}}))
    configs = [load_config(tmp_path / f"c.{ext}") for ext in ("yaml", "toml", "json")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].data.batch_size == 3 and configs[0].optim.learning_rate == 2e-5
    cfg = load_config(tmp_path / "c.yaml", ["data.batch_size=5", "run.output_dir=/x/y", "lora.alpha=null",
                                            'aligner.config={"dim": 64}', "optim.learning_rate=1e-3",
                                            "data.cache_latents=true"])
    assert (cfg.data.batch_size, cfg.run.output_dir, cfg.lora.alpha) == (5, "/x/y", None)
    assert cfg.aligner.config == {"dim": 64} and cfg.optim.learning_rate == 1e-3 and cfg.data.cache_latents is True
    assert load_config(None, ["data.batch_size=5"]).optim.learning_rate == 1e-4  # defaults


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(FaithfulFacesError, match=r"data.batchsize: unknown option; known options in data: .*batch_size"):
        load_config(None, ["data.batchsize=2"])
    with pytest.raises(FaithfulFacesError, match=r"datas: unknown option; known sections: aligner, data"):
        load_config(None, ["datas.batch_size=2"])
    with pytest.raises(FaithfulFacesError, match=r"data.batch_size: Input should be greater than or equal to 1"):
        load_config(None, ["data.batch_size=0"])
    with pytest.raises(FaithfulFacesError, match=r"num_frames=80 is not of the form 4k\+1.*use 77 or 81.*"
                                                 r"height=100 is not a multiple of 16: use 96 or 112"):
        load_config(None, ["data.num_frames=80", "data.height=100"])
    with pytest.raises(FaithfulFacesError, match=r"data.views_per_identity: Input should be greater than or equal to 2"):
        load_config(None, ["data.views_per_identity=1"])
    with pytest.raises(FaithfulFacesError, match=r"data.views_per_identity: Input should be less than or equal to 8"):
        load_config(None, ["data.views_per_identity=9"])
    with pytest.raises(FaithfulFacesError, match=r"--set expects SECTION.KEY=VALUE"):
        load_config(None, ["batch_size"])
    with pytest.raises(FaithfulFacesError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.ini").write_text("x")
    with pytest.raises(FaithfulFacesError, match="use .yaml, .yml, .toml or .json"):
        load_config(tmp_path / "bad.ini")
    (tmp_path / "bad.yaml").write_text("data: [1, 2")
    with pytest.raises(FaithfulFacesError, match="cannot be parsed"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FaithfulFacesError, match=r"model.diffusers_dir and data.dataset_dir must be set.*--set"):
        TrainConfig().require_paths()


def test_every_option_has_a_default_and_a_help_line():
    text = options_help()
    for section, cls in SECTIONS.items():
        for name, field in cls.model_fields.items():
            assert field.description, f"{section}.{name} has no description"
            assert f"  {section}.{name} = " in text
    assert "data.aligner_batch_size = 1024" in text and "objective.flow_shift = 5.0" in text
    assert "lora.rank = 128" in text and "objective.infonce_weight = 1.0" in text
    assert "data.views_per_identity = 2" in text and "the aligner batch grows views/2 times" in text


def test_resume_differences_ignore_only_the_harmless_options():
    a = load_config(None, ["data.batch_size=2"])
    b = load_config(None, ["data.batch_size=2", "run.max_steps=9", "data.num_workers=0", "run.output_dir=/o"])
    assert resume_differences(a, b) == [] and a.fingerprint() == b.fingerprint()
    c = load_config(None, ["data.batch_size=3", "optim.learning_rate=1e-3"])
    assert resume_differences(a, c) == ["data.batch_size", "optim.learning_rate"]
    assert all(key in a.flat() for key in RESUME_MAY_CHANGE)
