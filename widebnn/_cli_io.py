"""What the ``widebnn`` command reads: data files and a JSON architecture spec.

Data files are ``.npz`` (arrays ``x`` and, for training data, ``y``; loaded without
pickle) or ``.csv`` (numbers separated by commas, an optional header line; the last
``y_columns`` columns, ``--y-cols``, are the targets). A spec is a JSON file::

    {"layers": [{"layer": "Dense", "out_dim": "width", "W_std": 1.4, "b_std": 0.1},
                {"layer": "Relu"}],
     "readout_W_std": 1.0, "readout_b_std": 0.1, "noise_std": 0.1}

where ``"width"`` stands for the ``--width`` option and every other key of a layer is
passed to the factory of the same name in :mod:`widebnn.kernels`.
"""

from __future__ import annotations

import inspect
import json
import pathlib
from typing import Any

import numpy as np

#: readout and likelihood settings a spec may give, with their defaults.
MODEL_DEFAULTS = {"readout_W_std": 1.0, "readout_b_std": 0.1, "noise_std": 0.1}
#: layers a spec may name: factories of ``widebnn.kernels`` taking JSON values.
SPEC_LAYERS = (
    "ABRelu Abs AvgPool Conv ConvLocal Cos Dense Dropout Erf Exp ExpNormalized "
    "Flatten Gabor Gaussian Gelu GlobalAvgPool GlobalSelfAttention GlobalSumPool "
    "Hermite LayerNorm LeakyRelu Monomial Polynomial Rbf RectifiedMonomial Relu "
    "Sigmoid_like Sign Sin SumPool Tanh"
).split()


class InputError(ValueError):
    """A problem with what the user passed to the command (one-line message)."""


def load_arrays(path, *, role: str, need_y: bool, y_columns: int | None = None):
    """Reads ``x`` (and ``y``) from a ``.npz`` or ``.csv`` file.

    Args:
        path: the file.
        role: the option it came from, for messages (e.g. ``"--data"``).
        need_y: whether targets are required.
        y_columns: for ``.csv``: how many trailing columns are targets (``>= 0``;
            ``>= 1`` when ``need_y``); ``None`` for 1 if ``need_y`` else 0.

    Returns:
        ``(x, y)`` as float64 arrays: ``x`` ``(N, ...)`` with at least 2 axes,
        ``y`` ``(N, out_dim)`` or ``None`` when the file has none and
        ``need_y`` is False.

    Raises:
        InputError: for a missing, unreadable or malformed file.
    """
    if y_columns is None:
        y_columns = 1 if need_y else 0
    if isinstance(y_columns, bool) or not isinstance(y_columns, int):
        raise InputError(f"--y-cols must be an integer, got {y_columns!r}")
    if y_columns < (1 if need_y else 0):
        raise InputError(
            f"--y-cols must be >= {1 if need_y else 0} for {role}, got {y_columns}"
        )
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{role}: no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, y = _load_npz(path, role)
    elif suffix == ".csv":
        x, y = _load_csv(path, role, y_columns)
    else:
        raise InputError(f"{role}: expected a .npz or .csv file, got {path.name}")
    if x.ndim == 1:
        x = x[:, None]
    if y is not None and y.ndim == 1:
        y = y[:, None]
    if need_y and y is None:
        raise InputError(f"{role}: {path.name} has no 'y' array")
    if y is not None and (y.ndim != 2 or y.shape[0] != x.shape[0]):
        raise InputError(
            f"{role}: y must have shape (N,) or (N, out_dim) with N = {x.shape[0]} "
            f"rows like x, got {y.shape}"
        )
    for name, array in (("x", x), ("y", y)):
        if array is not None and not np.all(np.isfinite(array)):
            raise InputError(f"{role}: {name} contains NaN or infinite values")
    if x.shape[0] == 0:
        raise InputError(f"{role}: the file holds no rows")
    return x, y


