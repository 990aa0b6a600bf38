"""Issue 12: p2d never deletes or overwrites what it did not write.

Each refusal creates the user's files, runs the compile (CLI and Python API), and checks exit 2 with one
line and that every file under the test directory is byte-for-byte as before (nothing added either).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import prune2deploy
from helpers import assert_user_error, publish_files, slow_except
from prune2deploy.errors import UserError
from prune2deploy.pipeline import Output

SHAPE = ["--input-shape", "1,3,16,16"]
FAST = ["--no-benchmark", "--no-cache"]


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def _snapshot(root: Path) -> dict:
    """Every file (bytes), directory and link under root."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir",)
            else:
                state[rel] = ("file", path.read_bytes())
    return state


def _write(root: Path, files: dict) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("model.pt"):
            torch.save(_tiny(), path)
        else:
            path.write_bytes(data.encode() if isinstance(data, str) else data)


# (user's files, extra env, CLI args after `compile`, API keywords, fragments of the one line)
REFUSED = {
    "non-empty dir": ({"important/thesis.txt": "my thesis\n"}, {}, ["model.pt", "--out", "important"],
                      {"out_dir": "important"}, ["--out important is not empty", "did not write thesis.txt"]),
    "working directory": ({"model.pt": ""}, {}, ["model.pt", "--out", "."], {"out_dir": "."},
                          ["--out . is the working directory"]),
    "holds the model": ({"proj2/model.pt": ""}, {}, ["proj2/model.pt", "--out", "proj2"],
                        {"out_dir": "proj2", "protected_paths": {"MODEL": "proj2/model.pt"}},
                        ["--out proj2 contains MODEL proj2/model.pt"]),
    "holds the model file.py": ({"src/net.py": "import torch\n"}, {}, ["src/net.py:build", "--out", "src"],
                                {"out_dir": "src", "protected_paths": {"MODEL": "src/net.py:build"}},
                                ["--out src contains MODEL src/net.py"]),
    "holds --weights": ({"model.pt": "", "w/weights.pt": b"\x80\x02weights"}, {},
                        ["model.pt", "--weights", "w/weights.pt", "--out", "w"],
                        {"out_dir": "w", "protected_paths": {"--weights": "w/weights.pt"}},
                        ["--out w contains --weights w/weights.pt"]),
    "is --example-inputs' dir": ({"model.pt": "", "data/x.pt": b"PK\x03\x04inputs"}, {},
                                 ["model.pt", "--example-inputs", "data/x.pt", "--out", "data"],
                                 {"out_dir": "data", "protected_paths": {"--example-inputs": "data/x.pt"}},
                                 ["--out data contains --example-inputs data/x.pt"]),
    "holds --calib-data": ({"model.pt": "", "runs/calib.pt": b"calibration"}, {},
                           ["model.pt", "--calib-data", "runs/calib.pt", "--criterion", "taylor", "--out", "runs"],
                           {"out_dir": "runs", "protected_paths": {"--calib-data": "runs/calib.pt"}},
                           ["--out runs contains --calib-data runs/calib.pt"]),
    "holds the recipe": ({"model.pt": "", "cfg/p2d.toml": 'model = "model.pt"\n[inputs]\nshape = "1,3,16,16"\n'},
                         {}, ["--config", "cfg/p2d.toml", "--out", "cfg"],
                         {"out_dir": "cfg", "protected_paths": {"--config": "cfg/p2d.toml"}},
                         ["--out cfg contains --config cfg/p2d.toml"]),
    "holds the cache": ({"model.pt": "", "store/cache/keep.txt": "cached\n"}, {"P2D_CACHE_DIR": "store/cache"},
                        ["model.pt", "--out", "store"], {"out_dir": "store", "cache_dir": "store/cache"},
                        ["--out store contains the cache directory"]),
    "home directory": ({"model.pt": "", "home/.bashrc": "alias ll='ls -l'\n"}, {"HOME": "{tmp}/home"},
                       ["model.pt", "--out", "home"], {"out_dir": "home"}, ["--out home is your home directory"]),
    "holds home": ({"model.pt": "", "users/me/.bashrc": "x\n"}, {"HOME": "{tmp}/users/me"},
                   ["model.pt", "--out", "users"], {"out_dir": "users"}, ["--out users contains your home directory"]),
    "root": ({"model.pt": ""}, {}, ["model.pt", "--out", "/"], {"out_dir": "/"}, ["--out / is the root directory"]),
    "hand-written manifest": ({"model.pt": "", "out/manifest.json": '{"artifacts": {"notes.md": {}}}\n',
                               "out/notes.md": "mine\n"}, {}, ["model.pt", "--out", "out"], {"out_dir": "out"},
                              ["did not write manifest.json"]),
    "several targets": ({"model.pt": "", "important/thesis.txt": "text\n"}, {},
                        ["model.pt", "--target", "ort-cpu", "--target", "trt-ampere", "--out", "important"],
                        None, ["--out important is not empty", "did not write thesis.txt"]),
}


