// FaithfulFaces frontend extension: a read-out that every node renderer shows.
// - Face Pose node: after a run, pitch / yaw / roll and a head-axes gizmo. The axes come from
//   the node's output (computed in Python from the pack's one rotation source); this file only
//   draws them.
// - Loader nodes: when a model list is empty, says which file to place and where.
// - Backend-dependent file dropdowns (``faithfulfaces_used_by`` in /object_info): while the
//   chosen backend does not read one, a value that is not in its list is parked in the node's
//   properties (saved with the workflow) and shown as the list's first entry, so the frontend
//   does not flag a missing file that nothing will open; choosing a backend that reads it
//   puts the value back.
// Both live in a DOM widget, which the classic LiteGraph canvas and Nodes 2.0 (Vue) both render;
// Nodes 2.0 does not call onDrawForeground.
import { app } from "../../scripts/app.js";

const POSE_NODE = "FaithfulFacesFacePose";
const MISSING_PREFIX = "(none found) ";
const GIZMO = 72;
const AXIS_COLORS = ["#ff2828", "#28dc28", "#3c64ff"]; // head x, y, z (as the preview image)
const WIDGET = "faithfulfaces_readout";

// Segments the gizmo draws: from the centre along each image-plane axis (y down), [3][2][2].
export function gizmoSegments(axes, size = GIZMO) {
  const c = size / 2;
  const len = size * 0.4;
  return axes.map(([dx, dy]) => [[c, c], [c + len * dx, c + len * dy]]);
}

function drawGizmo(canvas, axes) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "rgba(0,0,0,0.55)";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.lineWidth = 3;
  ctx.lineCap = "round";
  gizmoSegments(axes, canvas.width).forEach(([[x0, y0], [x1, y1]], i) => {
    ctx.strokeStyle = AXIS_COLORS[i];
    ctx.beginPath();
    ctx.moveTo(x0, y0);
    ctx.lineTo(x1, y1);
    ctx.stroke();
  });
}

// {widget name: {input, values}} of the node's backend-dependent dropdowns.
function usedBy(nodeData) {
  const inputs = { ...nodeData?.input?.required, ...nodeData?.input?.optional };
  return Object.fromEntries(Object.entries(inputs)
    .filter(([, spec]) => spec?.[1]?.faithfulfaces_used_by)
    .map(([name, spec]) => [name, spec[1].faithfulfaces_used_by]));
}

function isUnused(node, widget) {
  const rule = node.ffUsedBy?.[widget.name];
  if (!rule) return false;
  const chooser = node.widgets?.find((w) => w.name === rule.input);
  return !!chooser && !rule.values.includes(chooser.value);
}

function parkUnusedFiles(node) {
  const parked = (node.properties ??= {}).faithfulfaces_parked ??= {};
  for (const w of node.widgets || []) {
    if (!node.ffUsedBy?.[w.name]) continue;
    const listed = w.options?.values || [];
    if (isUnused(node, w)) {
      if (!listed.includes(w.value) && listed.length) {
        if (!(w.name in parked) && !String(w.value).startsWith(MISSING_PREFIX)) parked[w.name] = w.value;
        w.value = listed[0];
      }
    } else if (w.name in parked) {
      w.value = parked[w.name];
      delete parked[w.name];
    }
  }
}

function missingModelNotes(node) {
  return (node.widgets || [])
    .filter((w) => typeof w.value === "string" && w.value.startsWith(MISSING_PREFIX) && !isUnused(node, w))
    .map((w) => `${w.name}: ${w.value.slice(MISSING_PREFIX.length)}`);
}

function hasMissingChoice(node) {
  return (node.widgets || []).some((w) => (w.options?.values || []).some(
    (v) => typeof v === "string" && v.startsWith(MISSING_PREFIX)));
}

function makeReadout(node, withGizmo) {
  const root = document.createElement("div");
  root.style.cssText = "display:flex;gap:8px;align-items:flex-start;font:12px monospace;color:#ddd;"
    + "padding:4px;box-sizing:border-box;width:100%;overflow:hidden;pointer-events:none;";
  const text = document.createElement("pre");
  text.className = "ff-readout-text";
  text.style.cssText = "margin:0;flex:1;white-space:pre-wrap;font:inherit;";
  root.append(text);
  let canvas = null;
  if (withGizmo) {
    canvas = document.createElement("canvas");
    canvas.className = "ff-readout-gizmo";
    canvas.width = canvas.height = GIZMO;
    canvas.style.cssText = `width:${GIZMO}px;height:${GIZMO}px;flex:none;display:none;`;
    root.append(canvas);
  }
  const widget = node.addDOMWidget(WIDGET, "faithfulfaces-readout", root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => (withGizmo ? GIZMO + 10 : 8 + 14 * missingModelNotes(node).length),
  });
  return { root, text, canvas, widget };
}

function refresh(node) {
  parkUnusedFiles(node);
  const view = node.ffReadout;
  if (!view) return;
  view.root.dataset.ffReadout = String(node.id);
  const lines = missingModelNotes(node).map((n) => `⚠ ${n}`);
  const pose = node.ffPose;
  if (pose) {
    lines.push(`pitch ${pose.pitch.toFixed(1)}°`, `yaw   ${pose.yaw.toFixed(1)}°`,
      `roll  ${pose.roll.toFixed(1)}°`, pose.backend);
    drawGizmo(view.canvas, pose.axes);
    view.canvas.style.display = "block";
  }
  view.text.textContent = lines.length ? lines.join("\n") : (view.canvas ? "run to see the head pose" : "");
  view.text.style.color = pose ? "#ddd" : "#f5a623";
}

app.registerExtension({
  name: "FaithfulFaces.ui",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.category?.startsWith("FaithfulFaces")) return;
    const isPose = nodeData.name === POSE_NODE;
    const rules = usedBy(nodeData);

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.ffUsedBy = rules;
      const readout = isPose || hasMissingChoice(this);
      if (readout) this.ffReadout = makeReadout(this, isPose);
      if (readout || Object.keys(rules).length) {
        for (const w of this.widgets || []) {
          if (w.name === WIDGET) continue;
          const callback = w.callback;
          w.callback = (...args) => { const r = callback?.apply(w, args); refresh(this); return r; };
        }
        refresh(this);
      }
      return result;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      refresh(this);
      return result;
    };

    if (isPose) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const pose = message?.faithfulfaces_pose?.[0];
        if (pose) {
          this.ffPose = pose;
          refresh(this);
          this.setDirtyCanvas?.(true, true);
        }
      };
    }
  },
});
