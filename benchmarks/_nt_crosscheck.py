"""Neural Tangents side of ``crosscheck_nt.py``; run by the NT venv's interpreter.

Usage: ``.nt-venv/bin/python _nt_crosscheck.py WORKDIR`` (with ``JAX_ENABLE_X64=1``).
Reads ``WORKDIR/cases.json`` and ``WORKDIR/inputs.npz``; writes
``WORKDIR/nt_out.npz`` (``"<case>/<output>"`` arrays) and ``WORKDIR/nt_meta.json``
(versions and per-case errors). No pickle anywhere: plain ``.npz`` and JSON.

A case is ``{"layers": [[name, kwargs], ...], "x1": key, "x2": key | null,
"diagonal_spatial": bool}``; layer names and keyword arguments are those of
``neural_tangents.stax`` (widebnn mirrors them); a string value ``"@name"`` is a
function from ``FUNCTIONS`` below (the same table as in ``crosscheck_nt.py``).
"""

import json
import pathlib
import sys
import traceback
import warnings

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
from neural_tangents import stax

FUNCTIONS = {
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "square": lambda x: x**2,
    "square_nngp": lambda c, q1, q2: 2 * c**2 + q1 * q2,
    # image cases (issue 4): indices, a fixed matrix and dimension numbers
    "idx_a": (slice(None), slice(1, 4, 2)),
    "idx_b": (Ellipsis, 1, slice(None)),
    "mat": np.linspace(-1.0, 1.0, 30).reshape(6, 5),
    "dn_lhs": (((1,), (1,)), ((), ())),
    "dn_rhs": (((2,), (0,)), ((), ())),
    "mat_w": np.linspace(-1.0, 0.5, 12).reshape(4, 3),
}


def _resolve(kwargs):
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("@"):
            value = FUNCTIONS[value[1:]]
        elif isinstance(value, list):
            value = tuple(value)  # NT concatenates shape tuples
        out[key] = value
    return out


def _build(layers):
    return stax.serial(*[getattr(stax, name)(**_resolve(kw)) for name, kw in layers])


def main(workdir):
    workdir = pathlib.Path(workdir)
    cases = json.loads((workdir / "cases.json").read_text())
    with np.load(workdir / "inputs.npz", allow_pickle=False) as data:
        inputs = {k: data[k] for k in data.files}
    results, errors = {}, {}
    warnings.simplefilter("ignore")
    for case_id, case in cases.items():
        try:
            _, _, kernel_fn = _build(case["layers"])
        except Exception as err:  # noqa: BLE001 - report, do not stop
            errors[case_id] = {"all": f"{type(err).__name__}: {err}"}
            continue
        x1 = jnp.asarray(inputs[case["x1"]])
        x2 = None if case["x2"] is None else jnp.asarray(inputs[case["x2"]])
        for output in ("nngp", "ntk"):
            try:
                value = kernel_fn(
                    x1, x2, output, diagonal_spatial=case["diagonal_spatial"]
                )
                results[f"{case_id}/{output}"] = np.asarray(value)
            except Exception as err:  # noqa: BLE001
                last = traceback.extract_tb(err.__traceback__)[-1]
                errors.setdefault(case_id, {})[output] = (
                    f"{type(err).__name__}: {err} ({pathlib.Path(last.filename).name}"
                    f":{last.lineno})"
                )
    np.savez(workdir / "nt_out.npz", **results)
    meta = {
        "neural_tangents": nt.__version__,
        "jax": jax.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "errors": errors,
    }
    (workdir / "nt_meta.json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
