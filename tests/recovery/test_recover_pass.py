"""Recovery through the real CLI on scikit-learn's digits: report fields, interleaved iterative steps, gates,
bad flags, the progress bar on a pseudo-terminal, --resume after kill -9 (also between iterative steps), and a 2-process torchrun run where rank 0 alone writes."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from recovery_digits import digits_tensors, trained_deep_digits_cnn
from helpers import REPO, assert_user_error, run_p2d_in_process, slow_except


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    torch.save(trained_deep_digits_cnn().state_dict(), root / "w.pt")
    tx, ty, vx, vy = digits_tensors()
    torch.save({"inputs": torch.cat([tx, vx]), "labels": torch.cat([ty, vy])}, root / "digits.pt")
    return ["compile", f"{REPO}/tests/fixtures/recovery_digits.py:DeepDigitsCNN", "--weights", root / "w.pt",
            "--input-shape", "1,1,8,8", "--data", root / "digits.pt", "--no-benchmark", "--no-cache"]


@pytest.mark.slow
def test_iterative_recovery_end_to_end_with_gates(digits_files, tmp_path):
    run = run_p2d_in_process(*digits_files, "--ratio", "0.5", "--iterative-steps", "2", "--epochs", "2",
                             "--lr", "1e-3", "--out", "out", "--gate", "accuracy.drop<=5",
                             "--gate", "recovery.steps>=100", cwd=tmp_path)
    assert run.code == 0, run.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    acc, rec = report["accuracy"], report["recovery"]
    assert acc["pruned"] > acc["after_prune"] + 30  # measured: 35% -> 99% (dense 100%), 180 held-out digits
    assert acc["after_bn_recalibration"] >= acc["after_prune"]
    assert acc["drop"] == pytest.approx(acc["dense"] - acc["pruned"])
    assert rec["method"] == "kd" and rec["world_size"] == 1 and rec["resumed_from"] is None
    assert [s["stage"] for s in rec["stages"]] == [0, 1]  # prune -> recover -> prune -> recover
    assert {p["stage"] for p in rec["curve"]} == {0, 1} and rec["steps"] == sum(s["steps"] for s in rec["stages"])
    assert report["mac_reduction"] > 3
    assert report["gates"]["passed"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Recovery: kd" in md and "after BN re-estimation" in md
    assert "recovery: kd" in run.stdout
    png = tmp_path / "out" / "recovery.png"
    assert rec["plot"] == "recovery.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "recovery.png" in json.loads((tmp_path / "out" / "manifest.json").read_text())["artifacts"]
    # the exported model is the recovered one: pruned.pt scores what the report says
    pruned = torch.load(tmp_path / "out" / "pruned.pt", weights_only=False)
    _, _, vx, vy = digits_tensors()
    assert pruned(vx[:64]).argmax(1).eq(vy[:64]).float().mean() > 0.9


def test_without_matplotlib_a_note_not_an_error(monkeypatch, tmp_path):
    import builtins

    from prune2deploy.report.recovery import NO_MATPLOTLIB, write_plot

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    record = {"curve": [{"loss": 1.0, "metric": 50.0}], "after_bn_recalibration": 40.0}
    assert write_plot(record, "top1", tmp_path / "recovery.png") == NO_MATPLOTLIB
    assert not (tmp_path / "recovery.png").exists()


BAD_RECOVERY_FLAGS = [
    (["--recover", "kd"], "--recover kd needs training data"),
    (["--kd-alpha", "1.5"], "kd-alpha 1.5 is outside [0, 1]"),
    (["--recover", "distil"], "unknown recovery method 'distil'"),
    (["--lr", "0"], "lr 0.0 is outside (0, 1)"),
    (["--kd-relations", "-2"], "kd-relations -2 must be an integer >= 0"),
    (["--kd-augment", "1.5"], "kd-augment 1.5 is outside [0, 1)"),
]


@pytest.mark.parametrize("flags, fragment", slow_except(BAD_RECOVERY_FLAGS, BAD_RECOVERY_FLAGS[0]))
def test_bad_recovery_flags_are_one_line_user_errors(p2d, tmp_path, flags, fragment):
    run = p2d("compile", "prune2deploy.examples:small_resnet", "--input-shape", "1,3,64,64", *flags,
              "--out", "out")
    assert_user_error(run, fragment)
    assert not (tmp_path / "out").exists()


def _private_tmp_env(tmp_path) -> dict:
    """The environment of a compile whose temporary files (recovery checkpoints) go to tmp_path/tmp."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "CI": "1"}


def _start_compile(tmp_path, args: list):
    """`p2d compile ARGS` started in tmp_path, output discarded; (process, its temporary directory)."""
    proc = subprocess.Popen([sys.executable, "-m", "prune2deploy", *map(str, args)], cwd=tmp_path,
                            env=_private_tmp_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, tmp_path / "tmp"


def _resume(tmp_path, args: list) -> None:
    """The same compile again with --resume, to completion."""
    resumed = subprocess.run([sys.executable, "-m", "prune2deploy", *map(str, args), "--resume"], cwd=tmp_path,
                             env=_private_tmp_env(tmp_path), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.slow
def test_resume_after_kill_9_continues_from_the_last_checkpoint(digits_files, tmp_path):
    args = [*digits_files, "--ratio", "0.5", "--epochs", "4", "--batch-size", "16", "--out", "out"]
    proc, tmpdir = _start_compile(tmp_path, args)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmpdir.glob("p2d-resume/*/recovery.pt")) and proc.poll() is None:
        time.sleep(0.05)
    assert list(tmpdir.glob("p2d-resume/*/recovery.pt")), "recovery never wrote its first checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out").exists()
    _resume(tmp_path, args)
    rec = json.loads((tmp_path / "out" / "report.json").read_text())["recovery"]
    assert rec["resumed_from"]["stage"] == 0 and rec["resumed_from"]["epoch"] >= 1
    assert rec["curve"][0]["epoch"] == 1 and len(rec["curve"]) == rec["epochs"]  # the epochs before the kill too
    assert not list(tmpdir.glob("p2d-resume/*/recovery.pt")), "the checkpoint outlived a successful compile"


