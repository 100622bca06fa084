"""ComfyUI workflow formats: the UI (drag-and-drop) graph and the API prompt, both ways.

The example workflows are written once in API format (what ``POST /prompt`` takes) and laid
out as UI graphs by :func:`api_to_ui`; :func:`ui_to_api` turns a UI graph back into a prompt
the way the frontend does, checked against the server's ``/object_info`` (unknown node types,
unknown or invalid widget values are errors). Pure JSON work: nothing here imports ComfyUI.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import FaithfulFacesError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
SCHEMA_HOST_VERSION = "0.3.75"  # the ComfyUI whose schemas the shipped UI workflows follow (CI's)
COLUMN_WIDTH = 380
ROW_GAP = 40


@dataclass(frozen=True)
class Slot:
    """One input as the frontend lays it out: ``name`` is dotted for a dynamic combo's children."""

    name: str
    kind: Any
    options: dict


def _spec_groups(inputs: Mapping[str, Any]) -> Iterator[tuple[str, Any, dict]]:
    for group in ("required", "optional"):
        for name, spec in (inputs.get(group) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            yield name, spec[0], options


def walk_inputs(info: Mapping[str, Any], choose: Callable[[Slot], Any]) -> list[Slot]:
    """A node's inputs in the frontend's order (required, then optional), dynamic combos expanded.

    A ``COMFY_DYNAMICCOMBO_V3`` input is a combo of option keys followed, depth first, by the
    inputs of the option ``choose(slot)`` picks, named ``parent.child`` (ComfyUI's V3 schema and
    the frontend's widget names). ``choose`` is called once per slot, in order.
    """
    slots: list[Slot] = []

    def visit(inputs: Mapping[str, Any], prefix: str) -> None:
        for name, kind, options in _spec_groups(inputs):
            full = f"{prefix}{name}"
            if kind == DYNAMIC_COMBO:
                keys = [o["key"] for o in options.get("options", [])]
                slot = Slot(full, "COMBO", {**options, "options": keys, "default": options.get("default", keys[0])})
                slots.append(slot)
                key = choose(slot)
                chosen = next((o for o in options.get("options", []) if o["key"] == key), None)
                if chosen is not None:
                    visit(chosen.get("inputs", {}), f"{full}.")
                continue
            slot = Slot(full, kind, options)
            slots.append(slot)
            choose(slot)

    visit(info.get("input", {}), "")
    return slots


def _is_widget(kind: Any, options: dict) -> bool:
    return isinstance(kind, list) or kind in WIDGET_TYPES or bool(options.get("image_upload"))


def _widget_values(name: str, kind: Any, options: dict, value: Any) -> list[Any]:
    """The ``widgets_values`` entries one API input becomes (seed widgets add their control)."""
    values = [value]
    if options.get("control_after_generate"):
        values.append("fixed")
    if options.get("image_upload"):
        values.append("image")
    return values


def _combo_options(kind: Any, options: dict) -> list[Any] | None:
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return options.get("options", [])
    return None


def widget_default(slot: Slot) -> Any:
    """The value the frontend gives a new widget: its default, else a combo's first entry."""
    if "default" in slot.options:
        return slot.options["default"]
    choices = _combo_options(slot.kind, slot.options)
    if choices:
        return choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(slot.kind)


def _check_number(where: str, kind: str, options: dict, value: Any) -> None:
    """An INT / FLOAT widget's value: a number inside the widget's min/max, an INT on its step."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FaithfulFacesError(f"{where}: expected a number, got {value!r}")
    if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
        raise FaithfulFacesError(f"{where}: {value} is outside [{options.get('min')}, {options.get('max')}]")
    step = options.get("step")
    if kind == "INT" and step and (value - options.get("min", 0)) % step:
        raise FaithfulFacesError(f"{where}: {value} is not on the widget's step {step} from {options.get('min', 0)}")


def check_widget_value(node: str, class_type: str, name: str, kind: Any, options: dict, value: Any) -> None:
    """Raise when ``value`` is not valid for widget ``name`` (unknown combo entry, out of range)."""
    where = f"node {node} ({class_type}) input '{name}'"
    choices = _combo_options(kind, options)
    if choices is not None and not options.get("image_upload"):
        if value not in choices:
            raise FaithfulFacesError(f"{where}: {value!r} is not one of {choices[:8]}{'…' if len(choices) > 8 else ''}")
    elif kind in ("INT", "FLOAT"):
        _check_number(where, kind, options, value)
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        raise FaithfulFacesError(f"{where}: expected true/false, got {value!r}")
    elif kind == "STRING" and not isinstance(value, str):
        raise FaithfulFacesError(f"{where}: expected text, got {value!r}")


def _node_info(object_info: Mapping[str, Any], class_type: str, node: str) -> Mapping[str, Any]:
    if class_type not in object_info:
        raise FaithfulFacesError(
            f"node {node}: node type '{class_type}' is not known to this ComfyUI (missing custom node pack?)"
        )
    return object_info[class_type]


def _columns(prompt: Mapping[str, Any]) -> dict[str, int]:
    """Column of each node: the longest chain of links leading to it."""
    depth: dict[str, int] = {}

    def visit(node: str, seen: tuple[str, ...] = ()) -> int:
        if node in depth:
            return depth[node]
        if node in seen:
            raise FaithfulFacesError(f"the workflow has a cycle through node {node}")
        sources = [v[0] for v in prompt[node]["inputs"].values() if isinstance(v, list) and len(v) == 2]
        depth[node] = 1 + max((visit(str(s), (*seen, node)) for s in sources), default=-1)
        return depth[node]

    for node in prompt:
        visit(node)
    return depth


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _prompt_links(prompt: Mapping[str, Any]) -> tuple[list[list], dict[tuple[str, int], list[int]]]:
    """UI links ``[id, from, from_slot, to, to_slot, type]`` (slots filled later) of a prompt."""
    links: list[list] = []
    by_output: dict[tuple[str, int], list[int]] = {}
    for node_id in sorted(prompt, key=int):
        for source in prompt[node_id]["inputs"].values():
            if _is_link(source):
                links.append([len(links) + 1, int(source[0]), int(source[1]), int(node_id), None, None])
                by_output.setdefault((str(source[0]), int(source[1])), []).append(len(links))
    return links, by_output


def _ui_node(node_id: str, node: Mapping[str, Any], info: Mapping[str, Any], link_by_id: dict[int, list],
             by_output: dict[tuple[str, int], list[int]]) -> dict:
    """One UI node: its linked and unlinked sockets and its ``widgets_values`` in frontend order."""
    class_type = node["class_type"]
    inputs, widgets = [], []

    def place(slot: Slot) -> Any:
        value = node["inputs"].get(slot.name)
        if _is_link(value):
            link_id = next(lid for lid in by_output.get((str(value[0]), int(value[1])), [])
                           if link_by_id[lid][3] == int(node_id) and link_by_id[lid][4] is None)
            link_type = "COMBO" if isinstance(slot.kind, list) else slot.kind
            link_by_id[link_id][4], link_by_id[link_id][5] = len(inputs), link_type
            inputs.append({"name": slot.name, "type": link_type, "link": link_id})
            if not _is_widget(slot.kind, slot.options):
                return None
            inputs[-1]["widget"] = {"name": slot.name}  # a widget fed by a link keeps a placeholder
            value = widget_default(slot)
        elif not _is_widget(slot.kind, slot.options):
            if slot.name in node["inputs"]:
                raise FaithfulFacesError(f"node {node_id} ({class_type}): input '{slot.name}' must be a link")
            inputs.append({"name": slot.name, "type": slot.kind, "link": None})
            return None
        elif value is None:
            value = widget_default(slot)
        widgets.extend(_widget_values(slot.name, slot.kind, slot.options, value))
        return value

    slots = walk_inputs(info, place)
    known = {slot.name for slot in slots}
    unknown = sorted(set(node["inputs"]) - known)
    if unknown:
        raise FaithfulFacesError(f"node {node_id} ({class_type}): this ComfyUI's {class_type} has no input "
                                 f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})")
    outputs = [
        {"name": out_name, "type": out_type, "links": by_output.get((node_id, i), []), "slot_index": i}
        for i, (out_type, out_name) in enumerate(zip(info["output"], info.get("output_name", info["output"]), strict=True))
    ]
    preview = 280 if any(slot.options.get("image_upload") for slot in slots) else 0
    height = 80 + 26 * (len(widgets) + max(len(inputs), len(outputs))) + preview
    return {"id": int(node_id), "type": class_type, "pos": [0, 0], "size": [340, height], "flags": {}, "order": 0,
            "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": class_type},
            "widgets_values": widgets}


def api_to_ui(prompt: Mapping[str, Any], object_info: Mapping[str, Any], *, titles: Mapping[str, str] | None = None) -> dict:
    """A UI-format graph (``nodes``, ``links``, version 0.4) for an API prompt, laid out in columns.

    Widgets follow the server's schemas (``object_info``): dynamic combos expand to ``parent.child``
    widgets, and inputs the prompt leaves out get the frontend's defaults. Widget values are copied,
    not validated: a workflow may name model files this server lacks. An input the schema does not
    know is an error (the frontend would drop it silently).
    """
    columns = _columns(prompt)
    links, by_output = _prompt_links(prompt)
    link_by_id = {link[0]: link for link in links}
    rows: dict[int, int] = {}
    nodes = []
    for node_id in sorted(prompt, key=int):
        info = _node_info(object_info, prompt[node_id]["class_type"], node_id)
        ui_node = _ui_node(node_id, prompt[node_id], info, link_by_id, by_output)
        column = columns[node_id]
        ui_node["pos"] = [column * COLUMN_WIDTH, rows.get(column, 0)]
        rows[column] = ui_node["pos"][1] + ui_node["size"][1] + ROW_GAP
        if titles and node_id in titles:
            ui_node["title"] = titles[node_id]
        nodes.append(ui_node)
    for order, node in enumerate(sorted(nodes, key=lambda n: (columns[str(n["id"])], n["id"]))):
        node["order"] = order
    return {
        "last_node_id": max(int(n) for n in prompt), "last_link_id": len(links), "nodes": nodes,
        "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


def _api_inputs(node: Mapping[str, Any], info: Mapping[str, Any], links: Mapping[int, list],
                file_inputs: Collection[str]) -> dict[str, Any]:
    """A UI node's API inputs: links by socket name, widgets by position in ``widgets_values``.

    Missing trailing values take their widgets' defaults, as the frontend does when it loads a graph
    saved before the schema grew them (ComfyUI 0.33 added required widgets, e.g. to
    ``WanContextWindowsManual``, and dynamic-combo children).
    """
    node_id, class_type = str(node["id"]), node["type"]
    values = list(node.get("widgets_values") or [])
    linked = {i["name"]: i.get("link") for i in node.get("inputs", [])}
    inputs: dict[str, Any] = {}

    def take(slot: Slot) -> Any:
        nonlocal values
        is_widget = _is_widget(slot.kind, slot.options)
        if linked.get(slot.name) is not None:
            link = links[linked[slot.name]]
            inputs[slot.name] = [str(link[1]), link[2]]
            if not is_widget:
                return None
            value = values[0] if values else widget_default(slot)
            values = values[len(_widget_values(slot.name, slot.kind, slot.options, None)):]
            return value
        if not is_widget:
            return None
        if not values:
            value = widget_default(slot)
        else:
            value = values[0]
            values = values[len(_widget_values(slot.name, slot.kind, slot.options, value)):]
        if slot.name in file_inputs:
            check_widget_value(node_id, class_type, slot.name, "STRING", {}, value)
        else:
            check_widget_value(node_id, class_type, slot.name, slot.kind, slot.options, value)
        inputs[slot.name] = value
        return value

    walk_inputs(info, take)
    if values:
        raise FaithfulFacesError(f"node {node_id} ({class_type}): {len(values)} widget value(s) left over "
                                 f"({values!r}): the graph was saved for a different {class_type}")
    return inputs


def ui_to_api(
    workflow: Mapping[str, Any], object_info: Mapping[str, Any], *, file_inputs: Collection[str] = ()
) -> dict:
    """The API prompt the frontend would queue for a UI graph; every widget value is validated.

    ``file_inputs``: inputs whose values name model or image files, checked for type only (an
    example workflow names the real model files, which a test server does not have; ComfyUI's
    frontend likewise shows a missing file instead of refusing the graph).
    """
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt: dict[str, Any] = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted / bypassed
            continue
        info = _node_info(object_info, node["type"], str(node["id"]))
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": _api_inputs(node, info, links, file_inputs)}
    return prompt


def complete_prompt(prompt: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict:
    """``prompt`` with every widget input it leaves out set to the frontend's default.

    What queueing its UI twin sends: equal to ``ui_to_api(api_to_ui(prompt))`` for a prompt that
    follows the server's schemas.
    """
    out = copy.deepcopy(dict(prompt))
    for node_id, node in out.items():
        info = _node_info(object_info, node["class_type"], node_id)

        def fill(slot: Slot, node: dict = node) -> Any:
            if slot.name not in node["inputs"] and _is_widget(slot.kind, slot.options):
                node["inputs"][slot.name] = widget_default(slot)
            return node["inputs"].get(slot.name)

        walk_inputs(info, fill)
    return out


def with_inputs(prompt: Mapping[str, Any], changes: Mapping[str, Mapping[str, Any]]) -> dict:
    """A copy of ``prompt`` with ``{node_id: {input: value}}`` replaced (demo and test settings)."""
    out = copy.deepcopy(dict(prompt))
    for node_id, values in changes.items():
        if node_id not in out:
            raise FaithfulFacesError(f"the workflow has no node {node_id}")
        for name, value in values.items():
            if name not in out[node_id]["inputs"]:
                raise FaithfulFacesError(f"node {node_id} ({out[node_id]['class_type']}) has no input '{name}'")
            out[node_id]["inputs"][name] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m faithfulfaces_core.workflow``: lay out every API workflow as a UI workflow.

    The schemas come from a ComfyUI started for the purpose (``--comfyui``, default the selected
    host); the shipped UI files are written on ComfyUI ``SCHEMA_HOST_VERSION``.
    """
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from .host import PACK_ROOT, start_comfyui

    parser = argparse.ArgumentParser(description="Write workflows/<name>.json (UI) from workflows/api/<name>.json.")
    parser.add_argument("--workflows", type=Path, default=PACK_ROOT / "workflows")
    parser.add_argument("--comfyui", type=Path, default=None, help="ComfyUI checkout (default: the selected host)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as base:
        server = start_comfyui(base, comfyui_dir=args.comfyui)
        try:
            object_info = server.get("/object_info")
            version = server.get("/system_stats")["system"].get("comfyui_version")
        finally:
            server.stop()
    if version != SCHEMA_HOST_VERSION:
        print(f"note: ComfyUI {version}; the shipped UI files are written on {SCHEMA_HOST_VERSION}")
    for api_file in sorted((args.workflows / "api").glob("*.json")):
        ui = api_to_ui(json.loads(api_file.read_text()), object_info)
        (args.workflows / api_file.name).write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote {args.workflows / api_file.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
