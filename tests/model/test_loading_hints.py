"""What p2d says about files it will not load: pickles that call os.system (never a hint to trust os/posix),
TorchScript, torch.export and ONNX files given as MODEL, and pickles given as --example-inputs or --data."""
from __future__ import annotations

import os
import pickle

import pytest
import torch
import torch.nn as nn

from helpers import MODELS, assert_user_error, slow_except
from prune2deploy.errors import UserError
from prune2deploy.model.loading import brief, load_model, other_format, untrustable

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")]

RESNET = f"{MODELS}:resnet_like"
TRUST_HINTS = ("--trust posix", "--trust os", "--trust nt", "--trust builtins", "--trust-pickle", "weights_only")


class _System:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil(tmp_path, form: str):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if form == "torch.save":
        torch.save(_System(marker), path)
    else:
        path.write_bytes(pickle.dumps(_System(marker), protocol=4))
    return path, marker


def _line(run) -> str:
    return [line for line in run.stderr.splitlines() if line.strip()][0]


def _no_trust_hint(line: str) -> None:
    for text in TRUST_HINTS:
        assert text not in line, f"{text!r} suggested in {line!r}"


@pytest.mark.parametrize("form", slow_except(["torch.save", "plain pickle"], "torch.save"))
def test_os_system_pickle_as_model_names_the_callable_and_never_suggests_trusting_it(p2d, tmp_path, form):
    _, marker = _evil(tmp_path, form)
    system = f"{os.system.__module__}.system"  # posix.system on Linux and macOS, nt.system on Windows
    r = p2d("compile", "evil.pt", "--input-shape", "1,4", "--out", "out")
    assert_user_error(r, system, "can run code", "not trusted", "nothing was run")
    _no_trust_hint(_line(r))
    r = p2d("compile", "evil.pt", "--trust", os.system.__module__, "--trust", "os", "--input-shape", "1,4",
            "--out", "out")
    assert_user_error(r, system, "not even with --trust")
    _no_trust_hint(_line(r))
    assert not marker.exists(), "the pickle's payload ran"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("form", slow_except(["torch.save", "plain pickle"], "torch.save"))
def test_os_system_pickle_as_weights(p2d, tmp_path, form):
    _, marker = _evil(tmp_path, form)
    r = p2d("compile", RESNET, "--weights", "evil.pt", "--input-shape", "1,3,32,32", "--out", "out")
    assert_user_error(r, "--weights evil.pt", f"{os.system.__module__}.system", "nothing was run",
                      "model.state_dict()")
    _no_trust_hint(_line(r))
    assert not marker.exists()


def test_untrustable_modules_and_their_submodules():
    for name in ("posix.system", "nt.system", "os.system", "os.path.join", "builtins.eval", "builtins.exec",
                 "subprocess.Popen", "importlib.import_module", "importlib.util.find_spec", "runpy.run_path",
                 "pickle.loads", "shutil.rmtree", "socket.socket", "ctypes.CDLL", "marshal.loads", "io.open",
                 "functools.partial", "operator.methodcaller", "types.FunctionType", "code.interact"):
        assert untrustable(name), name
    for name in ("torch.nn.modules.conv.Conv2d", "models.InvertedResidual", "collections.OrderedDict",
                 "osmium.Thing", "systems.Net", "torchvision.models.resnet.ResNet"):
        assert not untrustable(name), name


def test_a_trusted_user_module_still_gets_its_trust_hint(tmp_path):
    """Classes of the user's own code keep the --trust MODULE hint; only code-running modules lose it."""
    torch.save(nn.Sequential(_Block()), tmp_path / "custom.pt")
    with pytest.raises(UserError) as info:
        load_model(str(tmp_path / "custom.pt"))
    assert f"--trust {__name__}" in info.value.hint


class _Block(nn.Module):
    def forward(self, x):
        return x


# --- other model formats ------------------------------------------------------------------------


def _tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()


def _torchscript(path):
    torch.jit.save(torch.jit.script(_tiny()), str(path))


def _pt2(path):
    torch.export.save(torch.export.export(_tiny(), (torch.randn(1, 3, 8, 8),)), str(path))


