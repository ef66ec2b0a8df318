"""One small checkpoint store for resumable computations (atomic, no pickle).

A store is a directory that belongs to exactly one computation:

* ``fingerprint.json`` is written once, when the computation starts. It records
  what the computation is, as named *parts* (for example ``network``,
  ``inputs``, ``masks``, ``key``, ``settings``), each a JSON value of settings
  and SHA-256 digests, plus a checksum of the record itself. A later call that
  resumes compares its own fingerprint with the saved one, part by part, and
  refuses a mismatch with a message that names what differs.
* Every finished piece of work (a kernel tile, a sampler chunk) is one
  ``<entry>.npz`` file of named arrays, plus a ``__store__`` array holding a JSON
  record of each array's dtype, shape and SHA-256. The files are read with
  ``allow_pickle=False``. An entry that cannot be read, or whose arrays do not
  match their checksums (truncated, empty, bit-flipped), is deleted with a
  warning naming the file and recomputed: an entry is a deterministic function of
  the fingerprinted arguments, so the recomputed one is the same.

Every file is written to a temporary file in the same directory
(``.<name>.<pid>.<token>.tmp``), flushed and fsynced, and then renamed over its
final name with ``os.replace``: a reader sees the old file, the new one or none,
never half a file. A temporary file is removed when its write fails; one left by a
killed process (its pid no longer runs) is removed when the store is next opened.
One directory is written by one run at a time.

Starting and continuing are explicit: ``resume=False`` needs a missing or empty
directory (it never overwrites or silently continues a saved run), and
``resume=True`` needs a directory holding a fingerprint (a mistyped path is an
error, not a fresh start).

Fingerprint digests of *computed* values (a network's kernel on probe inputs, a
model's prior draw) are taken over float64 values rounded to 33 significant bits
(about 10 decimal digits), so that a harmless change of round-off (another
compilation of the same computation) does not break a resume; digests of *given*
arrays (inputs, masks, keys) are exact.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import secrets
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

FORMAT = 1
"""Version of the file layout; a directory of another format is refused."""
FINGERPRINT = "fingerprint.json"
"""Name of the fingerprint file in a store directory."""
_RECORD = "__store__"
_SIGNIFICANT_BITS = 33
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]+)\.tmp$")
_HASH = "sha256:"


class CheckpointWarning(UserWarning):
    """A damaged checkpoint file was found (it is deleted and recomputed)."""


# --- digests -------------------------------------------------------------------


def package_version() -> str:
    """The installed widebnn version (part of every fingerprint's settings)."""
    try:
        return importlib.metadata.version("widebnn")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _short(digest) -> str:
    return _HASH + digest.hexdigest()[:32]


def hash_exact(value) -> str | None:
    """Exact digest of an array (dtype, shape and bytes), or ``None`` for ``None``."""
    if value is None:
        return None
    array = np.asarray(value, order="C")
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return _short(digest)


def _rounded(array: np.ndarray) -> np.ndarray:
    """float64 values rounded to ``_SIGNIFICANT_BITS`` bits (NaN, -0 canonical)."""
    if np.iscomplexobj(array):
        array = np.stack([array.real, array.imag])
    values = np.asarray(array, np.float64)
    mantissa, exponent = np.frexp(values)
    scale = 2.0**_SIGNIFICANT_BITS
    with np.errstate(invalid="ignore"):
        values = np.ldexp(np.round(mantissa * scale) / scale, exponent) + 0.0
    return np.asarray(np.where(np.isnan(values), np.nan, values), np.float64)


def hash_rounded(tree) -> str:
    """Digest of the leaves of a pytree of computed values, robust to round-off.

    Floating leaves are rounded to about 10 significant digits first; integer and
    boolean leaves are taken exactly. The tree structure, dtypes and shapes are
    part of the digest.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    digest = hashlib.sha256(str(treedef).encode())
    for leaf in leaves:
        array = np.asarray(leaf)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        if np.issubdtype(array.dtype, np.inexact):
            array = _rounded(array)
        digest.update(np.asarray(array, order="C").tobytes())
    return _short(digest)


def hash_key(key) -> str:
    """Exact digest of a PRNG key: its implementation and its key data."""
    key = jax.numpy.asarray(key)
    if jax.numpy.issubdtype(key.dtype, jax.dtypes.prng_key):
        return f"{jax.random.key_impl(key)} {hash_exact(jax.random.key_data(key))}"
    return f"raw {hash_exact(key)}"


def jsonable(value):
    """A JSON value describing ``value`` (arrays are hashed exactly)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray | jax.Array):
        return hash_exact(value)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _differences(saved, current, path=()) -> list[tuple[tuple[str, ...], str]]:
    """``(path, values)`` where two fingerprints differ (values if not digests)."""
    out = []
    missing = "(absent)"
    for name in list(current) + [k for k in saved if k not in current]:
        old, new = saved.get(name, missing), current.get(name, missing)
        if old == new:
            continue
        where = (*path, str(name))
        if isinstance(old, dict) and isinstance(new, dict):
            out += _differences(old, new, where) or [(where, "")]
        elif any(isinstance(v, str) and _HASH in v for v in (old, new)):
            out.append((where, ""))
        else:
            out.append((where, f"{json.dumps(old)} -> {json.dumps(new)}"))
    return out


