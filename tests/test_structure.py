"""The package's shape, read from its source (nothing imported, nothing run): no import cycle, no
method-name branch outside ``glmlab.methods``, every shared constant defined once, and no core module
that imports the notebooks' subpackage.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from glmlab.constants import TRAIN_TYPES
from glmlab.methods import STRATEGIES

PACKAGE = Path(__file__).resolve().parent.parent / "glmlab"
NOTEBOOKS_PACKAGE = "glmlab.notebooks"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in MODULES.items()}


def _imports(name: str) -> set[str]:
    """The glmlab modules ``name`` imports, at the top or inside a function (a lazy import still is an edge)."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)  # `from glmlab import memory`
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in `base` itself
                found.add(base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycle() -> list[str] | None:
    """One import cycle of :data:`GRAPH` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(GRAPH):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_walker_sees_the_imports():
    assert "glmlab.loading" in GRAPH["glmlab.inference"]
    assert "glmlab.generation" in GRAPH["glmlab.chat"]
    assert "glmlab.memory" in GRAPH["glmlab.notebooks.memory_widget"]  # `from glmlab import memory`
    assert "glmlab.memory.shapes" in GRAPH["glmlab.memory.zero"]


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_core_module_imports_the_notebooks_subpackage():
    core = [n for n in MODULES if n != NOTEBOOKS_PACKAGE and not n.startswith(NOTEBOOKS_PACKAGE + ".")]
    offenders = {n: sorted(m for m in GRAPH[n] if m.startswith(NOTEBOOKS_PACKAGE)) for n in core}
    assert not {n: m for n, m in offenders.items() if m}


# --------------------------------------------------------------------------- method names
METHOD_NAMES = set(TRAIN_TYPES)
# Names that hold a method's name: a comparison of one of them with a method name is a method branch.
METHOD_HOLDERS = {"train_type", "method", "kind"}


def _holder(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name) and node.id in METHOD_HOLDERS:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in METHOD_HOLDERS:
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in METHOD_HOLDERS:
        return node.slice.value  # flags["train_type"]
    return None


def _literals(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def method_branches(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, source)`` of every comparison of a method holder with a method name literal."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_holder(o) for o in operands) and any(_literals(o) & METHOD_NAMES for o in operands):
                yield node.lineno, ast.unparse(node)
        elif isinstance(node, ast.Match) and _holder(node.subject):
            yield node.lineno, f"match {ast.unparse(node.subject)}"


def test_the_branch_finder_finds_branches():
    code = ("if args.train_type == 'lora': pass\nif method in ('freeze', 'all'): pass\n"
            "if info.kind != 'ptuning': pass\nif flags['train_type'] == 'all': pass\nif mode == 'glm': pass\n")
    assert [line for line, _ in method_branches(ast.parse(code))] == [1, 2, 3, 4]


def test_no_method_name_branch_outside_methods():
    found = [f"{MODULES[n].relative_to(PACKAGE.parent)}:{line}: {text}"
             for n in MODULES if n != "glmlab.methods" for line, text in method_branches(TREES[n])]
    assert not found, "branch on the method name outside glmlab.methods (ask its strategy):\n" + "\n".join(found)


def test_one_strategy_per_train_type():
    assert tuple(STRATEGIES) == TRAIN_TYPES or set(STRATEGIES) == set(TRAIN_TYPES)
    assert all(STRATEGIES[name].name == name for name in TRAIN_TYPES)


# --------------------------------------------------------------------------- constants
def _constants(tree: ast.Module) -> Iterator[tuple[str, object, int]]:
    """Module-level ``NAME = literal`` (upper-case names; tuples, strings, numbers, dicts of literals)."""
    for node in tree.body:
        targets, value = ([node.target], node.value) if isinstance(node, ast.AnnAssign) else (
            (node.targets, node.value) if isinstance(node, ast.Assign) else ([], None))
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper() and value is not None:
                try:
                    literal = ast.literal_eval(value)
                except ValueError:
                    continue
                yield target.id, literal, node.lineno


def _key(value: object) -> str | None:
    """A hashable form of a constant worth comparing (skip short, common values such as 0, True, "")."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):  # sizes coincide (1024 tokens, 1024 bytes); sentinels such as -100 do not
        return repr(value) if value < 0 else None
    if isinstance(value, str):
        return repr(value) if len(value) >= 8 else None
    return repr(value) if value else None


def test_no_constant_defined_twice():
    """No value of a module constant is defined in two places: a shared one lives in glmlab.constants
    (or the one module that owns it) and is imported from there."""
    by_value: dict[str, list[str]] = {}
    for name, tree in TREES.items():
        for constant, value, line in _constants(tree):
            if (key := _key(value)) is not None:
                by_value.setdefault(key, []).append(f"{name}:{line} {constant}")
    same = {k: v for k, v in by_value.items() if len(v) > 1}
    assert not same, f"the same value defined twice: {same}"


@pytest.mark.parametrize("constant", ["MODES", "TRAIN_TYPES", "PRECISIONS", "IGNORE_INDEX", "CHECKPOINT_INFO_NAME"])
def test_shared_constants_live_in_constants(constant):
    homes = [n for n, tree in TREES.items() for c, _, _ in _constants(tree) if c == constant]
    assert homes == ["glmlab.constants"]
