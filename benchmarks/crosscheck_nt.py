"""Cross-check widebnn's kernels against Neural Tangents 0.6.5, by hand (not in CI).

For a grid of networks (Dense in NTK and standard parameterisation, with and without
bias; every activation that both libraries have, with non-default arguments; one and
two hidden layers) and inputs ``(N, d)`` (``x2`` given and ``x2=None``) and
``(N, L, d)`` (``diagonal_spatial`` False and True), it computes the NNGP and NTK with
widebnn in this process and with Neural Tangents in a subprocess run by the NT venv's
interpreter (``benchmarks/.nt-venv``, made by ``setup_nt_venv.sh``), both in float64.
Arrays travel through ``.npz`` files in a temporary folder (no pickle).

It prints, per case and output, the relative difference
``max |ours - NT| / max |NT|`` (target: 1e-6) and every disagreement, error or NaN.

Usage::

    python benchmarks/crosscheck_nt.py [--nt-python PATH] [--json OUT.json] [-k TEXT]

Activations that widebnn does not (yet) export are skipped and listed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from widebnn import kernels

HERE = pathlib.Path(__file__).resolve().parent
NT_SCRIPT = HERE / "_nt_crosscheck.py"
DEFAULT_NT_PYTHON = HERE / ".nt-venv" / "bin" / "python"
TARGET = 1e-6
#: NT's ElementwiseNumerical is a fixed Gauss-Hermite rule (see neural_tangents.md §9).
QUADRATURE_TARGET = 1e-2

#: the same table as in _nt_crosscheck.py: "@name" in a case means this function.
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

#: (label, layer name, keyword arguments); non-default arguments where there are any.
ACTIVATIONS = [
    ("Relu()", "Relu", {}),
    ("Relu(do_stabilize=True)", "Relu", {"do_stabilize": True}),
    ("ABRelu(-0.3, 1.7)", "ABRelu", {"a": -0.3, "b": 1.7}),
    ("LeakyRelu(0.2)", "LeakyRelu", {"alpha": 0.2}),
    ("Abs()", "Abs", {}),
    ("Erf(1.3, 0.7, 0.2)", "Erf", {"a": 1.3, "b": 0.7, "c": 0.2}),
    ("Sigmoid_like()", "Sigmoid_like", {}),
    ("Gelu()", "Gelu", {}),
    ("Gelu(approximate=True)", "Gelu", {"approximate": True}),
    ("Sin(1.2, 0.8, 0.3)", "Sin", {"a": 1.2, "b": 0.8, "c": 0.3}),
    ("Cos(0.9, 1.3, -0.4)", "Cos", {"a": 0.9, "b": 1.3, "c": -0.4}),
    ("Rbf(0.6)", "Rbf", {"gamma": 0.6}),
    ("Exp(0.8, 0.7)", "Exp", {"a": 0.8, "b": 0.7}),
    ("Gaussian(1.1, -0.8)", "Gaussian", {"a": 1.1, "b": -0.8}),
    ("Sign()", "Sign", {}),
    ("Monomial(0)", "Monomial", {"degree": 0}),
    ("Monomial(1)", "Monomial", {"degree": 1}),
    ("Monomial(3)", "Monomial", {"degree": 3}),
    ("RectifiedMonomial(0)", "RectifiedMonomial", {"degree": 0}),
    ("RectifiedMonomial(1)", "RectifiedMonomial", {"degree": 1}),
    ("RectifiedMonomial(2)", "RectifiedMonomial", {"degree": 2}),
    ("Polynomial([0.3,-0.5,0.8,0.2])", "Polynomial", {"coef": [0.3, -0.5, 0.8, 0.2]}),
    ("ExpNormalized(0.8, -0.5)", "ExpNormalized", {"gamma": 0.8, "shift": -0.5}),
    (
        "ExpNormalized(0.8, -0.5, do_clip=True)",
        "ExpNormalized",
        {"gamma": 0.8, "shift": -0.5, "do_clip": True},
    ),
    ("Gabor()", "Gabor", {}),
    (
        "ElementwiseNumerical(tanh, 25)",
        "ElementwiseNumerical",
        {"fn": "@tanh", "deg": 25},
    ),
    (
        "ElementwiseNumerical(softplus, 31)",
        "ElementwiseNumerical",
        {"fn": "@softplus", "deg": 31},
    ),
    (
        "Elementwise(square, dual)",
        "Elementwise",
        {"fn": "@square", "nngp_fn": "@square_nngp"},
    ),
]

#: activations whose kernel holds only for unit-variance pre-activations (NT's rule).
UNIT_VARIANCE = [
    ("Hermite(3)", "Hermite", {"degree": 3}),
    ("Hermite(2)", "Hermite", {"degree": 2}),
]

#: layers inserted after the activation (same grid otherwise).
AFTER_ACTIVATION = [
    (
        "Relu()+Dropout(0.7, train)",
        "Relu",
        {},
        ("Dropout", {"rate": 0.7, "mode": "train"}),
    ),
    ("Erf()+Dropout(0.6, test)", "Erf", {}, ("Dropout", {"rate": 0.6, "mode": "test"})),
]

#: (label, parameterization, bias of the hidden layers, bias of the readout)
DENSE_VARIANTS = [
    ("ntk,b", "ntk", 0.3, 0.2),
    ("ntk,nob", "ntk", None, None),
    ("std,b", "standard", 0.3, 0.2),
    ("std,nob", "standard", None, None),
]


def _dense(width, W_std, b_std, parameterization):
    return [
        "Dense",
        {
            "out_dim": width,
            "W_std": W_std,
            "b_std": b_std,
            "parameterization": parameterization,
        },
    ]


def _network(activation, variant, depth, unit=False, after=None, readout=None):
    _, param, b_hidden, b_out = variant
    widths, stds = (7, 5), (1.3, 0.9)
    if unit:  # keep every pre-activation at unit variance
        stds, b_hidden = (1.0, 1.0), None
    layers = []
    for i in range(depth):
        layers += [_dense(widths[i], stds[i], b_hidden, param), list(activation)]
        if after is not None:
            layers.append(list(after))
    if readout is not None:
        layers.append([readout, {}])
    layers.append(_dense(3, 1.1, b_out, param))
    return layers


def _inputs():
    rng = np.random.default_rng(20261123)
    flat1 = rng.normal(size=(5, 3))
    flat2 = rng.normal(size=(4, 3))
    flat1[4] = flat2[0]  # a shared input: the cross kernel's c = q case
    unit1 = flat1 / np.linalg.norm(flat1, axis=1, keepdims=True) * np.sqrt(3)
    unit2 = flat2 / np.linalg.norm(flat2, axis=1, keepdims=True) * np.sqrt(3)
    seq1 = rng.normal(size=(3, 4, 3))
    seq2 = rng.normal(size=(2, 4, 3))
    seq1[2] = seq2[0]
    useq1 = seq1 / np.linalg.norm(seq1, axis=-1, keepdims=True) * np.sqrt(3)
    useq2 = seq2 / np.linalg.norm(seq2, axis=-1, keepdims=True) * np.sqrt(3)
    return {
        "useq1": useq1,
        "useq2": useq2,
        "flat1": flat1,
        "flat2": flat2,
        "unit1": unit1,
        "unit2": unit2,
        "seq1": seq1,
        "seq2": seq2,
        "img1": rng.normal(size=(3, 5, 4, 2)),
        "img2": rng.normal(size=(2, 5, 4, 2)),
    }


def _input_settings(kind):
    """(x1 key, x2 key or None, diagonal_spatial) for an input kind."""
    if kind == "flat":
        return [("flat1", "flat2", False), ("flat1", None, False)]
    if kind == "unit":
        return [("unit1", "unit2", False), ("unit1", None, False)]
    if kind == "img":
        return [("img1", "img2", False), ("img1", None, False)]
    if kind == "useq":
        return [
            ("useq1", "useq2", False),
            ("useq1", None, False),
            ("useq1", "useq2", True),
            ("useq1", None, True),
        ]
    return [
        ("seq1", "seq2", False),
        ("seq1", None, False),
        ("seq1", "seq2", True),
        ("seq1", None, True),
    ]


def build_cases():
    """All cases ``{id: case}`` and the labels skipped because widebnn lacks them."""
    cases, skipped = {}, []

    def add(label, layers, kind, tolerance=TARGET):
        for x1, x2, diagonal in _input_settings(kind):
            case_id = f"c{len(cases):04d}"
            cases[case_id] = {
                "label": label,
                "inputs": f"{x1},{x2 or 'None'}" + (",diag" if diagonal else ""),
                "layers": layers,
                "x1": x1,
                "x2": x2,
                "diagonal_spatial": diagonal,
                "tolerance": tolerance,
            }

    for variant in DENSE_VARIANTS:
        dense = _dense(7, 1.3, variant[2], variant[1])
        readout = _dense(3, 1.1, variant[3], variant[1])
        for kind in ("flat", "seq"):
            add(f"Dense[{variant[0]}]", [dense], kind)
            add(f"Dense-Dense[{variant[0]}]", [dense, readout], kind)

    groups = [(a, False, None) for a in ACTIVATIONS]
    groups += [(a, True, None) for a in UNIT_VARIANCE]
    groups += [((lab, n, kw), False, after) for lab, n, kw, after in AFTER_ACTIVATION]
    for (label, name, kwargs), unit, after in groups:
        names = [name] + ([after[0]] if after else [])
        missing = [n for n in names if not hasattr(kernels, n)]
        if missing:
            skipped.append(f"{label} (widebnn has no {', '.join(missing)})")
            continue
        tolerance = QUADRATURE_TARGET if name == "ElementwiseNumerical" else TARGET
        for variant in DENSE_VARIANTS:
            for depth in (1, 2):
                layers = _network((name, kwargs), variant, depth, unit, after)
                tag = f"{label} x{depth} [{variant[0]}]"
                add(tag, layers, "unit" if unit else "flat", tolerance)
                if variant[0] in ("ntk,b", "std,nob"):
                    add(tag, layers, "useq" if unit else "seq", tolerance)
    # Hermite outside its unit-variance assumption: documents NT's convention.
    if hasattr(kernels, "Hermite"):
        layers = _network(("Hermite", {"degree": 3}), DENSE_VARIANTS[0], 1)
        add("Hermite(3) x1 [ntk,b] non-unit variance", layers, "flat")
    # sequence networks that end without spatial axes
    for readout in ("Flatten", "GlobalAvgPool"):
        if hasattr(kernels, readout):
            for label, name, kwargs in ACTIVATIONS[:1] + ACTIVATIONS[5:6]:
                layers = _network((name, kwargs), DENSE_VARIANTS[0], 2, readout=readout)
                add(f"{label} x2 [ntk,b] + {readout}", layers, "seq")
    # image networks (issue 4): every spatial layer with Neural Tangents' arguments
    conv = [
        "Conv",
        {
            "out_chan": 4,
            "filter_shape": [3, 3],
            "padding": "SAME",
            "W_std": 1.3,
            "b_std": 0.2,
        },
    ]
    head = [["Relu", {}], ["GlobalAvgPool", {}], _dense(2, 1.1, 0.1, "ntk")]
    flat_head = [["Relu", {}], ["Flatten", {}], _dense(2, 1.1, 0.1, "ntk")]
    image_cases = [
        ("Conv SAME + GAP", [conv, *head]),
        (
            "Conv VALID strides + Flatten",
            [
                [
                    "Conv",
                    {
                        "out_chan": 4,
                        "filter_shape": [2, 2],
                        "strides": [2, 1],
                        "padding": "VALID",
                        "W_std": 1.2,
                        "b_std": 0.1,
                    },
                ],
                *flat_head,
            ],
        ),
        (
            "Conv CIRCULAR + GAP",
            [
                [
                    "Conv",
                    {
                        "out_chan": 4,
                        "filter_shape": [3, 3],
                        "padding": "CIRCULAR",
                        "W_std": 1.2,
                        "b_std": 0.1,
                    },
                ],
                *head,
            ],
        ),
        (
            "ConvTranspose strides + Flatten",
            [
                [
                    "ConvTranspose",
                    {
                        "out_chan": 4,
                        "filter_shape": [3, 3],
                        "strides": [2, 1],
                        "padding": "SAME",
                        "W_std": 1.2,
                        "b_std": 0.1,
                    },
                ],
                *flat_head,
            ],
        ),
        (
            "ConvLocal + Flatten",
            [
                [
                    "ConvLocal",
                    {
                        "out_chan": 4,
                        "filter_shape": [3, 3],
                        "padding": "SAME",
                        "W_std": 1.2,
                        "b_std": 0.1,
                    },
                ],
                *flat_head,
            ],
        ),
        (
            "AvgPool + LayerNorm + GAP",
            [
                conv,
                [
                    "AvgPool",
                    {"window_shape": [2, 2], "strides": [1, 1], "padding": "SAME"},
                ],
                ["LayerNorm", {"axis": -1}],
                *head,
            ],
        ),
        (
            "ImageResize linear",
            [
                conv,
                ["ImageResize", {"shape": [-1, 7, 6, -1], "method": "linear"}],
                *head,
            ],
        ),
        (
            "ImageResize nearest",
            [
                conv,
                ["ImageResize", {"shape": [-1, 10, 3, -1], "method": "nearest"}],
                *flat_head,
            ],
        ),
        ("Index Slice[:, 1:4:2]", [conv, ["Index", {"idx": "@idx_a"}], *flat_head]),
        ("Index Slice[..., 1, :]", [conv, ["Index", {"idx": "@idx_b"}], *flat_head]),
        (
            "DotGeneral lhs on H",
            [
                conv,
                ["DotGeneral", {"lhs": "@mat", "dimension_numbers": "@dn_lhs"}],
                *head,
            ],
        ),
        (
            "DotGeneral rhs on W",
            [
                conv,
                ["DotGeneral", {"rhs": "@mat_w", "dimension_numbers": "@dn_rhs"}],
                *flat_head,
            ],
        ),
    ]
    for label, layers in image_cases:
        names = [name for name, _ in layers]
        missing = [n for n in names if not hasattr(kernels, n)]
        if missing:
            skipped.append(f"{label} (widebnn has no {', '.join(missing)})")
            continue
        add(f"img: {label}", layers, "img")
    return cases, skipped


def _resolve(kwargs):
    return {
        k: FUNCTIONS[v[1:]] if isinstance(v, str) and v.startswith("@") else v
        for k, v in kwargs.items()
    }


def _ours(cases, inputs):
    results, errors = {}, {}
    for case_id, case in cases.items():
        try:
            net = kernels.serial(
                *[getattr(kernels, n)(**_resolve(kw)) for n, kw in case["layers"]]
            )
        except Exception as err:  # noqa: BLE001 - report, do not stop
            errors[case_id] = {"all": f"{type(err).__name__}: {err}"}
            continue
        x1 = jnp.asarray(inputs[case["x1"]])
        x2 = None if case["x2"] is None else jnp.asarray(inputs[case["x2"]])
        for output in ("nngp", "ntk"):
            try:
                value = net.kernel(
                    x1, x2, output, diagonal_spatial=case["diagonal_spatial"]
                )
                results[f"{case_id}/{output}"] = np.asarray(value)
            except Exception as err:  # noqa: BLE001
                errors.setdefault(case_id, {})[output] = f"{type(err).__name__}: {err}"
    return results, errors


def _run_nt(nt_python, cases, inputs):
    with tempfile.TemporaryDirectory(prefix="widebnn-crosscheck-") as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "cases.json").write_text(json.dumps(cases))
        np.savez(tmp / "inputs.npz", **inputs)
        env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
        env.pop("XLA_FLAGS", None)
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        proc = subprocess.run(
            [str(nt_python), str(NT_SCRIPT), str(tmp)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the NT subprocess failed:\n{proc.stderr[-4000:]}")
        meta = json.loads((tmp / "nt_meta.json").read_text())
        with np.load(tmp / "nt_out.npz", allow_pickle=False) as data:
            results = {k: data[k] for k in data.files}
    return results, meta


def _short(message, width=90):
    message = " ".join(str(message).split())
    return message if len(message) <= width else message[: width - 3] + "..."


def compare(cases, ours, our_errors, theirs, their_errors):
    """One row per (case, output): status, relative difference and a note."""
    rows = []
    for case_id, case in cases.items():
        for output in ("nngp", "ntk"):
            key = f"{case_id}/{output}"
            mine, nt = ours.get(key), theirs.get(key)
            err_mine = our_errors.get(case_id, {})
            err_nt = their_errors.get(case_id, {})
            err_mine = err_mine.get(output, err_mine.get("all"))
            err_nt = err_nt.get(output, err_nt.get("all"))
            row = {
                "id": case_id,
                "label": case["label"],
                "inputs": case["inputs"],
                "output": output,
                "rel": None,
                "tolerance": case["tolerance"],
            }
            if mine is None or nt is None:
                if mine is None and nt is None:
                    row["status"] = "both raise"
                else:
                    row["status"] = "ours raises" if mine is None else "NT raises"
                row["note"] = f"ours: {err_mine or '-'} | NT: {err_nt or '-'}"
            elif mine.shape != nt.shape:
                row["status"] = "shape"
                row["note"] = f"ours {mine.shape} vs NT {nt.shape}"
            else:
                nan_mine, nan_nt = ~np.isfinite(mine), ~np.isfinite(nt)
                both = ~(nan_mine | nan_nt)
                scale = np.max(np.abs(nt[both]), initial=0.0)
                diff = np.max(np.abs(mine[both] - nt[both]), initial=0.0)
                row["rel"] = float(diff / scale) if scale > 0 else float(diff)
                notes = []
                if nan_nt.any() or nan_mine.any():
                    notes.append(
                        f"non-finite entries: ours {int(nan_mine.sum())}, "
                        f"NT {int(nan_nt.sum())} of {nt.size}"
                    )
                if (nan_mine != nan_nt).any():
                    row["status"] = "NaN differs"
                elif row["rel"] > case["tolerance"]:
                    row["status"] = "DIFFERS"
                else:
                    row["status"] = "ok"
                row["note"] = "; ".join(notes)
            rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nt-python", default=os.environ.get("WIDEBNN_NT_PYTHON"))
    parser.add_argument("--json", help="write every row to this JSON file")
    parser.add_argument("-k", default="", help="only cases whose label contains this")
    parser.add_argument(
        "--dump", help="save both sides' arrays and the inputs to this .npz file"
    )
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    nt_python = pathlib.Path(args.nt_python or DEFAULT_NT_PYTHON)
    if not nt_python.exists():
        print(
            f"No Neural Tangents venv at {nt_python}: run benchmarks/setup_nt_venv.sh"
        )
        return 2

    cases, skipped = build_cases()
    cases = {k: v for k, v in cases.items() if args.k in v["label"]}
    inputs = _inputs()
    start = time.perf_counter()
    theirs, meta = _run_nt(nt_python, cases, inputs)
    t_nt = time.perf_counter() - start
    start = time.perf_counter()
    ours, our_errors = _ours(cases, inputs)
    t_ours = time.perf_counter() - start
    rows = compare(cases, ours, our_errors, theirs, meta["errors"])

    print(
        f"widebnn (jax {jax.__version__}) vs neural_tangents {meta['neural_tangents']} "
        f"(jax {meta['jax']}, x64={meta['x64']}); {len(cases)} cases, "
        f"{len(rows)} outputs; NT {t_nt:.0f} s, ours {t_ours:.0f} s"
    )
    if skipped:
        print("skipped (not in widebnn):", "; ".join(skipped))
    width = max(len(r["label"]) for r in rows)
    for row in rows:
        rel = "-" if row["rel"] is None else f"{row['rel']:.1e}"
        line = (
            f"{row['status']:<11} {row['label']:<{width}} {row['inputs']:<19} "
            f"{row['output']:<4} {rel:>8}"
        )
        if row["status"] != "ok" or row["note"]:
            line += "  " + _short(row["note"], 200)
        print(line)
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    worst = max((r["rel"] for r in rows if r["status"] == "ok"), default=0.0)
    print("summary:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"largest relative difference among agreeing outputs: {worst:.1e}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.dump:
        arrays = {f"ours/{k}": v for k, v in ours.items()}
        arrays.update({f"nt/{k}": v for k, v in theirs.items()})
        arrays.update({f"inputs/{k}": v for k, v in inputs.items()})
        np.savez(args.dump, **arrays)
        pathlib.Path(args.dump).with_suffix(".cases.json").write_text(
            json.dumps(cases, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
