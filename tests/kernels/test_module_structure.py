"""The modules of widebnn.kernels import each other without a circle."""

import ast
import pathlib

import widebnn.kernels

KERNELS_DIR = pathlib.Path(widebnn.kernels.__file__).parent


def _module_level_imports() -> dict[str, set[str]]:
    """``{module: {modules of the package it imports at module level}}``."""
    graph = {}
    for path in KERNELS_DIR.glob("*.py"):
        imports = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                imports.add(node.module)
        graph[path.stem] = imports
    return graph


def _find_cycle(graph):
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        path.append(module)
        for child in sorted(graph.get(module, ())):
            cycle = visit(child)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return None


def test_no_module_level_import_cycle():
    assert _find_cycle(_module_level_imports()) is None


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_evaluation_does_not_import_the_layer_module():
    # Layer.kernel calls _evaluate; _evaluate, _inputs and _tiling never reach back.
    graph = _module_level_imports()
    reachable, stack = set(), ["_evaluate"]
    while stack:
        for child in graph.get(stack.pop(), ()):
            if child not in reachable:
                reachable.add(child)
                stack.append(child)
    assert "_kernel" not in reachable
