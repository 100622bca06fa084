"""Face detection and head pose: InsightFace / dlib detectors, 6DRepNet on torch or ONNX Runtime.

Import the submodules on use (they import torch, onnxruntime or insightface):

- ``types``: Face, EulerAngles, FacePose, the FaceDetector / PoseEstimator protocols
- ``rotation``: 6-D → matrix, matrix ↔ Euler angles (6DRepNet's convention)
- ``sixdrepnet`` / ``onnx_estimator``: the estimator on torch / ONNX Runtime
- ``insightface_detector``: FaceAnalysis on a user-placed pack, retried at smaller sizes
- ``crop`` / ``preprocess``: the ×1.5 box, clipping, the released Resize/CenterCrop/normalise
- ``estimate``: ``estimate_face_poses`` — the one call for the rest of the project
- ``loading``: find the estimator weights in a folder and build the right backend
- ``draw``: the head-axes preview
"""
