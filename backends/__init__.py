"""Deployment targets, one folder each; installed as `prune2deploy.backends`.

registry: every target's row (name, alignment, availability, driver). onnx/: what all targets share (torch ->
ONNX export, verification in onnxruntime, the N:M check, the exporting driver). ort_cpu/, tensorrt/,
torch_cuda/: one target family each (its rows, runner or engine code, and driver). Heavy libraries are imported
inside each module, so a missing one matters only when used.
"""