def _env(env: dict, tmp_path: Path) -> dict:
    return {k: v.replace("{tmp}", str(tmp_path)) if k == "HOME" else
            (str(tmp_path / v) if k == "P2D_CACHE_DIR" else v) for k, v in env.items()}


@pytest.mark.parametrize("case", slow_except(list(REFUSED), "non-empty dir", "several targets"))  # the API runs all
def test_cli_refuses_and_changes_nothing(p2d, tmp_path, case):
    files, env, args, _, fragments = REFUSED[case]
    _write(tmp_path, files)
    before = _snapshot(tmp_path)
    r = p2d("compile", *args, *SHAPE, *FAST, env=_env(env, tmp_path))
    assert_user_error(r, *fragments)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", [c for c, spec in REFUSED.items() if spec[3] is not None])
def test_api_refuses_and_changes_nothing(tmp_path, monkeypatch, case):
    files, env, _, kwargs, fragments = REFUSED[case]
    _write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    for key, value in _env(env, tmp_path).items():
        monkeypatch.setenv(key, value)
    kwargs = dict(kwargs)
    output = Output(cache_dir=kwargs.pop("cache_dir", tmp_path / ".p2d-cache"),
                    protected_paths=kwargs.pop("protected_paths", None))
    before = _snapshot(tmp_path)
    with pytest.raises(UserError) as caught:
        prune2deploy.compile(_tiny(), torch.randn(1, 3, 16, 16), skip_benchmark=True, output=output, **kwargs)
    for fragment in fragments:
        assert fragment in caught.value.one_line()
    assert _snapshot(tmp_path) == before


def test_filesystem_root_is_refused(p2d, tmp_path):
    mounts = [m for m in ("/proc", "/sys", "/dev", "/run") if os.path.ismount(m)]
    if not mounts:
        pytest.skip("no mount point to try")
    _write(tmp_path, {"model.pt": ""})
    assert_user_error(p2d("compile", "model.pt", *SHAPE, "--out", mounts[0], *FAST), f"--out {mounts[0]} is a mount point")


def test_symlinked_out_is_refused(p2d, tmp_path):
    _write(tmp_path, {"model.pt": "", "real/thesis.txt": "text\n"})
    (tmp_path / "link").symlink_to(tmp_path / "real")
    before = _snapshot(tmp_path)
    assert_user_error(p2d("compile", "model.pt", *SHAPE, "--out", "link", *FAST), "--out link is a symbolic link")
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_junit_and_step_summary_never_overwrite_user_files(p2d, tmp_path):
    _write(tmp_path, {"model.pt": "", "results.xml": "<testsuites name='mine'/>\n", "notes/todo.md": "- a\n"})
    before = _snapshot(tmp_path)
    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "out", "--junit", "results.xml")
    assert_user_error(r, "--junit results.xml exists and is not a JUnit file p2d wrote")
    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "out", "--junit", "out/junit.xml")
    assert_user_error(r, "--junit out/junit.xml is inside --out out")
    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "out", "--junit", "notes")
    assert_user_error(r, "--junit notes is a directory")
    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "out", "--gate", "mac_reduction>=1",
            env={"GITHUB_STEP_SUMMARY": str(tmp_path / "model.pt")})
    assert_user_error(r, "$GITHUB_STEP_SUMMARY names", "which is MODEL model.pt")
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_p2d_outputs_are_replaced_and_user_files_kept(p2d, tmp_path):
    """Positive cases: an empty directory is used; a p2d-written one is replaced whole; once the user adds
    a file, it is refused; several targets replace their own subdirectories; junit replaces its own file."""
    _write(tmp_path, {"model.pt": ""})
    (tmp_path / "out").mkdir()
    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "out", "--junit", "j.xml")
    assert r.code == 0, r.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["written_by"] == "prune2deploy"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([*manifest["artifacts"], "manifest.json"])

    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "out", "--ratio", "0.25", "--junit", "j.xml")
    assert r.code == 0, r.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["options"]["ratio"] == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.xml", "model.pt", "out"]  # no stage left behind

    (tmp_path / "out" / "my-notes.md").write_text("measured on the board: 3.1 ms\n")
    before = _snapshot(tmp_path)
    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "out")
    assert_user_error(r, "did not write my-notes.md")
    assert _snapshot(tmp_path) == before

    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "multi", "--target", "ort-cpu", "--target", "trt-ampere")
    assert r.code in (0, 2), r.stderr  # 2: TensorRT is not installed here (the target is prepared)
    assert (tmp_path / "multi" / "ort-cpu" / "manifest.json").exists()
    (tmp_path / "multi" / "trt-ampere" / "engine-notes.txt").write_text("mine\n")
    before = _snapshot(tmp_path)
    r = p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "multi", "--target", "ort-cpu", "--target", "trt-ampere")
    assert_user_error(r, "did not write trt-ampere/engine-notes.txt")
    assert _snapshot(tmp_path) == before


