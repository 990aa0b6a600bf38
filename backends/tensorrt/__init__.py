"""Targets trt, trt-ampere, trt-hopper: TensorRT engines built from the FP16 ONNX."""
