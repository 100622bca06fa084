"""What each training step sees: the dataset index, the batch plan and the step batches.

**Index.** The manifest (``dataset.manifest``) is read once. A video is usable for flow matching
when its file exists and it has enough decoded frames for a clip; it is an *identity* for the
aligner when ``views_per_identity`` of its crops (2 by default, the paper's pair) differ in pose
pairwise by at least ``min_pose_difference`` (circular Σ|Δangle|, degrees). Bad manifest lines,
missing videos, too-short videos, videos without such a pair and (with more than 2 views)
videos with fewer such crops than asked are skipped, counted and reported (``DataReport``): a
video is never given fewer views than the others.

**Plan.** Every draw is a pure function of ``(seed, g)`` where ``g = micro_step · world + rank`` is
the global micro-batch number: the video order is a fresh permutation per epoch, the reference
crop of each drawn video, the aligner's identities (distinct, so no false negatives) and their
crops, the noise and timesteps. The data position to resume from is therefore just the
micro-step count, and any number of loader workers gives the same batches.

**Batches.** ``StepBatches[micro]`` loads one micro-batch for this process: the clips (decoded,
resized and centre-cropped by diffusers' ``VideoProcessor``) or their cached latents, the
prompts or their cached embeddings, the reference faces, and the aligner's views.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FaithfulFacesError
from ..pose.rotation import angle_difference

_VIDEO_ORDER, _REFERENCE, _PAIRS, _NOISE = 17, 23, 29, 31  # stream tags of the seeded draws


def pose_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ over (pitch, yaw, roll) of the circular angle difference, degrees: ``[N, 3]``, ``[M, 3]`` → ``[N, M]``."""
    return angle_difference(a[:, None, :], b[None, :, :]).sum(-1)


def clip_frame_indices(num_frames: int, stride: int) -> list[int]:
    """The decoded-frame ordinals of a clip: ``0, stride, 2·stride, ...`` (``num_frames`` of them)."""
    return [i * stride for i in range(num_frames)]


def spread(n: int, k: int) -> tuple[int, ...]:
    """Up to ``k`` indices evenly spread over ``range(n)`` (first and last included)."""
    return tuple(int(i) for i in np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(int)))


@dataclass(frozen=True)
class VideoItem:
    """One manifest record as the trainer uses it."""

    key: str
    prompt: str
    video: Path
    crops: tuple[Path, ...]
    angles: np.ndarray  # [N, 3] degrees
    candidates: tuple[int, ...]  # crop indices that may be the reference face
    frames_decoded: int
    usable: bool  # file present and long enough for a clip
    first_frame: int = 0  # the sample's first frame in the video (a shot's start)

    def clip_frames(self, frames: Sequence[int]) -> list[int]:
        """Clip ordinals ``frames`` (from the sample's start) → ordinals in the video file."""
        return [self.first_frame + f for f in frames]


@dataclass(frozen=True)
class Identity:
    """A video whose crops contain ``views_per_identity`` crops at pairwise different poses."""

    item: int  # index into DatasetIndex.items
    anchors: np.ndarray  # crop indices that have a partner (the first view is drawn from these)
    far: np.ndarray  # [N, N] bool: crops i and j differ in pose by at least min_pose_difference


def _has_views(far: np.ndarray, mask: np.ndarray, need: int) -> bool:
    """Whether ``need`` crops among ``mask`` ``[N]`` bool are pairwise far apart (``far`` ``[N, N]``).

    A depth-first clique search in increasing crop order (each set is tried once); ``need`` is at
    most ``views_per_identity`` ≤ 8, and a pose-spread video answers on its first branch.
    """
    if need <= 0:
        return True
    idx = np.flatnonzero(mask)
    if need == 1 or idx.size < need:
        return idx.size >= need
    for position, c in enumerate(idx):
        if idx.size - position < need:
            break
        later = mask & far[c]
        later[: c + 1] = False
        if _has_views(far, later, need - 1):
            return True
    return False


def _identity(item: int, angles: np.ndarray, min_pose_difference: float, views: int) -> tuple[Identity | None, int]:
    """The record's ``Identity``, or ``None`` and the most pairwise-far crops it has (0 when not even 2)."""
    far = pose_distance(angles, angles) >= max(min_pose_difference, 1e-6)
    anchors = np.flatnonzero(far.any(1))
    if not anchors.size:
        return None, 0
    everything = np.ones(len(far), dtype=bool)
    if views > 2 and not _has_views(far, everything, views):
        return None, next(k for k in range(views - 1, 1, -1) if _has_views(far, everything, k))
    return Identity(item, anchors, far), views


