"""ONNX -> TVM Relax -> deployable artifact."""
