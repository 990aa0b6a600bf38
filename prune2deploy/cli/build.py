"""`p2d build OUT_DIR`: finish a TensorRT compile prepared on a machine without TensorRT."""
from __future__ import annotations

import json
from pathlib import Path

from prune2deploy.artifacts.ownership import check_out_dir
from prune2deploy.errors import user_error


def build_out_dir(out_dir: Path) -> dict:
    from prune2deploy.backends.tensorrt.driver import PLAN_FILE
    from prune2deploy.pipeline import finish

    if not (out_dir / PLAN_FILE).exists() or not (out_dir / "report.json").exists():
        raise user_error(f"{out_dir} has no {PLAN_FILE}",
                         "p2d build finishes a directory written by p2d compile --target trt-ampere|trt-hopper|trt")
    check_out_dir(out_dir, flag="OUT_DIR", hint="pass a directory p2d compile wrote, from outside it")
    return finish(out_dir, json.loads((out_dir / "report.json").read_text()))


def cmd_build(args) -> int:
    """Finish a TensorRT compile on a machine with TensorRT and a GPU: build the planned engines,
    benchmark them (CUDA events) and update OUT_DIR's report."""
    from pathlib import Path

    from prune2deploy.cli.compile import _print_target

    report = build_out_dir(Path(args.out_dir))
    _print_target(report, args.out_dir, [], args.json)
    return 0