def draw_views(identity: Identity, views: int, rng: np.random.Generator) -> tuple[int, ...]:
    """``views`` crop indices of ``identity``, pairwise far apart in pose, drawn with ``rng``.

    View k is uniform among the crops far from views 0..k−1 that still leave room for the
    remaining views (a drawn crop that does not is struck off and the draw repeated). With two
    views this is the paper's pair: a crop that has a partner, then one of its partners.
    """
    chosen: list[int] = []
    mask = None
    for k in range(views):
        candidates = identity.anchors if mask is None else np.flatnonzero(mask)
        while True:
            c = int(candidates[int(rng.integers(len(candidates)))])
            row = identity.far[c] if mask is None else mask & identity.far[c]
            if _has_views(identity.far, row, views - k - 1):
                break
            candidates = candidates[candidates != c]
        chosen.append(c)
        mask = row
    return tuple(chosen)


@dataclass
class DataReport:
    """What was kept and what was skipped, and why."""

    manifest: str
    lines: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    missing_videos: list[str] = field(default_factory=list)
    too_short: list[str] = field(default_factory=list)
    no_pose_pair: list[str] = field(default_factory=list)
    too_few_views: list[str] = field(default_factory=list)
    videos: int = 0
    identities: int = 0
    views_per_identity: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest, "lines": self.lines, "records": self.lines - len(self.bad_lines),
            "bad_lines": [{"line": n, "problem": m} for n, m in self.bad_lines],
            "missing_videos": self.missing_videos, "too_short": self.too_short,
            "no_pose_pair": self.no_pose_pair, "too_few_views": self.too_few_views, "videos": self.videos,
            "identities": self.identities, "views_per_identity": self.views_per_identity,
        }

    def summary(self) -> str:
        parts = [f"{self.videos} videos for flow matching, {self.identities} identities for InfoNCE"]
        skipped = [(len(self.bad_lines), "bad manifest lines skipped"),
                   (len(self.missing_videos), "videos missing on disk (aligner only)"),
                   (len(self.too_short), "videos too short for a clip (aligner only)"),
                   (len(self.no_pose_pair), "videos without two crops at different poses (flow matching only)"),
                   (len(self.too_few_views), f"videos with fewer than {self.views_per_identity} crops at pairwise "
                                             "different poses (flow matching only)")]
        parts += [f"{n} {what}" for n, what in skipped if n]
        return "; ".join(parts)

    def details(self, limit: int = 20) -> list[str]:
        """One line per problem (the first ``limit`` of each kind)."""
        out = [f"{self.manifest}, line {n}: {m}" for n, m in self.bad_lines[:limit]]
        out += [f"video missing: {k}" for k in self.missing_videos[:limit]]
        out += [f"video too short: {k}" for k in self.too_short[:limit]]
        out += [f"no pose pair: {k}" for k in self.no_pose_pair[:limit]]
        out += [f"too few views for InfoNCE: {k}" for k in self.too_few_views[:limit]]
        return out


@dataclass
class DatasetIndex:
    items: list[VideoItem]
    videos: list[int]  # item indices usable for flow matching
    identities: list[Identity]
    report: DataReport


def index_dataset(data_cfg, *, num_frames: int | None = None, check_batches: bool = True) -> DatasetIndex:
    """Read the manifest of ``data_cfg.dataset_dir`` and decide what each record is used for.

    Raises a ``FaithfulFacesError`` naming the fix when nothing is left for flow matching, when
    fewer than two identities are left (InfoNCE has no negatives) or when a batch size exceeds
    what the data holds.
    """
    from ..dataset.manifest import MANIFEST_NAME, ManifestError, read_manifest

    root = Path(data_cfg.dataset_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"No manifest at {path}. Build the dataset first: python training/build_dataset.py build VIDEOS... "
            f"--out {root}", path=path)
    records, problems = read_manifest(path, check_files=True)
    views = data_cfg.views_per_identity
    report = DataReport(manifest=str(path), lines=len(records) + len(problems),
                        bad_lines=[(p.line, p.message) for p in problems], views_per_identity=views)
    if problems and data_cfg.on_bad_line == "raise":
        p = problems[0]
        raise ManifestError(
            f"{path}, line {p.line}: {p.message}. Fix or delete that line, or set data.on_bad_line=skip to leave "
            "bad lines out.", path=path, line=p.line)
    frames = num_frames if num_frames is not None else data_cfg.num_frames
    needed = clip_frame_indices(frames, data_cfg.frame_stride)[-1] + 1
    items, videos, identities = [], [], []
    for record in records:
        video = record.video_path(data_cfg.corpus_root)
        present = video.is_file()
        long_enough = record.length >= needed
        if not present:
            report.missing_videos.append(record.key)
        elif not long_enough:
            report.too_short.append(f"{record.key} ({record.length} frames, {needed} needed)")
        angles = record.angles_array()
        item = VideoItem(
            key=record.key, prompt=record.prompt, video=video, crops=tuple(record.crop_paths(root)), angles=angles,
            candidates=spread(len(record.crops), data_cfg.reference_candidates),
            frames_decoded=record.frames_decoded, usable=present and long_enough, first_frame=record.first_frame,
        )
        index = len(items)
        items.append(item)
        if item.usable:
            videos.append(index)
        identity, most = _identity(index, angles, data_cfg.min_pose_difference, views)
        if identity is not None:
            identities.append(identity)
        elif most == 0:
            report.no_pose_pair.append(record.key)
        else:
            report.too_few_views.append(f"{record.key} (at most {most} of {views} views)")
    report.videos, report.identities = len(videos), len(identities)
    if check_batches:
        _check_counts(data_cfg, report)
    return DatasetIndex(items, videos, identities, report)