def _onnx(path):
    from prune2deploy.backends.onnx.export import export_onnx
    from prune2deploy.context import ExampleInputs

    export_onnx(_tiny(), ExampleInputs((torch.randn(1, 3, 8, 8),), {}), path, slim=False)


FORMATS = {"torchscript": ("ts.pt", _torchscript, "a TorchScript archive (torch.jit.save)"),
           "export": ("m.pt2", _pt2, "a torch.export program (.pt2)"),
           "onnx": ("m.onnx", _onnx, "an ONNX model")}


@pytest.mark.parametrize("kind", list(FORMATS))
def test_other_formats_as_model_are_named(tmp_path, kind):
    name, write, words = FORMATS[kind]
    write(tmp_path / name)
    assert other_format(tmp_path / name) == kind
    renamed = tmp_path / "model.bin"  # detected from the content, not the suffix
    renamed.write_bytes((tmp_path / name).read_bytes())
    assert other_format(renamed) == kind
    with pytest.raises(UserError) as info:
        load_model(str(tmp_path / name))
    line = info.value.one_line()
    assert words in line and "truncated" not in line and "torch.save(model)" in line
    with pytest.raises(UserError) as info:
        load_model(RESNET, weights=str(tmp_path / name))
    assert "--weights" in info.value.one_line() and "not a state_dict" in info.value.one_line()


def test_pt2_is_refused_because_torch_pruning_cannot_prune_it(tmp_path):
    """A torch.export program's module is a GraphModule of aten ops: no nn.Conv2d for torch-pruning to find, and
    it refuses train()/eval(). p2d says so rather than compile a model it cannot prune."""
    _pt2(tmp_path / "m.pt2")
    module = torch.export.load(str(tmp_path / "m.pt2")).module()
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in module.modules())
    with pytest.raises(UserError, match="nothing to prune"):
        load_model(str(tmp_path / "m.pt2"))


def test_other_formats_through_the_cli(p2d, tmp_path):
    _torchscript(tmp_path / "ts.pt")
    r = p2d("compile", "ts.pt", "--input-shape", "1,3,8,8", "--out", "out")
    assert_user_error(r, "ts.pt is a TorchScript archive", "torch.save(model)")
    assert not (tmp_path / "out").exists()


def test_plain_torch_save_files_still_load(tmp_path):
    torch.save(_tiny(), tmp_path / "m.pt")
    assert other_format(tmp_path / "m.pt") is None
    assert isinstance(load_model(str(tmp_path / "m.pt")).model, nn.Sequential)


def test_torch_messages_are_cut_at_a_word():
    text = ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument "
            "in `torch.load` from `False` to `True`. Re-running it will likely succeed")
    assert brief(RuntimeError(text)) == "Weights only load failed"
    long = RuntimeError("PytorchStreamReader failed locating file data.pkl: file not found " + "word " * 60)
    cut = brief(long)
    assert cut.endswith(" ...") and len(cut) <= 165 and cut[:-4].split()[-1] == "word"


# --- pickles where tensors are expected -------------------------------------------------------------


@pytest.mark.parametrize("flag", slow_except(["--example-inputs", "--data"], "--example-inputs"))
def test_code_pickle_as_inputs_or_data_gets_p2ds_message(p2d, tmp_path, flag):
    marker = tmp_path / "pwned"
    torch.save({"inputs": _System(marker)} if flag == "--data" else _System(marker), tmp_path / "evil.pt")
    shape = [] if flag == "--example-inputs" else ["--input-shape", "1,3,32,32"]
    r = p2d("compile", RESNET, *shape, flag, "evil.pt", "--out", "out")
    assert_user_error(r, "evil.pt", "pickled objects that are not plain tensors", f"{os.system.__module__}.system",
                      "will not unpickle code", "torch.save")
    _no_trust_hint(_line(r))
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_pickle_as_example_inputs_unit(tmp_path):
    from pathlib import Path

    from prune2deploy.model.inputs import load_example_inputs

    (tmp_path / "plain.pt").write_bytes(pickle.dumps(_System(tmp_path / "x"), protocol=4))
    with pytest.raises(UserError) as info:
        load_example_inputs(Path(tmp_path / "plain.pt"))
    line = info.value.one_line()
    assert f"{os.system.__module__}.system" in line and "weights_only" not in line
