"""Captioners: sidecar and table files, the Qwen2.5-VL prompt and error paths, and a tiny Qwen2.5-VL
built from the real transformers classes (random weights) that generates through the real code path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faithfulfaces_core.dataset.build import build_dataset
from faithfulfaces_core.dataset.captions import (
    DEFAULT_CAPTION_PROMPT,
    CaptionMissing,
    CaptionRequest,
    QwenVLCaptioner,
    SidecarCaptioner,
    TableCaptioner,
    caption_messages,
    check_qwen_folder,
    pick_frames,
)
from faithfulfaces_core.dataset.curate import CurationSettings
from faithfulfaces_core.dataset.decode import FrameSampling
from faithfulfaces_core.dataset.sources import VideoRef
from faithfulfaces_core.errors import FaithfulFacesError, MissingModelError
from faithfulfaces_core.tiny.scripted import ScriptedDetector, ScriptedPoseEstimator, write_gray_video


def request(path: Path, key: str | None = None, frames=(0, 1, 2)) -> CaptionRequest:
    frames = tuple(frames)
    return CaptionRequest(
        ref=VideoRef(key or path.name, path), frame_indices=frames, frames_decoded=frames[-1] + 1, fps=8.0
    )


def test_sidecar(tmp_path):
    video = tmp_path / "clip.mp4"
    captioner = SidecarCaptioner()
    with pytest.raises(CaptionMissing, match=f"no caption file {tmp_path / 'clip.txt'}"):
        captioner.caption(request(video))
    (tmp_path / "clip.txt").write_text("  A woman\n turns her head. \n")
    assert captioner.caption(request(video)) == "A woman turns her head."
    (tmp_path / "clip.txt").write_text(" \n")
    with pytest.raises(CaptionMissing, match="is empty"):
        captioner.caption(request(video))
    (tmp_path / "clip.caption").write_text("other suffix")
    assert SidecarCaptioner("caption").caption(request(video)) == "other suffix"


def test_table_csv_and_jsonl(tmp_path):
    corpus = tmp_path / "corpus"
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text(
        f'video,caption\nsub/a.mp4,"caption, a"\n{corpus / "b.mp4"},caption b\nc.mp4,caption c\n'
    )
    table = TableCaptioner(csv_file)
    assert table.name == "table:captions.csv"
    assert table.caption(request(corpus / "sub" / "a.mp4", "sub/a.mp4")) == "caption, a"  # by key
    assert table.caption(request(corpus / "b.mp4", "b.mp4")) == "caption b"  # by absolute path
    assert table.caption(request(corpus / "x" / "c.mp4", "x/c.mp4")) == "caption c"  # by unique file name
    with pytest.raises(CaptionMissing, match="no row for 'd.mp4'"):
        table.caption(request(corpus / "d.mp4"))
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text(
        json.dumps({"video": "one/a.mp4", "prompt": "p1"})
        + "\n\n"
        + json.dumps({"video": "two/a.mp4", "caption": "p2"})
        + "\n"
    )
    table = TableCaptioner(jsonl)
    assert table.caption(request(corpus / "one" / "a.mp4", "one/a.mp4")) == "p1"
    with pytest.raises(CaptionMissing):  # 'a.mp4' is ambiguous by file name
        table.caption(request(corpus / "three" / "a.mp4", "three/a.mp4"))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "t.csv",
            "video,caption\na.mp4,x\na.mp4,y\n",
            r"line 3: video 'a.mp4' already has another caption on line 2",
        ),
        ("t.csv", "file,text\na.mp4,x\n", r"line 2: needs a 'video' and a 'caption'"),
        ("t.jsonl", '{"video": "a.mp4", "caption": "x"}\n{oops\n', r"line 2: not valid JSON"),
        ("t.jsonl", '["a.mp4", "x"]\n', r"line 1: expected an object"),
    ],
)
def test_table_errors(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(FaithfulFacesError, match=message):
        TableCaptioner(tmp_path / name)
    with pytest.raises(FaithfulFacesError, match="does not exist"):
        TableCaptioner(tmp_path / "none.csv")


def test_a_kept_video_without_caption_is_rejected_and_the_run_goes_on(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("with.mp4", "without.mp4"):
        write_gray_video(videos / name, [16, 24])
    (videos / "with.txt").write_text("has a caption")
    box = [(8, 8, 56, 56)]
    result = build_dataset(
        [videos],
        tmp_path / "out",
        detector=ScriptedDetector({16: box, 24: box}),
        estimator=ScriptedPoseEstimator({16: (0, 0, 0), 24: (90, 90, 0)}),
        captioner=SidecarCaptioner(),
        settings=CurationSettings.paper(sampling=FrameSampling(every=1)),
        progress=False,
        print_summary=False,
    )
    assert [r.key for r in result.records] == ["with.mp4"]
    done = [json.loads(x) for x in (tmp_path / "out" / "done.jsonl").read_text().splitlines()]
    assert [(d["key"], d["outcome"], d["reason"]) for d in done] == [
        ("with.mp4", "kept", "pose_variation_ok"),
        ("without.mp4", "rejected", "no_caption"),
    ]
    assert "without.txt" in done[1]["detail"]
    assert sorted(p.name for p in (tmp_path / "out" / "crops").iterdir()) == [
        Path(result.records[0].crops[0]).parent.name
    ]


# ------------------------------------------------------------------ Qwen2.5-VL: prompt and errors
def test_default_prompt_asks_for_appearance_actions_and_background():
    text = DEFAULT_CAPTION_PROMPT.lower()
    assert all(word in text for word in ("appearance", "actions", "background"))
    assert caption_messages("describe") == [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "describe"}]}
    ]


def test_pick_frames():
    assert pick_frames([3, 5, 9], 8) == [3, 5, 9]
    assert pick_frames(list(range(0, 100, 2)), 4) == [0, 32, 66, 98]
    with pytest.raises(FaithfulFacesError, match="at least 1 frame"):
        pick_frames([1], 0)


def test_qwen_folder_errors(tmp_path):
    missing = tmp_path / "Qwen2.5-VL-7B-Instruct"
    with pytest.raises(
        MissingModelError,
        match=rf"folder {missing} does not exist.*huggingface-cli download "
        r"Qwen/Qwen2.5-VL-7B-Instruct --local-dir .*nothing is downloaded",
    ):
        QwenVLCaptioner(missing)
    missing.mkdir()
    with pytest.raises(MissingModelError, match="has no config.json"):
        check_qwen_folder(missing)
    (missing / "config.json").write_text("{broken")
    with pytest.raises(FaithfulFacesError, match="is not valid JSON"):
        check_qwen_folder(missing)
    (missing / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(FaithfulFacesError, match="holds a 'llava' model.*'qwen2_5_vl'"):
        check_qwen_folder(missing)
    (missing / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    assert check_qwen_folder(missing) == missing
    with pytest.raises(MissingModelError, match="cannot load the model from .*complete model"):
        QwenVLCaptioner(missing, device="cpu")


# ------------------------------------------------------------------ Qwen2.5-VL: a tiny real model
WORDS = [
    "a",
    "person",
    "with",
    "short",
    "hair",
    "turns",
    "head",
    "in",
    "room",
    "describe",
    "the",
    "video",
    "and",
]
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen(folder: Path) -> Path:
    """A 2-layer Qwen2.5-VL with a word-level tokenizer and the real processor classes, saved locally."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok = Tokenizer(
        models.WordLevel({w: i for i, w in enumerate([*SPECIALS, "[UNK]", *WORDS])}, unk_token="[UNK]")
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="[UNK]"
    )
    pixels = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**pixels),
        chat_template=TEMPLATE,
    )
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "bos_token_id": ids["<|im_start|>"],
            "eos_token_id": ids["<|im_end|>"],
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0},
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_qwen(tmp_path_factory.mktemp("qwen") / "tiny-qwen2.5-vl")


