"""The ONNX helpers every stage uses: graph.py (loading, input specs and shapes, random / real inputs), tools.py
(onnxruntime sessions and the onnxsim child process: a leaf), checks.py (input validation before any work),
comparison.py (output error vs a reference: numpy only)."""
