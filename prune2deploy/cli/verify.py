"""`p2d verify OUT_DIR`: hashes and ONNX outputs re-checked."""
from __future__ import annotations

import json


def cmd_verify(args) -> int:
    """Re-check OUT_DIR: every artifact against manifest.json's sha256, and every ONNX file against the
    torch outputs recorded at compile time (onnxruntime). Exit 0 when all holds."""
    from pathlib import Path

    from prune2deploy.backends.onnx.recheck import verify_out_dir

    result = verify_out_dir(Path(args.out_dir))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for line in result["lines"]:
            print(line)
    return 0