def _load_npz(path, role):
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise InputError(
                    f"{role}: {path.name} must hold an array named 'x' "
                    f"(found {sorted(data.files)})"
                )
            x = np.asarray(data["x"], dtype=np.float64)
            y = np.asarray(data["y"], dtype=np.float64) if "y" in data.files else None
    except InputError:
        raise
    except (OSError, ValueError) as error:
        raise InputError(f"{role}: cannot read {path.name}: {error}") from None
    return x, y


def _load_csv(path, role, y_columns):
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if lines and not _is_numeric_row(lines[0]):
        lines = lines[1:]  # a header
    try:
        table = np.array(
            [[float(v) for v in line.split(",")] for line in lines], dtype=np.float64
        )
    except ValueError as error:
        raise InputError(f"{role}: {path.name}: not a numeric CSV ({error})") from None
    if table.ndim != 2 or table.shape[0] == 0:
        raise InputError(f"{role}: {path.name}: rows of equal length expected")
    if table.shape[1] <= y_columns:
        raise InputError(
            f"{role}: {path.name} has {table.shape[1]} columns; need more than the "
            f"{y_columns} target column(s) of --y-cols"
        )
    if y_columns == 0:
        return table, None
    return table[:, :-y_columns], table[:, -y_columns:]


def _is_numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def default_spec(
    depth: int, activation: str = "Relu", *, W_std: float = 1.4, b_std: float = 0.1
) -> dict[str, Any]:
    """``depth`` hidden ``Dense(width, W_std, b_std)`` + ``activation`` layers.

    Args:
        depth: number of hidden layers ``>= 1``.
        activation: a layer name of :mod:`widebnn.kernels` without arguments.
        W_std: weight standard deviation of the hidden layers.
        b_std: bias standard deviation of the hidden layers.

    Returns:
        A spec for :func:`build_body`, with the default readout and noise.
    """
    hidden = {"layer": "Dense", "out_dim": "width", "W_std": W_std, "b_std": b_std}
    layers = []
    for _ in range(depth):
        layers += [dict(hidden), {"layer": activation}]
    return {"layers": layers, **MODEL_DEFAULTS}


def read_spec(path) -> dict[str, Any]:
    """Reads a JSON architecture spec (see the module docstring)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"--arch: no such file: {path}")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"--arch: {path.name} is not valid JSON ({error})") from None
    return spec


def build_body(spec: dict[str, Any], width: int):
    """The ``widebnn.kernels`` layer a spec describes, with ``"width"`` filled in.

    Args:
        spec: a dict with a ``"layers"`` list (see the module docstring).
        width: the value substituted for ``"width"``.

    Returns:
        ``(body, model_settings)``: the layer and a dict of ``readout_W_std``,
        ``readout_b_std``, ``noise_std``.

    Raises:
        InputError: for an unknown layer, an unknown key or bad arguments.
    """
    from widebnn import kernels

    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list):
        raise InputError('--arch: the spec must be an object with a "layers" list')
    unknown = set(spec) - {"layers", *MODEL_DEFAULTS}
    if unknown:
        raise InputError(f"--arch: unknown top-level keys {sorted(unknown)}")
    layers = []
    for index, entry in enumerate(spec["layers"]):
        where = f"--arch: layers[{index}]"
        if not isinstance(entry, dict) or "layer" not in entry:
            raise InputError(f'{where} must be an object with a "layer" name')
        name = entry["layer"]
        if name not in SPEC_LAYERS:
            raise InputError(f"{where}: unknown layer {name!r}; one of {SPEC_LAYERS}")
        factory = getattr(kernels, name)
        kwargs = {
            k: (width if v == "width" else v) for k, v in entry.items() if k != "layer"
        }
        try:
            inspect.signature(factory).bind(**kwargs)
            layers.append(factory(**kwargs))
        except (TypeError, ValueError) as error:
            raise InputError(f"{where} ({name}): {error}") from None
    if not layers:
        raise InputError("--arch: the spec has no layers")
    settings = {k: float(spec.get(k, v)) for k, v in MODEL_DEFAULTS.items()}
    return kernels.serial(*layers), settings
