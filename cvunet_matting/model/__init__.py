"""The ONNX model: its session, its manifests, the execution providers, and its install-time fetch."""