def _check_counts(data_cfg, report: DataReport) -> None:
    where = f"the dataset {data_cfg.dataset_dir} ({report.summary()})"
    if report.videos == 0:
        raise FaithfulFacesError(
            f"No video is usable for flow matching in {where}. Check data.corpus_root (videos are looked up at the "
            f"recorded paths or corpus_root/key) and that videos have at least data.num_frames × data.frame_stride "
            "frames, or lower data.num_frames.")
    views = report.views_per_identity
    fewer = f", lower data.views_per_identity (now {views})" if report.too_few_views else ""
    if report.identities < 2:
        raise FaithfulFacesError(
            f"InfoNCE needs at least 2 identities (videos with {views} crops at pairwise different poses) — the other "
            f"identities of a batch are its negatives — but {where} has {report.identities}. Add videos of other "
            f"people{fewer}, or lower data.min_pose_difference if the crops' poses are close.")
    if data_cfg.aligner_batch_size > report.identities:
        raise FaithfulFacesError(
            f"data.aligner_batch_size={data_cfg.aligner_batch_size} identities per batch, but {where} has only "
            f"{report.identities} identities (a batch never repeats one: that would be a false negative). Set "
            f"data.aligner_batch_size to at most {report.identities}{fewer}, or add videos.")


class BatchPlan:
    """The draws of global micro-batch ``g``, a pure function of ``(seed, g)`` (see the module docstring)."""

    def __init__(self, index: DatasetIndex, *, seed: int, batch_size: int, aligner_batch_size: int,
                 views_per_identity: int = 2) -> None:
        self.index = index
        self.seed = int(seed)
        self.batch_size = batch_size
        self.aligner_batch_size = aligner_batch_size
        self.views_per_identity = views_per_identity

    def _rng(self, tag: int, n: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, tag, n])

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a plan lives as long as its run
    def _epoch(self, epoch: int) -> np.ndarray:
        return self._rng(_VIDEO_ORDER, epoch).permutation(len(self.index.videos))

    def videos(self, g: int) -> list[tuple[int, int]]:
        """``[(item index, reference crop index)]`` of the ``batch_size`` videos of micro-batch ``g``."""
        n = len(self.index.videos)
        out = []
        for position in range(g * self.batch_size, (g + 1) * self.batch_size):
            item = self.index.videos[int(self._epoch(position // n)[position % n])]
            candidates = self.index.items[item].candidates
            out.append((item, candidates[int(self._rng(_REFERENCE, position).integers(len(candidates)))]))
        return out

    def identity_views(self, g: int) -> list[tuple[int, tuple[int, ...]]]:
        """``[(item index, (crop of view 0, ..., crop of view V−1))]``: distinct identities, each with
        ``views_per_identity`` crops at pairwise different poses (``draw_views``)."""
        rng = self._rng(_PAIRS, g)
        chosen = rng.choice(len(self.index.identities), size=self.aligner_batch_size, replace=False)
        identities = [self.index.identities[int(k)] for k in chosen]
        return [(identity.item, draw_views(identity, self.views_per_identity, rng)) for identity in identities]

    def noise_seed(self, g: int) -> int:
        """Seed of the noise and timesteps of micro-batch ``g``."""
        return int(np.random.SeedSequence([self.seed, _NOISE, g]).generate_state(1, dtype=np.uint64)[0] >> 1)


# --- loading -------------------------------------------------------------------------------------


def read_image(path: Path) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB; unreadable files name themselves."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise FaithfulFacesError(
            f"Face crop {path} cannot be read ({exc}); rebuild the dataset entry or delete its manifest line.") from exc


def face_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """``[H, W, 3]`` uint8 images → ``[N, 3, size, size]`` float 0..1, resized as the aligner resizes."""
    out = []
    for image in images:
        x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.clamp_(0.0, 1.0))
    return torch.cat(out)


def read_clip(video: Path, frames: Sequence[int], height: int, width: int) -> torch.Tensor:
    """Decode ``frames`` of ``video`` → ``[3, T, height, width]`` float in [-1, 1].

    Resizing keeps the aspect ratio and centre-crops (diffusers' ``VideoProcessor`` with
    ``resize_mode="crop"``), so faces are not stretched.
    """
    from diffusers.video_processor import VideoProcessor
    from PIL import Image

    from ..dataset.decode import read_frames

    images = [Image.fromarray(frame) for frame in read_frames(video, frames)]
    processor = VideoProcessor(vae_scale_factor=8)
    return processor.preprocess_video(images, height, width, resize_mode="crop")[0]


class StepBatches(torch.utils.data.Dataset):
    """``self[micro]``: micro-batch ``micro`` of process ``rank`` of ``world`` (a dict, see ``__getitem__``)."""

    def __init__(self, index: DatasetIndex, plan: BatchPlan, data_cfg, *, face_size: int, rank: int = 0,
                 world: int = 1, cache=None) -> None:
        self.index = index
        self.plan = plan
        self.cfg = data_cfg
        self.face_size = face_size
        self.rank = rank
        self.world = world
        self.cache = cache
        self.frames = clip_frame_indices(data_cfg.num_frames, data_cfg.frame_stride)

    def __len__(self) -> int:  # the sampler decides which micro-steps are read
        return 2**62

    def global_index(self, micro: int) -> int:
        return micro * self.world + self.rank

    def __getitem__(self, micro: int) -> dict[str, Any]:
        """Keys: ``micro``, ``g``, ``noise_seed``, ``prompts`` [B], ``reference_faces`` [B, 3, S, S] 0..1,
        ``reference_euler`` [B, 3]; then either ``clips`` [B, 3, T, H, W] in [-1, 1] and
        ``reference_images`` (B × [h, w, 3] uint8), or (cache) ``latents`` [B, 16, T', h', w'],
        ``reference_parts`` [B, 32, 1, h', w'] and ``prompt_embeds`` [B, L, D]; and the aligner batch,
        view-major: ``view_faces`` [V, A, 3, S, S] and ``view_euler`` [V, A, 3] (row a of every view is
        identity a)."""
        g = self.global_index(micro)
        items = self.index.items
        chosen = self.plan.videos(g)
        references = [read_image(items[i].crops[c]) for i, c in chosen]
        batch: dict[str, Any] = {
            "micro": micro, "g": g, "noise_seed": self.plan.noise_seed(g),
            "keys": [items[i].key for i, _ in chosen],
            "prompts": [items[i].prompt for i, _ in chosen],
            "reference_faces": face_tensor(references, self.face_size),
            "reference_euler": torch.from_numpy(np.stack([items[i].angles[c] for i, c in chosen])),
        }
        if self.cache is None:
            batch["clips"] = torch.stack([read_clip(items[i].video, items[i].clip_frames(self.frames), self.cfg.height, self.cfg.width)
                                          for i, _ in chosen])
            batch["reference_images"] = references
        else:
            parts = [self.cache.read_video(items[i], c) for i, c in chosen]
            batch["latents"] = torch.stack([p[0] for p in parts])
            batch["reference_parts"] = torch.stack([p[1] for p in parts])
            batch["prompt_embeds"] = torch.stack([self.cache.read_prompt(items[i].prompt) for i, _ in chosen])
        batch.update(self.aligner_views(g))
        return batch

    def aligner_views(self, g: int) -> dict[str, torch.Tensor]:
        """The aligner batch of micro-batch ``g``: ``view_faces`` [V, A, 3, S, S] 0..1 and ``view_euler``
        [V, A, 3] degrees, view-major (the order the aligner's forward and the loss take them)."""
        items = self.index.items
        chosen = self.plan.identity_views(g)
        per_view = [[(items[i], crops[v]) for i, crops in chosen] for v in range(self.plan.views_per_identity)]
        faces = [face_tensor([read_image(item.crops[c]) for item, c in view], self.face_size) for view in per_view]
        euler = [np.stack([item.angles[c] for item, c in view]) for view in per_view]
        return {"view_faces": torch.stack(faces), "view_euler": torch.from_numpy(np.stack(euler))}


class MicroSteps(torch.utils.data.Sampler):
    """Micro-step numbers ``start, start+1, ..., stop-1`` (all 0 when overfitting one batch)."""

    def __init__(self, start: int, stop: int, *, repeat_first: bool = False) -> None:
        self.start, self.stop, self.repeat_first = start, stop, repeat_first

    def __iter__(self):
        for micro in range(self.start, self.stop):
            yield 0 if self.repeat_first else micro

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