def test_tiny_qwen_captions_a_video(tiny_qwen, tmp_path):
    video = tmp_path / "clip.mp4"
    write_gray_video(video, [40 + 10 * i for i in range(12)], size=64, fps=8)
    captioner = QwenVLCaptioner(
        tiny_qwen,
        prompt="describe the video",
        num_frames=4,
        max_new_tokens=6,
        device="cpu",
        max_pixels=28 * 28 * 16,
    )
    assert captioner.name == "qwen2.5-vl:tiny-qwen2.5-vl"
    assert captioner.chat_text() == (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>describe the video<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    req = request(video, frames=range(0, 12, 1))
    indices = pick_frames(req.frame_indices, 4)
    assert indices == [0, 4, 7, 11]
    frames = np.zeros((4, 64, 64, 3), np.uint8)
    batch = captioner.inputs(frames, req, indices)
    t, h, w = batch["video_grid_thw"][0].tolist()
    assert t == 2 and batch["pixel_values_videos"].shape[0] == t * h * w
    assert int((batch["input_ids"] == 6).sum()) == t * h * w // 4  # <|video_pad|> expanded, merge 2x2
    # the video's real frame rate reaches the temporal positions: 4 of 12 frames at 8 fps, 2 frames per grid step
    assert float(batch["second_per_grid_ts"][0]) == pytest.approx(2 / (4 / 12 * 8.0), rel=1e-5)
    big = np.zeros((4, 256, 256, 3), np.uint8)
    for budget in (28 * 28 * 4, 28 * 28 * 16):  # the pixel budget reaches the video processor
        captioner.max_pixels = budget
        _, h, w = captioner.inputs(big, req, indices)["video_grid_thw"][0].tolist()
        assert budget // 2 < h * w * 14 * 14 <= budget
    text = captioner.caption(req)
    assert text == captioner.caption(req)  # greedy decoding is deterministic
    assert text and all(word in WORDS for word in text.split()), text


def test_qwen_captioner_through_the_builder_spec(tiny_qwen, tmp_path):
    from faithfulfaces_core.dataset.backends import model_spec

    spec = model_spec(
        "captioner",
        "qwen2.5-vl",
        {"model_path": str(tiny_qwen), "device": "cpu", "num_frames": 2, "max_new_tokens": 3},
    )
    captioner = spec.build()
    assert isinstance(captioner, QwenVLCaptioner) and captioner.num_frames == 2
