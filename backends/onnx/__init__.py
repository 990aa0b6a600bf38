"""What every target shares: torch -> ONNX export, verification in onnxruntime, the N:M check."""
