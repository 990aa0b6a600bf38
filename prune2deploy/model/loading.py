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


def _torch_load(path: Path, weights_only: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except UserError:
        raise
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            module = found.group(1).rsplit(".", 1)[0]
            raise user_error(f"{path} references {found.group(1)}, which is not trusted; nothing was run",
                             f"if you trust this file, pass --trust {module} (or --trust-pickle)") from exc
        raise _unreadable(path, exc) from exc
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: Path, exc: Exception) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return user_error(f"cannot read {path}: not a complete torch.save file ({first[:160]})",
                      "the file may be truncated or corrupt; save it again with torch.save(model)")


def _load_weights(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise user_error(f"weights file not found: {path}")
    state = _torch_load(path, weights_only=True)
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
