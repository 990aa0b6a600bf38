"""The layout's rules, read from the imports (docs/architecture.md): layers only look down, a target folder is
self-contained, pipeline.py names no backend, stages before export write nothing themselves, no import circles."""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PKG = "prune2deploy"
# Lowest first: a module may import its own layer and the layers below, never above.
LAYERS = [
    ("base", ["errors", "context", "runtime", "examples"]),
    ("registry", ["backends", "backends.registry", "backends.target", "backends.onnx", "backends.cpu", "backends.ort_cpu",
                  "backends.ov_cpu", "backends.tensorrt", "backends.torch_cuda"]),  # packages' __init__: the targets' rows, as data
    ("config", ["config"]),
    ("model/artifacts", ["model", "artifacts"]),
    ("data", ["data"]),
    ("passes, precision", ["passes", "precision"]),
    ("backends", ["backends.*"]),
    ("recovery/search", ["recovery", "search"]),
    ("report", ["report"]),
    ("pipeline", ["pipeline"]),
    ("cli", ["cli", "__main__", ""]),
]
STAGES_BEFORE_EXPORT = ("model", "data", "passes", "precision", "recovery", "search", "config", "runtime")
WRITERS = {"write_atomic", "publish_dir", "workspace"}


def _modules() -> dict[str, Path]:
    found = {}
    for root, prefix in ((REPO / PKG, PKG), (REPO / "backends", f"{PKG}.backends")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix] + parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> int:
    rel = module[len(PKG) + 1:] if module != PKG else ""
    best = None
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            exact = rel == name
            wild = name.endswith(".*") and rel.startswith(name[:-1])
            prefix = name and not name.endswith(".*") and rel.startswith(name + ".") and not name.startswith("backends")
            if exact or wild or prefix:
                return index if exact else (best if best is not None else index)
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py")


def _imports(module: str, path: Path):
    """(imported module, line, names) for every import of our package, lazy ones included."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith(PKG):
                continue
            for alias in node.names:
                if base == PKG and alias.name == "__version__":
                    continue  # a constant of the root package, not the root's lazy API
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PKG):
                    yield alias.name, node.lineno, None


def _target_folder(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[:2] == [PKG, "backends"] and len(parts) >= 3 and \
        parts[2] not in ("registry", "target") else None


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_layers_only_look_down():
    wrong = []
    for module, path in MODULES.items():
        for imported, line, _ in _imports(module, path):
            if imported not in MODULES:
                continue
            if _target_folder(module) and _target_folder(module) == _target_folder(imported):
                continue  # a target folder is one unit: its row may name its own driver
            if _layer(imported) > _layer(module):
                wrong.append(f"{path.relative_to(REPO)}:{line} ({LAYERS[_layer(module)][0]}) imports {imported} "
                             f"({LAYERS[_layer(imported)][0]})")
    assert not wrong, "imports that look up:\n" + "\n".join(wrong)


def test_pipeline_names_no_backend():
    path = REPO / PKG / "pipeline.py"
    allowed = {f"{PKG}.backends.registry"}
    named = [f"line {line}: {imported}" for imported, line, _ in _imports(f"{PKG}.pipeline", path)
             if imported.startswith(f"{PKG}.backends") and imported not in allowed]
    from prune2deploy.backends.registry import TARGETS

    words = set(TARGETS) | {"ort", "onnxruntime", "tensorrt", "torch_cuda", "openvino"}
    literals = [f"line {n.lineno}: {n.value!r}" for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in words]
    assert not named and not literals, f"pipeline.py names a backend: {named + literals}"


def test_stages_before_export_write_nothing_themselves():
    """They keep files (checkpoints, latency tables) through artifacts/, never with the write primitives."""
    wrong = []
    for module, path in MODULES.items():
        rel = module[len(PKG) + 1:]
        if not rel.startswith(STAGES_BEFORE_EXPORT):
            continue
        for imported, line, name in _imports(module, path):
            if imported == f"{PKG}.artifacts.outdir" and (name is None or name in WRITERS):
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {name} from artifacts.outdir")
    assert not wrong, "\n".join(wrong)


def test_only_report_draws():
    drawing = [f"{path.relative_to(REPO)}" for module, path in MODULES.items()
               if ("import matplotlib" in path.read_text() or "from matplotlib" in path.read_text())
               and not module.startswith(f"{PKG}.report")]
    assert not drawing, f"matplotlib outside report/: {drawing}"


def test_no_import_circles_between_modules():
    """Top-level imports only (lazy ones inside functions are how a circle is broken at import time, and the
    layer rule above already bounds them)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        sub = ast.Module(body=top, type_ignores=[])
        deps = set()
        for node in ast.walk(sub):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PKG):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in MODULES else node.module)
        graph[module] = {d for d in deps if d in MODULES and d != module}
    circles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                circles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_top_level_is_the_pipeline_and_little_else():
    top = sorted(p.name for p in (REPO / PKG).glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "context.py", "errors.py", "pipeline.py"], top
