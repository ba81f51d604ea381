"""The inference runtime shared by the three models (bi-encoder, cross-encoder, personal):
model folders, fingerprints and devices (:mod:`inference.models`), and the ONNX Runtime /
OpenVINO export and runtime with CPU threads (:mod:`inference.backend`).
"""
