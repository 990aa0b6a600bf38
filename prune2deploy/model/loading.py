"""Turn the MODEL argument into an nn.Module without running code the user did not opt into.

Forms: a `torch.save(model)` file (weights-only unpickling against an allow-list of classes),
`package.module:callable` or `file.py:callable`, `torchvision:NAME`, `timm:NAME`, `hf:PATH`.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import pickletools
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from prune2deploy.runtime.compat import import_optional
from prune2deploy.errors import UserError, user_error

# Module prefixes whose classes a model pickle may name without an opt-in: torch's own layers and the
# well-known model libraries (only when installed: a class that cannot be imported is refused).
TRUSTED_PREFIXES = ("torch.nn.", "torch._C._nn.", "torchvision.models.", "torchvision.ops.misc.",
                    "timm.layers.", "timm.models.", "transformers.")

# Modules whose callables can run code, start processes, open files or sockets, or call whatever they are given.
# A pickle naming one of them (or a submodule: os.path, importlib.util) is refused even with --trust, and no hint
# ever suggests trusting them: nothing a model needs lives there.
UNTRUSTABLE_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "pty", "builtins",
    "__builtin__", "sys", "importlib", "imp", "zipimport", "pkgutil", "runpy", "site", "pickle", "_pickle",
    "copyreg", "marshal", "shelve", "dbm", "code", "codeop", "types", "functools", "operator", "_operator",
    "inspect", "gc", "ctypes", "_ctypes", "io", "_io", "pathlib", "shutil", "tempfile", "glob", "fileinput",
    "tarfile", "zipfile", "socket", "_socket", "ssl", "select", "selectors", "asyncio", "multiprocessing",
    "threading", "_thread", "signal", "mmap", "fcntl", "resource", "webbrowser", "urllib", "http", "ftplib",
    "smtplib", "telnetlib", "xmlrpc", "pdb", "bdb", "pydoc", "timeit", "trace", "profile", "cProfile",
    "sqlite3", "venv", "ensurepip", "distutils", "setuptools", "pip", "numpy.testing", "numpy.f2py",
    "numpy.distutils", "torch.hub", "torch.serialization", "torch.package", "torch.jit",
    "torch.utils.cpp_extension",
})


def untrustable(name: str) -> bool:
    """True for a global (module.attr) from UNTRUSTABLE_MODULES or one of their submodules."""
    module = name.rpartition(".")[0] or name
    parts = module.split(".")
    return any(".".join(parts[:i]) in UNTRUSTABLE_MODULES for i in range(1, len(parts) + 1))


@dataclass
class LoadedModel:
    model: nn.Module
    name: str  # used for the default output directory
    source: str


def load_model(spec: str, weights: str | None = None, trust: tuple[str, ...] = (),
               trust_pickle: bool = False) -> LoadedModel:
    """Load the model named by `spec` (see module docstring) in eval mode."""
    if spec.startswith(("torchvision:", "timm:", "hf:")):
        loaded = _load_from_library(spec)
    elif looks_like_callable(spec):
        loaded = _load_from_callable(spec)
    else:
        loaded = _load_pickled_module(Path(spec), trust, trust_pickle)
    if weights is not None:
        _load_weights(loaded.model, Path(weights))
    loaded.model.eval()
    return loaded


def looks_like_callable(spec: str) -> bool:
    head, sep, tail = spec.rpartition(":")
    return bool(sep) and tail.isidentifier() and not Path(spec).exists() and len(head) > 1


# --- torch.save(model) files -------------------------------------------------------------------


def _load_pickled_module(path: Path, trust: tuple[str, ...], trust_pickle: bool) -> LoadedModel:
    if not path.exists():
        raise user_error(f"model file not found: {path}",
                         "pass a torch.save(model) file, package.module:callable, or torchvision:NAME")
    if path.is_dir():
        if (path / "config.json").exists():
            raise user_error(f"{path} is a directory", f"for a transformers model directory use hf:{path}")
        raise user_error(f"{path} is a directory, not a model file")
    refuse_other_format(path, "model")
    if trust_pickle:
        obj = _torch_load(path, weights_only=False)
    else:
        obj = _load_weights_only(path, trust)
    if not isinstance(obj, nn.Module):
        kind = type(obj).__name__
        hint = ("this looks like a state_dict: pass the architecture as package.module:callable "
                "with --weights FILE") if isinstance(obj, dict) else "save the model with torch.save(model)"
        raise user_error(f"{path} holds a {kind}, not an nn.Module", hint)
    return LoadedModel(obj, path.stem, str(path))


def _load_weights_only(path: Path, trust: tuple[str, ...]):
    prefixes = TRUSTED_PREFIXES + tuple(p if p.endswith((".", ":")) else p + "." for p in trust)
    names = _globals_in_checkpoint(path)
    dangerous = sorted(n for n in names if untrustable(n))
    if dangerous:
        raise _refuse_code(path, dangerous)
    untrusted = sorted(n for n in names if not n.startswith(prefixes))
    if untrusted:
        more = f" (and {len(untrusted) - 1} more)" if len(untrusted) > 1 else ""
        modules = " ".join(sorted({f"--trust {n.rsplit('.', 1)[0]}" for n in untrusted}))
        raise user_error(f"{path} references class {untrusted[0]}{more}, which is not trusted; nothing was run",
                         f"if you trust this file, pass {modules} (or --trust-pickle for everything)")
    allowed = [_resolve_global(name, path) for name in names]
    with torch.serialization.safe_globals(allowed):
        return _torch_load(path, weights_only=True)


def _globals_in_checkpoint(path: Path) -> list[str]:
    """Names of the classes/functions the pickle refers to that torch does not allow by default."""
    if zipfile.is_zipfile(path):
        try:
            return torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception as exc:  # a zip that is not a torch checkpoint, or a damaged one
            raise _unreadable(path, exc) from exc
    return _globals_in_plain_pickle(path)


def _globals_in_plain_pickle(path: Path) -> list[str]:
    """Globals named by a non-zip pickle, read from its opcodes without executing anything."""
    names, strings = [], []
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if isinstance(arg, str) and "UNICODE" in op.name or op.name.endswith("STRING"):
                    strings.append(str(arg))
                elif op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:
        pass  # not a pickle, or truncated: torch.load below reports it
    safe = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}
    return sorted({n for n in names if n not in safe and not n.startswith(("torch.", "builtins.", "__builtin__."))}
                  | {n for n in names if n.startswith(("builtins.", "__builtin__.")) and n.split(".")[-1] not in
                     ("set", "frozenset", "int", "float", "bool", "str", "slice", "complex", "bytearray")})


def _resolve_global(name: str, path: Path):
    module_name, _, attr = name.rpartition(".")
    if untrustable(name):  # --trust named its module: still never (nothing is imported from it)
        raise _refuse_code(path, [name])
    if module_name.startswith(("torchvision", "transformers", "timm")):
        import_optional("torchvision")  # transformers and timm import it when installed
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:
        raise user_error(f"{path} needs {name}, but {module_name} cannot be imported ({exc})",
                         "install the library the model was built with") from exc
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise user_error(f"{path} needs {name}, which does not exist in the installed {module_name}",
                         "install the library version the model was saved with")
    if not (isinstance(obj, type) or callable(obj) and module_name.startswith(("torch.nn.", "torch._C._nn"))):
        raise user_error(f"{path} references {name}, which is not a class; refused",
                         f"if you trust this file, pass --trust {module_name}")
    return obj


def _torch_load(path: Path, weights_only: bool, role: str = "model"):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except UserError:
        raise
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        names = [found.group(1)] if found else [n for n in _globals_in_pickle(path) if untrustable(n)]
        if names and untrustable(names[0]):
            raise _refuse_code(path, names, role) from exc
        if found:
            module = found.group(1).rsplit(".", 1)[0]
            raise user_error(f"{path} references {found.group(1)}, which is not trusted; nothing was run",
                             f"if you trust this file, pass --trust {module} (or --trust-pickle)") from exc
        raise _unreadable(path, exc) from exc
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: Exception) -> UserError:
    refuse_other_format(path, "model")
    return user_error(f"cannot read {path}: not a complete torch.save file ({why_unreadable(path, exc)})",
                      "the file may be truncated or corrupt; save it again with torch.save(model)")


def why_unreadable(path: Path, exc: Exception) -> str:
    """Why torch.load failed, in a few words: a file that is neither a zip (torch.save) nor a pickle says so;
    else the first sentence of torch's message."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        head = b""
    if head and not head.startswith(b"PK") and head[:1] != b"\x80":
        return "the file is neither a zip archive nor a pickle"
    text = brief(exc)
    return text if re.search(r"[A-Za-z]{3}", text) else f"{type(exc).__name__}: {text}"


