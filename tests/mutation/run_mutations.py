"""Applies each bug of ``mutations.py`` to a copy of the repository and runs its tests.

Usage (from the repository root, with the development environment)::

    python tests/mutation/run_mutations.py                  # every mutation
    python tests/mutation/run_mutations.py --only relu-angle-arccos
    python tests/mutation/run_mutations.py --report tests/mutation/REPORT.md
    python tests/mutation/run_mutations.py --list

How: the working tree (tracked files and untracked ones git does not ignore) is
copied to a temporary folder; ``widebnn/kernels`` and ``widebnn/samplers`` symlinks
are added there so that ``import widebnn.kernels`` finds the copy's ``kernels/``
without installing anything (the development install maps the subpackages by an
import hook that comes after the ordinary path search, and the copy comes first on
the path). The script checks that every ``widebnn`` module imports from the copy.
It first runs the union of all listed tests on the unmodified copy (a mutation
"caught" by a test that fails anyway means nothing; ``--no-baseline`` skips this),
then for each mutation replaces its text (which must occur exactly once), runs
``python -m pytest -q -x -p no:xdist <its tests>`` and restores the file. Your own
working tree is never modified.

Status per mutation: ``caught`` (pytest exit code 1: a test failed), ``missed``
(all passed), ``stale`` (the text to replace does not occur exactly once: refresh
the entry), ``error`` (pytest could not run the tests, e.g. an unknown node id) or
``timeout``. The exit code is 0 only if every mutation is caught.

Pytest does not collect this folder (no ``test_*.py`` files).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from mutations import MUTATIONS, Mutation  # noqa: E402

SUBPACKAGES = {"kernels": "kernels", "samplers": "samplers"}
CHECK_IMPORTS = (
    "import widebnn, widebnn.kernels, widebnn.samplers; "
    "print(widebnn.__file__); print(widebnn.kernels.__file__); "
    "print(widebnn.samplers.__file__)"
)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def copy_tree(dest: Path) -> None:
    """Copies the working tree to ``dest`` and links the subpackages into it."""
    files = _git("ls-files", "-co", "--exclude-standard", "-z").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if not source.is_file():  # deleted but still tracked
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    for name, folder in SUBPACKAGES.items():
        link = dest / "widebnn" / name
        if not link.exists():
            link.symlink_to(Path("..") / folder, target_is_directory=True)


def _environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(copy), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def check_imports(copy: Path) -> None:
    """Raises if ``widebnn`` or a subpackage would be imported from elsewhere."""
    out = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS],
        cwd=copy,
        env=_environment(copy),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for path in out:
        if not Path(path).resolve().is_relative_to(copy.resolve()):
            raise RuntimeError(
                f"the copy imports {path}, outside {copy}: mutations would not be "
                "seen by the tests."
            )


def run_pytest(copy: Path, tests, timeout: float) -> tuple[int | None, str, float]:
    """``(exit code or None on timeout, output tail, seconds)``."""
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", *tests]
    start = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=copy,
            env=_environment(copy),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode(errors="replace")
        return None, output[-2000:], time.monotonic() - start
    return (
        done.returncode,
        (done.stdout + done.stderr)[-2000:],
        time.monotonic() - start,
    )


def apply_and_run(copy: Path, mutation: Mutation, timeout: float) -> dict:
    """Runs one mutation on ``copy``; the file is restored afterwards."""
    path = copy / mutation.path
    original = path.read_text()
    row = {"mutation": mutation, "seconds": 0.0, "tail": ""}
    if original.count(mutation.old) != 1:
        row["status"] = "stale"
        row["tail"] = f"`old` occurs {original.count(mutation.old)} times"
        return row
    try:
        path.write_text(original.replace(mutation.old, mutation.new))
        code, tail, seconds = run_pytest(copy, mutation.tests, timeout)
    finally:
        path.write_text(original)
    row.update(seconds=seconds, tail=tail)
    row["status"] = {None: "timeout", 0: "missed", 1: "caught"}.get(code, "error")
    return row


def _commit() -> str:
    head = _git("rev-parse", "--short", "HEAD").strip()
    dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
    return head + (" + uncommitted changes" if dirty else "")


def write_report(path: Path, rows, seconds: float, baseline: str, commit: str) -> None:
    caught = sum(row["status"] == "caught" for row in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Mutation check",
        "",
        f"Generated by `python tests/mutation/run_mutations.py --report {path}`"
        " (see its docstring; the list is `tests/mutation/mutations.py`).",
        "",
        f"* date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"* commit: {commit}",
        f"* machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load:.1f} at the end; Python {platform.python_version()}",
        f"* baseline (listed tests on the unmodified code): {baseline}",
        f"* result: **{caught} of {len(rows)} caught**, {seconds / 60:.1f} min in all",
        "",
        "| mutation | file | status | s | description |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["mutation"]
        note = f" *Note: {m.note}*" if m.note else ""
        lines.append(
            f"| `{m.name}` | `{m.path}` | {row['status']} | {row['seconds']:.0f} "
            f"| {m.description}.{note} |"
        )
    lines += ["", "Tests run per mutation:", ""]
    for row in rows:
        m = row["mutation"]
        lines.append(f"* `{m.name}`: " + ", ".join(f"`{t}`" for t in m.tests))
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these mutations")
    parser.add_argument("--list", action="store_true", help="list and exit")
    parser.add_argument("--report", type=Path, help="write a Markdown report here")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--timeout", type=float, default=1200.0, help="s per run")
    parser.add_argument("--keep", action="store_true", help="keep the copy")
    args = parser.parse_args(argv)

    mutations = list(MUTATIONS)
    if args.only:
        unknown = set(args.only) - {m.name for m in mutations}
        if unknown:
            parser.error(f"unknown mutation(s): {sorted(unknown)}")
        mutations = [m for m in mutations if m.name in args.only]
    if args.list:
        for m in mutations:
            print(f"{m.name:45s} {m.path}: {m.description}")
        return 0

    start = time.monotonic()
    commit = _commit()
    copy = Path(tempfile.mkdtemp(prefix="widebnn-mutations-"))
    try:
        copy_tree(copy)
        check_imports(copy)
        baseline = "skipped"
        if not args.no_baseline:
            tests = list(dict.fromkeys(t for m in mutations for t in m.tests))
            code, tail, seconds = run_pytest(copy, tests, args.timeout * 2)
            if code != 0:
                print(tail)
                print(f"baseline: the listed tests do not pass (exit code {code}).")
                return 2
            baseline = f"{len(tests)} tests passed in {seconds:.0f} s"
            print(f"baseline: {baseline}", flush=True)
        rows = []
        for mutation in mutations:
            row = apply_and_run(copy, mutation, args.timeout)
            rows.append(row)
            print(
                f"{row['status']:8s} {row['seconds']:6.0f} s  {mutation.name}",
                flush=True,
            )
            if row["status"] not in ("caught", "missed"):
                print("    " + row["tail"].strip().replace("\n", "\n    "))
    finally:
        if args.keep:
            print(f"copy kept in {copy}")
        else:
            shutil.rmtree(copy, ignore_errors=True)
    seconds = time.monotonic() - start
    caught = sum(row["status"] == "caught" for row in rows)
    print(f"{caught} of {len(rows)} caught in {seconds / 60:.1f} min")
    if args.report:
        write_report(args.report, rows, seconds, baseline, commit)
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
