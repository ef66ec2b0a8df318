"""Type-checks the package with mypy: ``python tests/run_mypy.py [mypy options]``.

``widebnn.kernels`` and ``widebnn.samplers`` are the top-level folders ``kernels/``
and ``samplers/`` (setuptools' package-dir mapping), which mypy cannot follow. This
script links ``widebnn/*``, ``kernels`` and ``samplers`` into
``build/typecheck/widebnn`` (the installed layout; ``build/`` is ignored by git),
runs ``python -m mypy --config-file mypy.ini -p widebnn`` there and prints the
error paths relative to the repository. The exit code is mypy's.

Pytest does not collect this file (its name does not start with ``test_``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"
SUBPACKAGES = ("kernels", "samplers")


def link_tree() -> Path:
    """(Re)builds ``build/typecheck/widebnn`` as links into the source folders."""
    package = TREE / "widebnn"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    for source in sorted((ROOT / "widebnn").iterdir()):
        if source.name != "__pycache__":
            (package / source.name).symlink_to(source)
    for name in SUBPACKAGES:
        (package / name).symlink_to(ROOT / name, target_is_directory=True)
    return package


def main(argv: list[str]) -> int:
    link_tree()
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "mypy.ini"),
        "-p",
        "widebnn",
        *argv,
    ]
    done = subprocess.run(command, cwd=TREE, capture_output=True, text=True)
    output = done.stdout + done.stderr
    for name in SUBPACKAGES:
        output = output.replace(f"widebnn/{name}/", f"{name}/")
    print(output, end="")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
