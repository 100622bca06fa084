"""ComfyUI workflow formats: the UI (drag-and-drop) graph and the API prompt, both ways.

The example workflows are written once in API format (what ``POST /prompt`` takes) and laid
out as UI graphs by :func:`api_to_ui`; :func:`ui_to_api` turns a UI graph back into a prompt
the way the frontend does, checked against the server's ``/object_info`` (unknown node types,
unknown or invalid widget values are errors). Pure JSON work: nothing here imports ComfyUI.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any

from .errors import FaithfulFacesError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN_WIDTH = 380
ROW_GAP = 40


def _input_specs(info: Mapping[str, Any]) -> list[tuple[str, Any, dict]]:
    """``(name, type, options)`` of a node's inputs in the frontend's order (required, optional)."""
    specs = []
    for group in ("required", "optional"):
        for name, spec in info.get("input", {}).get(group, {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, kind, options))
    return specs


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


def check_widget_value(node: str, class_type: str, name: str, kind: Any, options: dict, value: Any) -> None:
    """Raise when ``value`` is not valid for widget ``name`` (unknown combo entry, out of range)."""
    where = f"node {node} ({class_type}) input '{name}'"
    choices = _combo_options(kind, options)
    if choices is not None and not options.get("image_upload"):
        if value not in choices:
            raise FaithfulFacesError(f"{where}: {value!r} is not one of {choices[:8]}{'…' if len(choices) > 8 else ''}")
    elif kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FaithfulFacesError(f"{where}: expected a number, got {value!r}")
        if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
            raise FaithfulFacesError(f"{where}: {value} is outside [{options.get('min')}, {options.get('max')}]")
        step = options.get("step")
        if kind == "INT" and step and (value - options.get("min", 0)) % step:
            raise FaithfulFacesError(f"{where}: {value} is not on the widget's step {step} from {options.get('min', 0)}")
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


def api_to_ui(prompt: Mapping[str, Any], object_info: Mapping[str, Any], *, titles: Mapping[str, str] | None = None) -> dict:
    """A UI-format graph (``nodes``, ``links``, version 0.4) for an API prompt, laid out in columns.

    Widget values are copied, not validated: a workflow may name model files this server lacks.
    """
    columns = _columns(prompt)
    rows: dict[int, int] = {}
    nodes, links = [], []
    outputs_links: dict[tuple[str, int], list[int]] = {}
    for node_id in sorted(prompt, key=int):
        node = prompt[node_id]
        for source in node["inputs"].values():
            if isinstance(source, list) and len(source) == 2:
                links.append([len(links) + 1, int(source[0]), int(source[1]), int(node_id), None, None])
                outputs_links.setdefault((str(source[0]), int(source[1])), []).append(len(links))
    link_by_id = {link[0]: link for link in links}
    for node_id in sorted(prompt, key=int):
        node = prompt[node_id]
        class_type = node["class_type"]
        info = _node_info(object_info, class_type, node_id)
        inputs, widgets = [], []
        for name, kind, options in _input_specs(info):
            value = node["inputs"].get(name)
            if isinstance(value, list) and len(value) == 2:
                slot = len(inputs)
                link_id = next(
                    lid for lid in outputs_links.get((str(value[0]), int(value[1])), [])
                    if link_by_id[lid][3] == int(node_id) and link_by_id[lid][4] is None
                )
                link_type = "COMBO" if isinstance(kind, list) else kind
                link_by_id[link_id][4] = slot
                link_by_id[link_id][5] = link_type
                inputs.append({"name": name, "type": link_type, "link": link_id})
                if _is_widget(kind, options):  # a widget fed by a link keeps a placeholder value
                    inputs[-1]["widget"] = {"name": name}
                    widgets.extend(_widget_values(name, kind, options, options.get("default")))
            elif _is_widget(kind, options):
                if value is None:
                    value = options.get("default")
                widgets.extend(_widget_values(name, kind, options, value))
            elif name in node["inputs"]:
                raise FaithfulFacesError(f"node {node_id} ({class_type}): input '{name}' must be a link")
            else:
                inputs.append({"name": name, "type": kind, "link": None})
        outputs = [
            {"name": out_name, "type": out_type, "links": outputs_links.get((node_id, i), []), "slot_index": i}
            for i, (out_type, out_name) in enumerate(zip(info["output"], info.get("output_name", info["output"]), strict=True))
        ]
        column = columns[node_id]
        y = rows.get(column, 0)
        preview = 280 if any(options.get("image_upload") for _, _, options in _input_specs(info)) else 0
        height = 80 + 26 * (len(widgets) + max(len(inputs), len(outputs))) + preview
        rows[column] = y + height + ROW_GAP
        ui_node = {
            "id": int(node_id), "type": class_type, "pos": [column * COLUMN_WIDTH, y], "size": [340, height],
            "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": {"Node name for S&R": class_type}, "widgets_values": widgets,
        }
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
        node_id, class_type = str(node["id"]), node["type"]
        info = _node_info(object_info, class_type, node_id)
        values = list(node.get("widgets_values") or [])
        linked = {i["name"]: i.get("link") for i in node.get("inputs", [])}
        inputs: dict[str, Any] = {}
        for name, kind, options in _input_specs(info):
            if linked.get(name) is not None:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
                if _is_widget(kind, options):
                    values = values[len(_widget_values(name, kind, options, None)):]
                continue
            if not _is_widget(kind, options):
                continue
            if not values:
                raise FaithfulFacesError(f"node {node_id} ({class_type}): no widget value for input '{name}'")
            taken = _widget_values(name, kind, options, values[0])
            value, values = values[0], values[len(taken):]
            if name in file_inputs:
                check_widget_value(node_id, class_type, name, "STRING", {}, value)
            else:
                check_widget_value(node_id, class_type, name, kind, options, value)
            inputs[name] = value
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return prompt


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
    """``python -m faithfulfaces_core.workflow``: lay out every API workflow as a UI workflow."""
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from .host import PACK_ROOT, start_comfyui

    parser = argparse.ArgumentParser(description="Write workflows/<name>.json (UI) from workflows/api/<name>.json.")
    parser.add_argument("--workflows", type=Path, default=PACK_ROOT / "workflows")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as base:
        server = start_comfyui(base)
        try:
            object_info = server.get("/object_info")
        finally:
            server.stop()
    for api_file in sorted((args.workflows / "api").glob("*.json")):
        ui = api_to_ui(json.loads(api_file.read_text()), object_info)
        (args.workflows / api_file.name).write_text(json.dumps(ui, indent=1) + "\n")
        print(f"wrote {args.workflows / api_file.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