def _run_on_a_terminal(cmd: list[str], cwd, env) -> tuple[int, str]:
    """Run `cmd` with stdin/stdout/stderr on a pseudo-terminal (120 columns); (exit code, everything it wrote)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_progress_bar_on_a_terminal_and_quiet_when_piped(digits_files, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    cmd = [sys.executable, "-m", "prune2deploy", *map(str, digits_files), "--ratio", "0.5", "--epochs", "2",
           "--batch-size", "16"]
    code, shown = _run_on_a_terminal(cmd + ["--out", "tty"], tmp_path, env)
    assert code == 0, shown[-2000:]
    bars = re.findall(r"recovery: +\d+%\|[^|\r\n]*\| *(\d+)/(\d+) \[[^\]]*loss=\d+\.\d+, val=[\d.]+\]", shown)
    assert len(bars) > 2, shown[-2000:]  # redrawn in place as the steps go by
    steps = json.loads((tmp_path / "tty" / "report.json").read_text())["recovery"]["steps"]
    assert {int(total) for _, total in bars} == {steps} and max(int(done) for done, _ in bars) == steps
    piped = subprocess.run(cmd + ["--out", "piped"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert "loss=" not in piped.stderr + piped.stdout and "recovery: kd" in piped.stdout


@pytest.mark.slow
def test_resume_in_iterative_mode_reports_what_was_measured_before_the_kill(digits_files, tmp_path):
    """Killed while recovering step 1 of 2: the resumed report carries step 0's record and step 1's after-prune
    metric as measured before the kill (this process never re-creates those models), not blanks or new numbers."""
    args = [*digits_files, "--ratio", "0.5", "--iterative-steps", "2", "--epochs", "2", "--out", "out"]
    proc, tmpdir = _start_compile(tmp_path, args)
    saved, deadline = None, time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        files = list(tmpdir.glob("p2d-resume/*/recovery.pt"))
        state = torch.load(files[0], weights_only=True) if files else None
        if state and state["stage"] == 1:
            proc.send_signal(signal.SIGKILL)
            saved = state
            break
        time.sleep(0.1)
    proc.wait()
    assert saved is not None, "the compile never reached a checkpoint of the second step"
    assert not (tmp_path / "out").exists()
    _resume(tmp_path, args)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rec, acc = report["recovery"], report["accuracy"]
    first = saved["stages"][0]
    assert rec["stages"][0]["restored"] and rec["stages"][0]["after_prune"] == first["after_prune"]
    assert rec["stages"][0]["curve"] == first["curve"] and rec["stages"][0]["steps"] == first["steps"] > 0
    assert acc["after_prune"] == saved["measured"]["after_prune"]
    assert acc["after_bn_recalibration"] == saved["measured"]["after_bn_recalibration"]
    assert rec["resumed_from"]["stage"] == 1 and rec["wall_s"] > saved["pass_wall_s"]
    assert {p["stage"] for p in rec["curve"]} == {0, 1}
    assert acc["pruned"] == rec["pruned"] >= acc["after_bn_recalibration"]


@pytest.mark.slow
def test_torchrun_two_processes_rank_0_alone_writes(digits_files, tmp_path):
    env = {**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "prune2deploy", *map(str, digits_files), "--ratio", "0.5", "--epochs", "1", "--out", "out"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote out/") == 1  # one report, from rank 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rec = report["recovery"]
    assert rec["world_size"] == 2
    # each rank trained on half of the 51 training batches: 25 steps per epoch on every rank
    assert rec["steps"] == 25 and report["accuracy"]["pruned"] > report["accuracy"]["after_prune"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_recovery_settings_are_flags_options_and_recipe_keys(tmp_path):
    from prune2deploy.cli.app import build_parser
    from prune2deploy.errors import UserError
    from prune2deploy.config.recipe import compile_options, load_recipe, merge

    recipe = tmp_path / "p2d.toml"
    recipe.write_text('model = "m:build"\n[recover]\nmethod = "finetune"\nlr = 1e-3\nepochs = 2\nmax_steps = 9\n'
                      'minutes = 1.5\nkd_alpha = 0.5\nkd_temperature = 3.0\nkd_features = ["fc"]\nresume = true\n'
                      'kd_relations = 4\nkd_augment = 0.1\n')
    parser = build_parser()
    argv = ["compile", "--config", str(recipe), "--epochs", "4", "--kd-augment", "0.2"]  # the flag beats the recipe
    o = compile_options(merge(load_recipe(recipe), parser.parse_args(argv), parser, argv))
    assert (o.recover, o.lr, o.epochs, o.max_steps, o.recover_minutes, o.kd_alpha, o.kd_temperature,
            o.kd_features, o.resume, o.kd_relations, o.kd_augment) == ("finetune", 1e-3, 4, 9, 1.5, 0.5, 3.0, ["fc"],
                                                                       True, 4, 0.2)
    recipe.write_text("[recover]\nkd_alpha = 2\n")
    with pytest.raises(UserError, match=r"p2d.toml:2:1: recover.kd_alpha = 2.0: kd-alpha 2.0 is outside"):
        load_recipe(recipe)
