"""The import rules of docs/ARCHITECTURE.md: no circles between files or between packages,
each model kind importable on its own, the op vocabulary neutral, the client torch-free, and
pyflakes' rules clean."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("engine", "midi_bridge")
KINDS = ("texture", "shape", "music")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere in it (top level, inside functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for source in SOURCES for p in (ROOT / source).rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in `graph`, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def package_of(module: str) -> str:
    """engine.texture.model -> engine.texture; engine.ops -> engine.ops; midi_bridge.x -> midi_bridge."""
    parts = module.split(".")
    if parts[0] != "engine":
        return parts[0]
    return ".".join(parts[:2])


def test_no_import_circle_between_files():
    assert cycle(import_graph()) is None, f"import circle: {' -> '.join(cycle(import_graph()))}"


def test_no_import_circle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        packages.setdefault(package_of(module), set()).update(package_of(t) for t in targets)
    graph = {package: targets - {package} for package, targets in packages.items()}
    assert cycle(graph) is None, f"import circle between packages: {' -> '.join(cycle(graph))}"


def test_the_op_vocabulary_and_the_kinds_stay_on_their_side():
    graph = import_graph()
    assert not {t for t in graph["engine.ops"] if t.startswith("engine")}, "engine.ops must import no engine module"
    for kind in KINDS:
        for module, targets in graph.items():
            if module.startswith(f"engine.{kind}."):
                wrong = {t for t in targets if package_of(t) in {"engine.server", "engine.cli", "midi_bridge"}
                         or package_of(t) in {f"engine.{k}" for k in KINDS if k != kind}}
                assert not wrong, f"{module} imports {sorted(wrong)}: a kind uses only engine.ops and shared machinery"


def test_the_circle_finder_finds_circles():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_package_imports_on_its_own(kind):
    """Every module of the kind, each in a fresh interpreter first: a circle fails on import."""
    modules = sorted(module_name(p) for p in (ROOT / "engine" / kind).glob("*.py"))
    script = ("import importlib, sys\nfor name in sys.argv[1:]:\n"
              "    for loaded in [m for m in sys.modules if m.startswith('engine')]: del sys.modules[loaded]\n"
              "    importlib.import_module(name)\n")
    result = subprocess.run([sys.executable, "-c", script, *modules], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_pyflakes_rules_pass():
    """Unused and undefined names, shadowed imports, ... (ruff's F rules, which are pyflakes')."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--no-cache", "--output-format",
                             "concise", "engine", "midi_bridge", "blender_addon"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_the_ops_modules_and_the_client_do_not_import_torch():
    code = ("import sys; import engine.client, engine.kinds, engine.texture.ops, engine.shape.ops, engine.music.ops; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]
