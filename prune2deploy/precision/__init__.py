"""The precision stage: which precision a target deploys (`--precision auto|fp32|bf16|fp16|int8`), the samples
INT8 calibrates on, and how a lower-precision artifact is checked against the torch FP32 model. The lowering
itself (OpenVINO's inference precision, NNCF, onnxruntime's quantization) is each backend's; see docs/targets.md."""
