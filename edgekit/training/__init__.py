"""The torch side of compression: quantizers, layers, the training loop with KD, export to packed ONNX."""
