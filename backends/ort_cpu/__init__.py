"""Target ort-cpu: ONNX Runtime on this CPU."""
