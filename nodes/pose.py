"""Face detection and head-pose nodes."""

from __future__ import annotations

from comfy_api.latest import io

from faithfulfaces_core.pose.types import PRECISIONS

from . import models, types
from .images import from_uint8, to_uint8_list

CATEGORY = "FaithfulFaces/pose"
DETECTOR_BACKENDS = ["insightface", "dlib-hog", "dlib-cnn"]
POSE_BACKENDS = ["6drepnet", "dlib-landmarks"]
PACK_BACKENDS = ["insightface"]  # the detector backends that read insightface_pack
WEIGHTS_BACKENDS = ["6drepnet"]  # the pose backends that read weights


class BackendFile(io.Combo.Input):
    """A model-file dropdown that only some values of the node's ``backend`` read.

    ``/object_info`` carries ``faithfulfaces_used_by`` (the backends that read it), so the web
    extension parks a stale, unlisted value while another backend is chosen, instead of the
    frontend flagging a file that the chosen backend never opens.
    """

    def __init__(self, id: str, options: list[str], backends: list[str], tooltip: str) -> None:
        super().__init__(id, options=options, tooltip=tooltip)
        self.backends = backends

    def as_dict(self) -> dict:
        return super().as_dict() | {"faithfulfaces_used_by": {"input": "backend", "values": self.backends}}


class LoadFaceDetector(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesLoadFaceDetector",
            display_name="Load Face Detector (FaithfulFaces)",
            category=CATEGORY,
            description=(
                "InsightFace (antelopev2 / buffalo_l in models/insightface/models/) as the paper uses, "
                "or the explicit no-download dlib backend (pip install -r requirements-offline.txt)."
            ),
            inputs=[
                io.Combo.Input("backend", options=DETECTOR_BACKENDS, default="insightface"),
                BackendFile("insightface_pack", models.insightface_packs(), PACK_BACKENDS,
                            tooltip="Folder in models/insightface/models/ (used by the insightface backend)."),
                io.Combo.Input("provider", options=["auto", "CPU", "CUDA"], default="auto",
                               tooltip="ONNX Runtime execution provider for InsightFace."),
                io.Int.Input("det_size", default=640, min=128, max=1280, step=32,
                             tooltip="Detection size; smaller sizes are retried when nothing is found."),
            ],
            outputs=[types.FaceDetector.Output(display_name="face_detector")],
        )

    @classmethod
    def validate_inputs(cls, backend, insightface_pack):
        """The pack dropdown matters only for the insightface backend, so the node checks both itself."""
        return models.check_backend_file(backend, DETECTOR_BACKENDS, PACK_BACKENDS, "insightface", insightface_pack)

    @classmethod
    def execute(cls, backend, insightface_pack, provider, det_size) -> io.NodeOutput:
        from faithfulfaces_core.pose.backends import build_backend
        from faithfulfaces_core.pose.insightface_detector import retry_det_sizes

        if backend == "insightface":
            kwargs = {"pack_dir": models.resolve_insightface_pack(insightface_pack), "device": provider.lower(),
                      "det_sizes": retry_det_sizes(det_size)}
        else:
            kwargs = {"with_embeddings": True}
        return io.NodeOutput(build_backend("detector", backend, **kwargs))


class LoadPoseEstimator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesLoadPoseEstimator",
            display_name="Load Pose Estimator (FaithfulFaces)",
            category=CATEGORY,
            description=(
                "6DRepNet head-pose weights from models/faithfulfaces/ (6DRepNet_300W_LP_AFLW2000.pth, "
                "or its .safetensors / .onnx conversion), or dlib's 68 landmarks + PnP (no download)."
            ),
            inputs=[
                io.Combo.Input("backend", options=POSE_BACKENDS, default="6drepnet",
                               tooltip="dlib-landmarks needs the dlib face detector (68 landmarks)."),
                BackendFile("weights", models.pose_weights(), WEIGHTS_BACKENDS,
                            tooltip=".pth / .safetensors run on torch, .onnx on ONNX Runtime (used by 6drepnet)."),
                io.Combo.Input("device", options=["auto", "cpu", "cuda"], default="auto"),
                io.Combo.Input("precision", options=list(PRECISIONS), default="fp32", optional=True,
                               tooltip="bf16: twice as fast on a CPU with bf16 instructions, angles about 1° from "
                                       "fp32 (6DRepNet's own error is ~4°); .pth / .safetensors only."),
            ],
            outputs=[types.PoseEstimator.Output(display_name="pose_estimator")],
        )

    @classmethod
    def validate_inputs(cls, backend, weights):
        """The weights dropdown matters only for 6DRepNet, so the node checks both itself."""
        return models.check_backend_file(backend, POSE_BACKENDS, WEIGHTS_BACKENDS, "faithfulfaces", weights)

    @classmethod
    def execute(cls, backend, weights, device, precision="fp32") -> io.NodeOutput:
        from faithfulfaces_core.pose.backends import build_backend

        if backend == "6drepnet":
            return io.NodeOutput(build_backend("pose", "6drepnet", path=models.resolve("faithfulfaces", weights),
                                               device=device, precision=precision))
        return io.NodeOutput(build_backend("pose", "pnp"))


class FacePoseEstimate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulFacesFacePose",
            display_name="Face Pose (FaithfulFaces)",
            category=CATEGORY,
            description="Finds the face, crops it (box ×enlarge) and estimates pitch, yaw and roll in degrees.",
            inputs=[
                io.Image.Input("image"),
                types.FaceDetector.Input("face_detector"),
                types.PoseEstimator.Input("pose_estimator"),
                io.Combo.Input("multiple_faces", options=["largest", "error"], default="largest",
                               tooltip="What to do when the image has several faces."),
                io.Float.Input("enlarge", default=1.5, min=1.0, max=3.0, step=0.05,
                               tooltip="Face box enlargement before cropping (the paper uses 1.5)."),
            ],
            outputs=[
                types.FacePose.Output(display_name="face_pose"),
                io.Image.Output(display_name="face_crop"),
                io.Float.Output(display_name="pitch"),
                io.Float.Output(display_name="yaw"),
                io.Float.Output(display_name="roll"),
                io.Image.Output(display_name="preview"),
            ],
        )

    @classmethod
    def execute(cls, image, face_detector, pose_estimator, multiple_faces, enlarge) -> io.NodeOutput:
        from faithfulfaces_core.pose.draw import draw_pose_preview, pose_readout
        from faithfulfaces_core.pose.estimate import estimate_face_poses

        frames = to_uint8_list(image)
        names = [f"input image {i + 1} of {len(frames)}" for i in range(len(frames))]
        poses = estimate_face_poses(frames, face_detector, pose_estimator, policy=multiple_faces,
                                    enlarge=enlarge, names=names)
        first = poses[0]
        return io.NodeOutput(
            poses,
            from_uint8([p.crop for p in poses]),
            first.angles.pitch,
            first.angles.yaw,
            first.angles.roll,
            from_uint8([draw_pose_preview(f, p) for f, p in zip(frames, poses, strict=True)]),
            ui={"faithfulfaces_pose": [pose_readout(first)]},
        )