def _refuse_code(path: Path, names: list[str], role: str = "model") -> UserError:
    """A pickle that calls into UNTRUSTABLE_MODULES: refused whatever --trust says, with no hint to trust it."""
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    hint = ("save the weights with torch.save(model.state_dict())" if role == "weights" else
            "p2d takes a model saved with torch.save(model) (layers' classes only), or its code as "
            "package.module:callable")
    label = f"--weights {path}" if role == "weights" else str(path)
    return user_error(f"{label} calls {names[0]}{more}, which can run code or touch files: it is not trusted, not "
                      f"even with --trust, and nothing was run", hint)


def brief(exc: Exception, limit: int = 160) -> str:
    """The first sentence of an exception's first line, cut at a word (torch's messages run on for paragraphs)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    sentence = re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0]
    if len(sentence) <= limit:
        return sentence.rstrip(".")
    return sentence[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


# --- files p2d does not take as MODEL ----------------------------------------------------------

OTHER_FORMATS = {
    "torchscript": ("a TorchScript archive (torch.jit.save): it holds compiled code, not the nn.Module layers "
                    "torch-pruning prunes"),
    "export": ("a torch.export program (.pt2): its layers are graph operations, not nn.Conv2d/nn.Linear modules, "
               "so torch-pruning finds nothing to prune in it"),
    "onnx": "an ONNX model: p2d prunes the PyTorch model and exports the ONNX file itself",
}


def other_format(path: Path) -> str | None:
    """"torchscript", "export" or "onnx" when `path` is one of these (torch.load reads none of them), else None.
    Read from the zip's entries or the protobuf header; nothing in the file is executed."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            if any(n.endswith("/data.pkl") for n in names) and any(n.endswith("/constants.pkl") or "/code/" in n
                                                                    for n in names):
                return "torchscript"
            if any(n.endswith(("/archive_format", "/models/model.json")) or n.startswith("models/")
                   for n in names) and not any(n.endswith("/data.pkl") for n in names):
                return "export"
            return None
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    return "onnx" if _onnx_header(head) or (path.suffix.lower() == ".onnx" and _onnx_loads(path)) else None