def describe_differences(saved, current) -> str:
    """``"network (nngp), settings (thin: 2 -> 3)"``: the parts that differ."""
    groups: dict[str, list[str]] = {}
    for (part, *rest), values in _differences(saved, current):
        detail = ".".join(rest)
        if detail and values:
            detail = f"{detail}: {values}"
        groups.setdefault(part, [])
        if detail or values:
            groups[part].append(detail or values)
    return ", ".join(
        f"{part} ({'; '.join(details)})" if details else part
        for part, details in groups.items()
    )


# --- files ----------------------------------------------------------------------


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Writes ``path`` through a temporary file in its folder and ``os.replace``.

    ``write(handle)`` fills the binary handle. The temporary file is removed if
    anything fails (also on ``KeyboardInterrupt``).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale_temp(path: Path) -> bool:
    match = _TEMP.match(path.name)
    return match is not None and not _process_alive(int(match["pid"]))


def _clean_stale_temps(directory: Path) -> None:
    for path in directory.iterdir():
        if _is_stale_temp(path):
            path.unlink(missing_ok=True)


class _Damaged(Exception):
    """An entry file that cannot be trusted (the message says why)."""


def _read_entry(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            if _RECORD not in data.files:
                raise _Damaged("it has no checksum record")
            record = json.loads(bytes(data[_RECORD]).decode())
            arrays = {name: data[name] for name in record["arrays"]}
    except _Damaged:
        raise
    except Exception as error:  # any failure to parse the file is damage
        reason = f"{type(error).__name__}: {str(error) or 'no data'}"
        if "pickle" in reason:
            reason = "not an .npz archive (it would need unpickling, refused)"
        raise _Damaged(reason) from error
    if record.get("format") != FORMAT:
        raise _Damaged(f"unknown format {record.get('format')!r}")
    for name, array in arrays.items():
        info = record["arrays"][name]
        if [array.dtype.str, list(array.shape)] != [info["dtype"], info["shape"]]:
            raise _Damaged(f"array {name!r} does not match its record")
        if hash_exact(array) != info["sha256"]:
            raise _Damaged(f"array {name!r} does not match its SHA-256 checksum")
    return arrays


# --- the store ------------------------------------------------------------------


class Store:
    """A checkpoint directory holding one computation's fingerprint and entries.

    Args:
        directory: the directory (created if missing when ``resume=False``).
        fingerprint: ``() -> parts``, a dict of JSON values naming what the
            computation is (called once, after the cheap checks).
        resume: ``False`` to start (the directory must be missing or empty),
            ``True`` to continue (it must hold a fingerprint equal to this one).
        argument: the user-facing argument name, for messages.
        kind: what writes the directory (e.g. ``"samplers.hmc"``); a directory
            written by another kind is refused.

    Raises:
        ValueError: naming ``argument``: the path is a file, ``resume=False`` on a
            directory holding files, ``resume=True`` on a missing directory or one
            without a fingerprint, a damaged fingerprint, or a fingerprint that
            differs (the message lists the differing parts).
        TypeError: if ``directory`` is not a path.
    """

    def __init__(
        self,
        directory,
        fingerprint: Callable[[], dict[str, Any]],
        *,
        resume: bool,
        argument: str,
        kind: str,
    ):
        try:
            self.directory = Path(directory)
        except TypeError as error:
            raise TypeError(
                f"{argument} must be a path or None, got {type(directory).__name__}."
            ) from error
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False, got {resume!r}.")
        self.argument = argument
        self.kind = kind
        where = f"{argument}={str(self.directory)!r}"
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"{where} is an existing file; pass a directory.")
        meta_path = self.directory / FINGERPRINT
        if resume:
            if not self.directory.is_dir():
                raise ValueError(
                    f"{where} does not exist, so there is nothing to resume (a "
                    "mistyped path?). Pass resume=False to start a new run there."
                )
            if not meta_path.is_file():
                raise ValueError(
                    f"{where} holds no checkpoint ({FINGERPRINT} is missing), so "
                    "there is nothing to resume. Pass resume=False and an empty or "
                    "new directory to start a run."
                )
        else:
            self._prepare_new(where, meta_path)
        parts = json.loads(json.dumps(jsonable(fingerprint())))
        if resume:
            self._check(where, meta_path, parts)
        else:
            record = {"format": FORMAT, "kind": kind, "parts": parts}
            record["sha256"] = _record_digest(record)
            text = json.dumps(record, indent=1, sort_keys=True).encode()
            atomic_write(meta_path, lambda handle: handle.write(text))
        _clean_stale_temps(self.directory)

    def _prepare_new(self, where, meta_path):
        if self.directory.is_dir():
            _clean_stale_temps(self.directory)
            if meta_path.exists():
                raise ValueError(
                    f"{where} already holds a checkpoint. Pass resume=True to "
                    "continue it, or a new directory to start a new run (delete "
                    "the old one yourself if it is no longer needed)."
                )
            if any(True for _ in self.directory.iterdir()):
                raise ValueError(
                    f"{where} is not empty and holds no checkpoint; pass a new or "
                    "empty directory."
                )
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as error:
            raise ValueError(
                f"{where} cannot be created: a part of the path is a file."
            ) from error

    def _check(self, where, meta_path, parts):
        try:
            record = json.loads(meta_path.read_text())
            ok = isinstance(record, dict) and record.get("sha256") == _record_digest(
                record
            )
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise ValueError(
                f"the fingerprint file {meta_path} of {where} is damaged, so the "
                "saved files cannot be matched to this run. Pass a new directory "
                "(or delete this one) and start again with resume=False."
            )
        if record["format"] != FORMAT or record["kind"] != self.kind:
            raise ValueError(
                f"{where} holds a checkpoint of {record['kind']} (format "
                f"{record['format']}), not of {self.kind} (format {FORMAT}); pass "
                "a new directory."
            )
        differences = describe_differences(record["parts"], parts)
        if differences:
            raise ValueError(
                f"{where} holds a checkpoint of a different run; these differ: "
                f"{differences}. To continue that run, call again with "
                "its arguments; to start this one, pass a new directory (or delete "
                "the old one) with resume=False."
            )

    def path(self, name: str) -> Path:
        """The file of entry ``name``."""
        return self.directory / f"{name}.npz"

    def load(self, name: str, expected=None) -> dict[str, np.ndarray] | None:
        """The arrays of entry ``name``, or ``None`` if it must be computed.

        Args:
            name: the entry.
            expected: optional ``{array_name: (shape, dtype)}`` the entry must hold.

        Returns:
            The arrays, or ``None`` when the file is missing or damaged (a damaged
            file is deleted, with a :class:`CheckpointWarning` naming it).

        Raises:
            ValueError: if an intact file holds other arrays than ``expected``.
        """
        path = self.path(name)
        if not path.exists():
            return None
        try:
            arrays = _read_entry(path)
        except _Damaged as damage:
            warnings.warn(
                f"checkpoint file {path} is damaged ({damage}); it is deleted and "
                "recomputed.",
                CheckpointWarning,
                stacklevel=3,
            )
            path.unlink(missing_ok=True)
            return None
        if expected is not None:
            got = {n: (tuple(a.shape), a.dtype) for n, a in arrays.items()}
            want = {n: (tuple(s), np.dtype(d)) for n, (s, d) in expected.items()}
            if got != want:
                raise ValueError(
                    f"checkpoint file {path} is intact but holds other arrays than "
                    "this run computes (written by another version of widebnn?); "
                    f"pass a new {self.argument} or delete this file."
                )
        return arrays

    def save(self, name: str, arrays: Mapping[str, Any]) -> None:
        """Writes entry ``name`` (named arrays) atomically, with checksums."""
        arrays = {n: np.asarray(a, order="C") for n, a in arrays.items()}
        if _RECORD in arrays:
            raise ValueError(f"{_RECORD!r} is a reserved array name.")
        record = {
            "format": FORMAT,
            "arrays": {
                n: {
                    "dtype": a.dtype.str,
                    "shape": list(a.shape),
                    "sha256": hash_exact(a),
                }
                for n, a in arrays.items()
            },
        }
        payload = dict(arrays)
        payload[_RECORD] = np.frombuffer(json.dumps(record).encode(), np.uint8)
        atomic_write(self.path(name), lambda handle: np.savez(handle, **payload))


def _record_digest(record) -> str:
    body = {k: record.get(k) for k in ("format", "kind", "parts")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
