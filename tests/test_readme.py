"""The README's Python snippets are tests: each runs as written.

Every fenced ``python`` block of ``README.md`` is read from the file (nothing about
its content is written here), so a change to the README is what gets tested:

* fast: each block compiles, and every name a block reads is a builtin or defined
  (assigned, imported, ...) by that block or an earlier one, the way a reader runs
  them: one after another in one session;
* slow: the blocks run, in order, in one namespace in a fresh Python process
  (float64 on, as the README's first block sets), in a temporary folder; a failure
  names the README line where the failing block starts.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

RUNNER = r"""
import json, sys, traceback
import jax
jax.config.update("jax_enable_x64", True)
namespace = {"__name__": "__main__"}
for line, code in json.load(sys.stdin):
    try:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the README block starting at line {line} failed (see above)")
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line of the block's first code line, code)`` of each ``python`` block."""
    return [
        (text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for match in FENCE.finditer(text)
    ]


def _defined_and_read(tree: ast.AST) -> tuple[set[str], set[str]]:
    defined, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, ast.alias):
            defined.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    return defined, read


BLOCKS = python_blocks(README.read_text())


def test_blocks_are_found():
    assert BLOCKS, "README.md has no ```python blocks"
    text = README.read_text()
    assert text.count("```python") == len(BLOCKS), "an unterminated python block"


def test_blocks_compile_and_read_only_defined_names():
    known = set(dir(builtins))
    for line, code in BLOCKS:
        tree = ast.parse(code, f"README.md:{line}")
        defined, read = _defined_and_read(tree)
        known |= defined
        undefined = sorted(read - known)
        assert not undefined, (
            f"the README block at line {line} reads {undefined}, which no earlier "
            "block (nor itself) defines"
        )


@pytest.mark.slow
def test_blocks_run_in_order_in_one_session(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(BLOCKS),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
