"""`p2d build OUT_DIR`: finish a TensorRT compile prepared on a machine without TensorRT."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from prune2deploy.errors import MissingDependency, user_error
from prune2deploy.artifacts.manifest import write_manifest
from prune2deploy.config.options import CompileOptions
from prune2deploy.artifacts.outdir import locked, publish_dir, workspace
from prune2deploy.artifacts.ownership import check_out_dir
from prune2deploy.pipeline import _add_benchmark
from prune2deploy.runtime.progress import Progress
from prune2deploy.report.render import render_markdown


def build_out_dir(out_dir: Path) -> dict:
    from prune2deploy.backends.tensorrt import engine as trt_backend

    from prune2deploy.backends.tensorrt.driver import PLAN_FILE, build_and_benchmark

    if not (out_dir / PLAN_FILE).exists() or not (out_dir / "report.json").exists():
        raise user_error(f"{out_dir} has no {PLAN_FILE}",
                         "p2d build finishes a directory written by p2d compile --target trt-ampere|trt-hopper|trt")
    check_out_dir(out_dir, flag="OUT_DIR", hint="pass a directory p2d compile wrote, from outside it")
    report = json.loads((out_dir / "report.json").read_text())
    ok, reason = trt_backend.availability(report["target"])
    if not ok:
        raise MissingDependency(reason)
    progress = Progress()
    with locked(out_dir), workspace() as work:
        for path in out_dir.iterdir():
            if path.is_file():
                shutil.copy2(path, work / path.name)
        options = CompileOptions(**{k: v for k, v in report["options"].items() if k in CompileOptions.field_names()})
        bench = build_and_benchmark(work, options, progress)
        _add_benchmark(report, bench)
        report["status"] = "complete"
        report.pop("next_step", None)
        report["stages_s"].update(progress.times)
        (work / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (work / "report.md").write_text(render_markdown(report))
        recipe = json.loads((out_dir / "manifest.json").read_text())["recipe"] if (out_dir / "manifest.json").exists() else {}
        write_manifest(work, recipe)
        publish_dir(work, out_dir)
    return report
