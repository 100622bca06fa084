"""Identity-fidelity evaluation: FaceSim per frame, head pose beside it, yaw-binned summaries.

The field's FaceSim protocol (``docs/evaluation.md``): frames sampled uniformly (16 by default,
or all), the largest face of each frame embedded with the recognition model of the chosen
backend (InsightFace ArcFace, or dlib's 128-D ResNet), cosine similarity to the reference face
clipped at 0, averaged over the frames with a face. Frames with no face or several faces are
counted and reported, never folded silently into the mean.

Submodules (imported on use; they pull in numpy, matplotlib, PyAV or rich as needed):

- ``sampling``: uniform frame indices, the ``--frames`` value
- ``padding``: the ×1.25 padded retry for frames where no face is found
- ``embedding``: which identity vector a face gets (detector's own, or an embedder)
- ``facesim``: ``FaceSimEvaluator`` — reference face, per-frame scores and head pose
- ``summary``: mean, minimum, yaw bins, dlib distance statistics
- ``video``: sampled frames of a video file (PyAV, streamed)
- ``report``: the JSON report, the text summary, the rich table
- ``plot``: similarity and pitch/yaw/roll over time (PNG)
- ``cli``: ``python -m faithfulfaces_core.eval REF VIDEO...``
"""