def _onnx_header(head: bytes) -> bool:
    """A ModelProto starts with ir_version (field 1, varint, 3..15), then producer, domain, graph or opsets."""
    return len(head) >= 3 and head[0] == 0x08 and 3 <= head[1] <= 15 and head[2] in (
        0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72)


def _onnx_loads(path: Path) -> bool:
    try:
        import onnx

        return bool(onnx.load_model(str(path), load_external_data=False).graph.node)
    except Exception:
        return False


def refuse_other_format(path: Path, role: str) -> None:
    """A TorchScript, torch.export or ONNX file given as MODEL (role "model") or --weights: say what it is and
    what p2d takes instead."""
    kind = other_format(path)
    if kind is None:
        return
    if role == "model":
        raise user_error(f"{path} is {OTHER_FORMATS[kind]}",
                         "pass the PyTorch model: a torch.save(model) file, or its code as package.module:callable")
    raise user_error(f"--weights {path} is {OTHER_FORMATS[kind].split(':')[0]}, not a state_dict",
                     "save the weights with torch.save(model.state_dict())")


# --- pickles given where tensors are expected (--example-inputs, --data) -----------------------


def refused_pickle(path: Path, exc: Exception, what: str, hint: str) -> UserError | None:
    """When a weights-only torch.load of tensors failed on a pickle that names other objects: p2d's own line,
    naming the first offending global where it can be read (nothing is unpickled to find it)."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    names = [found.group(1)] if found else _globals_in_pickle(path)
    if names:
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        objects = f"pickled objects that are not plain tensors ({names[0]}{more})"
    else:
        return user_error(f"cannot read {what} {path}: it is a pickle that torch.load cannot read as plain tensors "
                          f"(not written by torch.save?); p2d will not unpickle code", hint)
    return user_error(f"cannot read {what} {path}: it holds {objects}; p2d will not unpickle code", hint)


def _globals_in_pickle(path: Path) -> list[str]:
    """Globals a pickle names beyond plain tensors, zip (torch.save) or not, read without executing it."""
    try:
        if zipfile.is_zipfile(path):
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        return _globals_in_plain_pickle(path)
    except Exception:
        return []


def _load_weights(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise user_error(f"weights file not found: {path}")
    refuse_other_format(path, "weights")
    state = _torch_load(path, weights_only=True, role="weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise user_error(f"{path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise user_error(f"{path} does not fit the model: {str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}",
                         "pass the weights saved from this architecture") from exc


# --- code and libraries ------------------------------------------------------------------------


def import_callable(spec: str):
    """`package.module:attr` or `file.py:attr` -> the attribute (the module is imported: the user named it)."""
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            if not Path(target).exists():
                raise user_error(f"file not found: {target}")
            module = _import_file(Path(target))
        else:
            module = importlib.import_module(target)
    except UserError:
        raise
    except ImportError as exc:
        raise user_error(f"cannot import {target}: {exc}", "check the module path and PYTHONPATH") from exc
    found = getattr(module, attr, None)
    if found is None:
        raise user_error(f"{target} has no attribute {attr}")
    return found


def _import_file(path: Path):
    """Import `path` as a module named after its stem, registered so objects it defines pickle by reference.
    A module already imported from the same file is reused: executing it again would make a second copy of
    its classes, and objects of the first copy would no longer pickle."""
    loaded = sys.modules.get(path.stem)
    if loaded is not None and getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == path.resolve():
        return loaded
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


def _load_from_callable(spec: str) -> LoadedModel:
    factory = import_callable(spec)
    attr = spec.rpartition(":")[2]
    model = factory() if not isinstance(factory, nn.Module) else factory
    if not isinstance(model, nn.Module):
        raise user_error(f"{spec} returned a {type(model).__name__}, not an nn.Module")
    return LoadedModel(model, attr, spec)


def _load_from_library(spec: str) -> LoadedModel:
    lib, _, name = spec.partition(":")
    if lib == "torchvision":
        tv = import_optional("torchvision")
        if tv is None:
            raise user_error("torchvision is not importable here", "pip install torchvision, or pass a model file")
        try:
            model = tv.models.get_model(name, weights=None)
        except ValueError as exc:
            raise user_error(f"torchvision has no model {name!r}",
                             "see torchvision.models.list_models()") from exc
        return LoadedModel(model, name, spec)
    if lib == "timm":
        timm = import_optional("timm")
        if timm is None:
            raise user_error("timm is not importable here", "pip install timm, or pass a model file")
        if name not in timm.list_models():
            raise user_error(f"timm has no model {name!r}", "see timm.list_models()")
        return LoadedModel(timm.create_model(name, pretrained=False), name, spec)
    return _load_hf(Path(name), spec)


def _load_hf(path: Path, spec: str) -> LoadedModel:
    if not (path / "config.json").exists():
        raise user_error(f"{path} is not a transformers model directory (no config.json)",
                         "hf:PATH takes a local directory saved with save_pretrained")
    model = import_transformers().AutoModel.from_pretrained(str(path), local_files_only=True,
                                                   attn_implementation="eager")
    return LoadedModel(model, path.name, spec)


def import_transformers():
    """transformers, offline (nothing downloads from a hub); a UserError when it is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_optional("torchvision")  # transformers imports it when installed
    transformers = import_optional("transformers")
    if transformers is None:
        raise user_error("transformers is not importable here", "pip install 'prune2deploy[hf]'")
    return transformers