@pytest.mark.slow
def test_api_replaces_its_own_output(tmp_path):
    out = tmp_path / "out"
    for ratio in (0.5, 0.25):
        result = prune2deploy.compile(_tiny(), torch.randn(1, 3, 16, 16), out_dir=out, ratio=ratio,
                                      skip_benchmark=True,
                                          output=Output(use_cache=False, cache_dir=tmp_path / "cache"))
        assert result.report["options"]["ratio"] == ratio
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_p2d_build_refuses_a_directory_with_user_files(p2d, tmp_path):
    _write(tmp_path, {"out/build_plan.json": "{}\n", "out/report.json": "{}\n", "out/thesis.txt": "text\n"})
    before = _snapshot(tmp_path)
    assert_user_error(p2d("build", "out"), "OUT_DIR out is not empty and p2d did not write")
    assert _snapshot(tmp_path) == before


def test_earlier_p2d_output_without_marker_gets_its_own_line(p2d, tmp_path):
    legacy = {"artifacts": {"report.json": {"sha256": "0", "bytes": 3}}, "versions": {}, "recipe": {}}
    _write(tmp_path, {"model.pt": "", "out/report.json": "{}\n", "out/manifest.json": json.dumps(legacy)})
    before = _snapshot(tmp_path)
    assert_user_error(p2d("compile", "model.pt", *SHAPE, *FAST, "--out", "out"),
                      "written by an earlier p2d that did not mark its outputs")
    assert _snapshot(tmp_path) == before


# ---- work, stage and cache directories -------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_directories_go_only_with_name_and_marker(tmp_path):
    from prune2deploy.artifacts.manifest import write_manifest
    from prune2deploy.artifacts.outdir import _remove_stale, _stage_name
    from prune2deploy.artifacts.ownership import mark_dir

    pid = _dead_pid()
    theirs = tmp_path / f"p2d-work-abcd1234-{pid}"  # p2d's name, no marker: the user's
    theirs.mkdir()
    (theirs / "data.bin").write_bytes(b"mine")
    ours = tmp_path / f"p2d-work-wxyz9876-{pid}"
    ours.mkdir()
    (ours / "dense.onnx").write_bytes(b"half written")
    with open(ours / ".p2d-work", "w") as fh:  # the marker of the killed process
        json.dump({"written_by": "prune2deploy", "pid": pid}, fh)
    similar = tmp_path / f"p2d-work-else-{pid}-backup"
    similar.mkdir()
    mark_dir(similar)
    _remove_stale(tmp_path)
    assert not ours.exists() and (theirs / "data.bin").read_bytes() == b"mine" and similar.exists()

    old = tmp_path / f".out.p2d-stage-abcd1234-{pid}"  # an old output left mid-publish, plus a user's file
    old.mkdir()
    (old / "report.json").write_text("{}")
    write_manifest(old, {})
    (old / "thesis.txt").write_text("text")
    _remove_stale(tmp_path, _stage_name(tmp_path / "out"))
    assert sorted(p.name for p in old.iterdir()) == ["thesis.txt"]


def test_publish_refuses_when_a_user_file_appears_during_the_compile(tmp_path):
    out = tmp_path / "out"
    publish_files(out, {"report.json": "one"})
    (out / "added-meanwhile.txt").write_text("mine")  # after the compile's first check
    with pytest.raises(UserError, match="added-meanwhile.txt appeared in"):
        publish_files(out, {"report.json": "two"})
    assert (out / "report.json").read_text() == "one" and (out / "added-meanwhile.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cache_writes_only_its_marked_entries(tmp_path):
    from prune2deploy.artifacts import cache

    cache_dir, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    (work / "report.json").write_text("{}")
    _write(cache_dir, {"keep.txt": "mine\n", f"{'0' * 32}/mine.txt": "mine too\n"})
    before = _snapshot(cache_dir)
    cache.store(cache_dir, "0" * 32, work, ["report.json"])  # the key's directory is the user's: skipped
    cache.store(cache_dir, "1" * 32, work, ["report.json"])
    after = _snapshot(cache_dir)
    assert {k: v for k, v in after.items() if not k.startswith("1" * 32)} == before
    assert sorted(p.name for p in (cache_dir / ("1" * 32)).iterdir()) == [cache.ENTRY_MARKER, "report.json"]
    restored = tmp_path / "restored"
    restored.mkdir()
    assert cache.restore(cache_dir / ("1" * 32), restored) == ["report.json"]


def test_only_listed_regular_files_count_as_p2d_s(tmp_path):
    from prune2deploy.artifacts.ownership import first_foreign, remove_output

    out = tmp_path / "out"
    publish_files(out, {"report.json": "{}", "pruned.onnx": "onnx"})
    assert first_foreign(out) is None
    (out / "pruned.onnx").unlink()
    os.mkfifo(out / "pruned.onnx")  # a listed name, but not a file p2d writes
    (out / "sub").mkdir()
    assert first_foreign(out) == "pruned.onnx"
    assert remove_output(out) is False  # report.json and manifest.json go; the fifo and sub/ stay
    assert sorted(p.name for p in out.iterdir()) == ["pruned.onnx", "sub"]
