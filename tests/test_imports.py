"""The core imports without napari, Qt or magicgui, and exposes the documented API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import napari_clipseg as ncs

PUBLIC = [
    "load_model",
    "ClipSegPredictor",
    "segment",
    "ClipSeg",
    "ClipSegConfig",
    "iter_segment",
    "run",
    "SegmentOptions",
    "build_record",
    "read_record",
]
SRC = Path(__file__).resolve().parents[1] / "src" / "napari_clipseg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _internal_imports() -> dict[str, set[str]]:
    """Module -> package modules it imports (at any depth: module level and inside functions)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                for alias in node.names:  # `from . import x` may name a module
                    edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                edges.update(n for n in names if n in modules)
        edges.discard(name)
    return graph


def test_no_import_cycle_in_the_package():
    graph = _internal_imports()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target not in graph:
                continue
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target] if target in path else [module, target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert graph.get("napari_clipseg.segmentation.pipeline")


#: The package's layers, bottom to top (docs/architecture.md): a module may import its own layer
#: and the layers below it, never one above. The top-level modules are the shared basics.
LAYERS = [
    "basics",
    "modeling",
    "precision",
    "segmentation",
    "io",
    "datasets",
    "evaluation",
    "learning",
    "project",
    "cli",
    "_napari",
]
#: At most this many modules of shared basics at the top level (besides __init__).
MAX_BASICS = 8


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "basics"


def test_layers_import_only_downwards():
    """modeling <- precision <- segmentation <- io <- ... <- _napari: no import runs back up."""
    graph = _internal_imports()
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if target in graph and rank[_layer(target)] > rank[_layer(module)]
    ]
    assert upward == []


def test_the_tree_is_the_layers():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - {"basics"}
    basics = [p.name for p in SRC.glob("*.py") if p.name != "__init__.py"]
    assert len(basics) <= MAX_BASICS, basics


def test_the_network_imports_nothing_above_it():
    graph = _internal_imports()
    above = {
        t for m, ts in graph.items() if _layer(m) == "modeling" for t in ts if _layer(t) not in ("basics", "modeling")
    }
    assert above == set()


def test_functions_stay_short():
    """Size budget: no function over 60 lines (docstring included)."""
    long = [
        f"{path.relative_to(SRC)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []


def test_only_the_napari_folder_imports_gui_libraries():
    gui = ("napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6")
    offenders = []
    for path in SRC.rglob("*.py"):
        if "_napari" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else []
            offenders += [f"{path.relative_to(SRC)}: {n}" for n in names if n.split(".")[0] in gui]
    assert offenders == []


def test_core_import_pulls_in_no_gui_modules():
    code = (
        "import sys, napari_clipseg as n; n.ClipSegPredictor; n.load_model; n.segment; "
        "import napari_clipseg.cli, napari_clipseg.segmentation.pipeline; "
        "bad = [m for m in ('napari', 'qtpy', 'magicgui', 'PyQt6', 'PyQt5', 'PySide6') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_public_api_names():
    for name in PUBLIC:
        assert getattr(ncs, name) is not None
    assert set(PUBLIC) <= set(dir(ncs))


def test_modules_stay_small():
    """Size budget: no module over 400 lines; split a module by responsibility when it grows."""
    big = [
        f"{path.relative_to(SRC)} ({n} lines)"
        for path in SRC.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    ]
    assert big == []


def test_no_export_is_shadowed_by_a_submodule():
    """``ncs.evaluate`` must stay the function after ``import napari_clipseg.evaluation.scoring`` (an export
    named like a submodule would be replaced by the module once anything imports it)."""
    import pkgutil

    import napari_clipseg

    modules = {m.name for m in pkgutil.iter_modules(napari_clipseg.__path__)}
    assert [name for name in napari_clipseg._EXPORTS if name in modules] == []


def test_no_module_reaches_into_another_objects_private_fields():
    """A private field (``self._x``) set by a class of this package is read or written only by its
    own module: coupling shows as imports and public names."""
    src = SRC
    owners: dict[str, set[str]] = {}
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in src.rglob("*.py")}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.ctx, ast.Store)
            ):
                owners.setdefault(node.attr, set()).add(str(path))
    reaches = [
        f"{path.relative_to(src)}:{node.lineno} {ast.unparse(node)}"
        for path, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in owners
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        and str(path) not in owners[node.attr]
    ]
    assert reaches == []
