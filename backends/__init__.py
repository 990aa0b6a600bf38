"""Backends, one module each; installed as `prune2deploy.backends`.

onnx_export: torch -> ONNX (checked, shape-inferred, slimmed); ort: ONNX Runtime runner;
tensorrt: ONNX -> TensorRT engine; torch_cuda: torch.compile on a CUDA GPU; fp16: FP16 ONNX.
Heavy libraries are imported inside each module, so a missing one matters only when used.
"""
