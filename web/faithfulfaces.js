// FaithfulFaces frontend extension.
// - Face Pose node: after it runs, shows pitch / yaw / roll and a small head-axes gizmo.
// - Loader nodes: when a model list is empty, says which file to place and where.
import { app } from "../../scripts/app.js";

const POSE_NODE = "FaithfulFacesFacePose";
const MISSING_PREFIX = "(none found) ";
const GIZMO = 64;

function rotation(pitch, yaw, roll) {
  // R = Rz(roll) · Ry(yaw) · Rx(pitch), degrees (6DRepNet's convention).
  const [p, y, r] = [pitch, yaw, roll].map((d) => (d * Math.PI) / 180);
  const Rx = [[1, 0, 0], [0, Math.cos(p), -Math.sin(p)], [0, Math.sin(p), Math.cos(p)]];
  const Ry = [[Math.cos(y), 0, Math.sin(y)], [0, 1, 0], [-Math.sin(y), 0, Math.cos(y)]];
  const Rz = [[Math.cos(r), -Math.sin(r), 0], [Math.sin(r), Math.cos(r), 0], [0, 0, 1]];
  const mul = (A, B) => A.map((row) => B[0].map((_, j) => row.reduce((s, v, k) => s + v * B[k][j], 0)));
  return mul(mul(Rz, Ry), Rx);
}

function drawGizmo(ctx, x, y, pose) {
  const R = rotation(pose.pitch, pose.yaw, pose.roll);
  const c = { x: x + GIZMO / 2, y: y + GIZMO / 2 };
  const len = GIZMO * 0.4;
  ctx.save();
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(x, y, GIZMO, GIZMO);
  ctx.lineWidth = 2;
  ["#e33", "#3c3", "#39f"].forEach((color, axis) => {
    // columns of R are the head's axes; image y grows downwards
    ctx.strokeStyle = color;
    ctx.beginPath();
    ctx.moveTo(c.x, c.y);
    ctx.lineTo(c.x + len * R[0][axis], c.y + len * R[1][axis]);
    ctx.stroke();
  });
  ctx.restore();
}

function missingModelNotes(node) {
  return (node.widgets || [])
    .filter((w) => typeof w.value === "string" && w.value.startsWith(MISSING_PREFIX))
    .map((w) => `${w.name}: ${w.value.slice(MISSING_PREFIX.length)}`);
}

app.registerExtension({
  name: "FaithfulFaces.ui",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.category?.startsWith("FaithfulFaces")) return;

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (this.flags?.collapsed) return;
      const notes = missingModelNotes(this);
      if (notes.length) {
        ctx.save();
        ctx.fillStyle = "#f5a623";
        ctx.font = "11px sans-serif";
        notes.forEach((n, i) => ctx.fillText(`⚠ ${n}`, 8, this.size[1] + 14 + 13 * i));
        ctx.restore();
      }
      if (this.ffPose) {
        const y = this.size[1] - GIZMO - 8;
        drawGizmo(ctx, this.size[0] - GIZMO - 8, y, this.ffPose);
        ctx.save();
        ctx.fillStyle = "#ddd";
        ctx.font = "12px monospace";
        const p = this.ffPose;
        [`pitch ${p.pitch.toFixed(1)}°`, `yaw   ${p.yaw.toFixed(1)}°`, `roll  ${p.roll.toFixed(1)}°`, p.backend]
          .forEach((t, i) => ctx.fillText(t, 8, y + 14 + 14 * i));
        ctx.restore();
      }
    };

    if (nodeData.name === POSE_NODE) {
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const pose = message?.faithfulfaces_pose?.[0];
        if (pose) {
          this.ffPose = pose;
          this.setSize([Math.max(this.size[0], 240), Math.max(this.size[1], this.computeSize()[1] + GIZMO + 16)]);
          this.setDirtyCanvas(true, true);
        }
      };
    }
  },
});
