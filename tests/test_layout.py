"""The package's shape: stages import only from stages below them, storage never imports the
runtime, module-level imports have no cycles, and the CLI starts without the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agent"

# Lower layers first; a module may import from its own layer or any layer before it.
LAYERS = [
    {"agent.config", "agent.errors", "agent.events", "agent.atomic", "agent.metrics"},
    {"agent.runtime"},
    {"agent.gallery"},
    {"agent.decide"},
    {"agent.stream"},
    {"agent.publish"},
    {"agent.fleet"},
    {"agent.ops"},
    {"agent.service", "agent.commands", "agent.cli", "agent.__main__", "agent.api"},
]
STORAGE = {"agent.gallery.store", "agent.gallery.space", "agent.gallery.scoring",
           "agent.gallery.gallery", "agent.gallery.transfer"}  # fmt: skip
HEAVY = ("onnxruntime", "cv2", "usearch", "numpy", "paho", "pydantic")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped |= {id(n) for n in ast.walk(node)}
    return skipped


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """agent.* modules imported by a file (function-level imports too, unless told)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agent"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("agent")}
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}


def test_every_import_goes_down_the_stages():
    wrong = []
    for name, path in modules().items():
        for target in imports(path):
            if target != "agent" and layer(target) > layer(name):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports from a stage above:\n" + "\n".join(sorted(wrong))


def test_storage_never_imports_the_runtime():
    offenders = {
        f"{name} imports {target}"
        for name, path in modules().items()
        if name in STORAGE
        for target in imports(path)
        if target.startswith("agent.runtime")
    }
    assert not offenders, offenders


def test_module_level_imports_have_no_cycles():
    graph = {name: {t for t in imports(path, True) if t in modules()} for name, path in
             modules().items()}  # fmt: skip
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, node, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("code", ["import agent.cli", "import agent"])
def test_cli_and_package_import_without_heavy_libraries(code):
    probe = (
        f"{code}; import sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_onnxruntime_and_usearch_load_in_either_order():
    """The gallery loads onnxruntime before usearch: the other order crashes onnxruntime."""
    for first, then in [("agent.gallery.space", "agent.runtime.session"),
                        ("agent.runtime.session", "agent.gallery.space")]:  # fmt: skip
        code = f"import {first}, {then}; print('ok')"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == "ok", (first, out.returncode)


def test_gallery_list_reads_metadata_without_numpy_or_the_index(tmp_path):
    from agent.gallery.store import GalleryModel, GallerySettings, GalleryStore

    store = GalleryStore.create(tmp_path / "g", GalleryModel("m", "fp32", "f" * 16, "0", 4),
                                GallerySettings())  # fmt: skip
    store.close()
    probe = (
        "import atexit, sys; atexit.register(lambda: print(sorted({m.split('.')[0] for m in "
        f"sys.modules if m.split('.')[0] in {HEAVY[:-1]!r}}}))); "
        f"sys.argv = ['agent', 'gallery', 'list', '-g', {str(tmp_path / 'g')!r}, '--json']; "
        "from agent.cli import main; main()"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[]"), out.stdout
