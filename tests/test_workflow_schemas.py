"""Workflow tooling against both shapes of ComfyUI's core video nodes (no server needed).

The 0.3.75 entries are plain combos; the 0.33 entries are what ComfyUI 0.33's ``/object_info``
answers for ``SaveVideo`` (``format`` a dynamic combo whose options hold ``codec``, which holds
``encoding``; a hidden legacy ``codec``) and ``CreateVideo`` (an optional ``bit_depth`` widget).
The widget orders below are the ones the frontend (1.49.6 and 1.58.1) serialises for those nodes.
"""

from __future__ import annotations

import copy

import pytest

from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.workflow import api_to_ui, complete_prompt, ui_to_api, walk_inputs, widget_default

LOAD = {"input": {"required": {"image": [["face.png", "other.png"], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"]}


def _encoding(crf_default: float, crf_max: float) -> list:
    reencode = {"required": {"crf": ["FLOAT", {"default": crf_default, "min": 0.0, "max": crf_max, "step": 1.0}],
                             "color_space": ["COMBO", {"default": "auto", "options": ["auto", "sRGB", "HDR", "HDR PQ"]}]}}
    return ["COMFY_DYNAMICCOMBO_V3", {"display_name": "encoding mode", "options": [
        {"key": "auto", "inputs": {"required": {}}}, {"key": "re-encode", "inputs": reencode}]}]


def _codec(keys: list[str], **extra) -> list:
    options = [{"key": "auto", "inputs": {"required": {}}}]
    options += [{"key": k, "inputs": {"required": {}, "optional": {"encoding": _encoding(23.0, 51.0)}}}
                for k in keys if k != "auto"]
    return ["COMFY_DYNAMICCOMBO_V3", {"options": options, **extra}]


def object_info_033() -> dict:
    formats = [{"key": f, "inputs": {"required": {"codec": _codec(["auto", "av1"] if f == "webm" else ["auto", "h264", "av1"])}}}
               for f in ("auto", "mp4", "mkv", "webm")]
    return {
        "LoadImage": LOAD,
        "CreateVideo": {"input": {"required": {"images": ["IMAGE", {}], "fps": ["FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}]},
                                  "optional": {"audio": ["AUDIO", {}], "bit_depth": ["INT", {"default": 8, "min": 8, "max": 10, "step": 2}]}},
                        "output": ["VIDEO"], "output_name": ["VIDEO"]},
        "SaveVideo": {"input": {"required": {"video": ["VIDEO", {}],
                                             "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
                                             "format": ["COMFY_DYNAMICCOMBO_V3", {"options": formats}]},
                                "optional": {"codec": _codec(["auto", "h264", "av1"], hidden=True)}},
                      "output": ["VIDEO"], "output_name": ["video"]},
    }


def object_info_0375() -> dict:
    return {
        "LoadImage": LOAD,
        "CreateVideo": {"input": {"required": {"images": ["IMAGE", {}], "fps": ["FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}]},
                                  "optional": {"audio": ["AUDIO", {}]}},
                        "output": ["VIDEO"], "output_name": ["VIDEO"]},
        "SaveVideo": {"input": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {"default": "video/ComfyUI"}],
                                             "format": ["COMBO", {"default": "auto", "options": ["auto", "mp4"]}],
                                             "codec": ["COMBO", {"default": "auto", "options": ["auto", "h264"]}]}},
                      "output": [], "output_name": []},
    }


def prompt(save_inputs: dict, create_inputs: dict | None = None) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 16.0, **(create_inputs or {})}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "ff/video", **save_inputs}},
    }


def node(ui: dict, node_id: int) -> dict:
    return next(n for n in ui["nodes"] if n["id"] == node_id)


def test_dynamic_combo_children_follow_their_parent_with_dotted_names():
    info = object_info_033()["SaveVideo"]
    picks = {"format": "mp4", "format.codec": "h264", "format.codec.encoding": "re-encode"}
    slots = walk_inputs(info, lambda s: picks.get(s.name, widget_default(s)))
    assert [s.name for s in slots] == ["video", "filename_prefix", "format", "format.codec", "format.codec.encoding",
                                       "format.codec.encoding.crf", "format.codec.encoding.color_space", "codec"]
    assert slots[2].options["options"] == ["auto", "mp4", "mkv", "webm"]
    webm = walk_inputs(info, lambda s: "webm" if s.name == "format" else widget_default(s))
    assert next(s for s in webm if s.name == "format.codec").options["options"] == ["auto", "av1"]


def test_033_widgets_are_in_the_frontends_order():
    ui = api_to_ui(prompt({"format": "mp4", "format.codec": "h264"}), object_info_033())
    # as the frontend serialises a SaveVideo set to mp4 / h264 (hidden legacy codec last) and a CreateVideo
    assert node(ui, 3)["widgets_values"] == ["ff/video", "mp4", "h264", "auto", "auto"]
    assert node(ui, 2)["widgets_values"] == [16.0, 8]
    assert node(ui, 1)["widgets_values"] == ["face.png", "image"]


@pytest.mark.parametrize("shape", ["0.3.75", "0.33"])
def test_ui_and_api_agree_on_both_schema_shapes(shape):
    info = object_info_033() if shape == "0.33" else object_info_0375()
    save = {"format": "mp4", "format.codec": "h264", "format.codec.encoding": "re-encode",
            "format.codec.encoding.crf": 18.0, "format.codec.encoding.color_space": "sRGB"} if shape == "0.33" \
        else {"format": "mp4", "codec": "h264"}
    api = prompt(save, {"bit_depth": 10} if shape == "0.33" else None)
    assert ui_to_api(api_to_ui(api, info), info) == complete_prompt(api, info)
    if shape == "0.33":
        assert complete_prompt(api, info)["3"]["inputs"]["codec"] == "auto"  # the hidden legacy widget is sent
        assert complete_prompt(api, info)["2"]["inputs"]["bit_depth"] == 10
    else:
        assert complete_prompt(api, info) == api  # nothing left out on the old shape


def test_a_graph_saved_for_0375_loads_on_033_with_defaults_for_the_new_widgets():
    ui = api_to_ui(prompt({"format": "mp4", "codec": "h264"}), object_info_0375())
    assert node(ui, 2)["widgets_values"] == [16.0]
    api = ui_to_api(ui, object_info_033())
    assert api["2"]["inputs"] == {"images": ["1", 0], "fps": 16.0, "bit_depth": 8}
    assert api["3"]["inputs"] == {"video": ["2", 0], "filename_prefix": "ff/video", "format": "mp4",
                                  "format.codec": "h264", "format.codec.encoding": "auto", "codec": "auto"}


def test_invalid_values_in_dynamic_children_are_refused():
    ui = api_to_ui(prompt({"format": "webm", "format.codec": "h264"}), object_info_033())
    with pytest.raises(FaithfulFacesError, match=r"'format.codec'.*'h264' is not one of \['auto', 'av1'\]"):
        ui_to_api(ui, object_info_033())


def test_missing_trailing_values_take_defaults_and_left_over_values_are_errors():
    info = object_info_033()
    ui = api_to_ui(prompt({"format": "mp4"}), info)
    short = copy.deepcopy(ui)
    node(short, 3)["widgets_values"] = ["ff/video"]  # as the frontend loads it: the rest at their defaults
    assert ui_to_api(short, info)["3"]["inputs"] == {"video": ["2", 0], "filename_prefix": "ff/video", "format": "auto",
                                                     "format.codec": "auto", "codec": "auto"}
    long = copy.deepcopy(ui)
    node(long, 2)["widgets_values"] = [16.0, 8, "extra"]
    with pytest.raises(FaithfulFacesError, match=r"1 widget value\(s\) left over \(\['extra'\]\)"):
        ui_to_api(long, info)


def test_an_input_the_schema_does_not_know_is_named():
    with pytest.raises(FaithfulFacesError, match="SaveVideo has no input 'quality'"):
        api_to_ui(prompt({"format": "mp4", "quality": 3}), object_info_033())
