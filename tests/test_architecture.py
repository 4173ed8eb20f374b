"""The layering of docs/architecture.md, read from the source: rules -> stages -> science -> io.

Each check reads the package's imports with :mod:`ast` (nothing is imported but for the
``__all__`` check), so a new circle, an import hidden in a function, a private name used across
modules or a science module reaching up into a stage fails here with the file and line.
"""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "brainpred"


def _modules():
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("brainpred",) + path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts).removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _target(module, node):
    """The absolute module an ``ImportFrom`` node imports from."""
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    if not node.level:
        return node.module or ""
    base = package.split(".")[:len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module):
    """``(imported module, imported name or None, line, at module level)`` of one module."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _target(module, node)
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in MODULES:
                    out.append((full, None, node.lineno, id(node) in top))
                else:
                    out.append((target, alias.name, node.lineno, id(node) in top))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, None, node.lineno, id(node) in top) for alias in node.names)
    return [i for i in out if i[0].startswith("brainpred")]


def test_the_package_imports_no_circle():
    graph = {m: {t for t, _, _, top in _imports(m) if top and t in MODULES and t != m}
             for m in MODULES}
    state, circles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not circles, f"import circles: {circles}"


def test_no_package_import_is_hidden_in_a_function():
    hidden = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}"
              for m in MODULES for t, _, line, top in _imports(m) if not top]
    assert not hidden, hidden


def test_no_private_name_crosses_modules():
    """Neither ``from .x import _name`` nor ``x._name`` on another brainpred module."""
    bad = []
    for m, path in MODULES.items():
        aliases = {}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for t, name, line, _ in _imports(m):
            if name and name.startswith("_") and not name.startswith("__"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {t}.{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _target(m, node).startswith("brainpred"):
                for alias in node.names:
                    if f"{_target(m, node)}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses "
                           f"{node.value.id}.{node.attr}")
    assert not bad, bad


def test_nothing_below_the_stages_imports_a_stage():
    up = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}"
          for m in MODULES if not m.startswith("brainpred.stages")
          for t, _, line, _ in _imports(m) if t.startswith("brainpred.stages")]
    assert not up, up


def test_there_is_one_stage_module_per_rules_file():
    """Each rules file with rules that compute (download calls brainpred.download directly)
    has its stage module, and each stage module has its rules file."""
    shared = {"plan", "paths", "resources"}
    rules = {p.stem for p in (ROOT / "workflow" / "rules").glob("*.smk")} - shared - {"download"}
    stages = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__", "common"}
    assert rules == stages


def test_rule_scripts_call_stage_entry_points_only():
    """The scripts only wire ``snakemake`` objects to a stage function (no science)."""
    allowed = {"brainpred.stages", "brainpred.config", "brainpred.jobs", "brainpred.conditions",
               "brainpred.download", "brainpred.io"}
    for path in sorted((ROOT / "workflow" / "scripts").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("brainpred"):
                assert any(node.module == a or node.module.startswith(a + ".")
                           for a in allowed), f"{path.name}: imports {node.module}"
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef)), path.name


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_lists_its_public_names(module):
    mod = importlib.import_module(module)
    assert hasattr(mod, "__all__"), f"{module} has no __all__"
    missing = [n for n in mod.__all__ if not hasattr(mod, n)
               and not (PACKAGE / "stages" / f"{n}.py").exists()]
    assert not missing, f"{module}.__all__ lists undefined names {missing}"
