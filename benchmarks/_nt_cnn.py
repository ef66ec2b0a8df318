"""Neural Tangents side of ``kernels_cnn.py``; run by the NT venv's interpreter.

Usage: ``.nt-venv/bin/python _nt_cnn.py '{"dtype": "float64", "n": 200, ...}'``.
Builds the same CNN as ``kernels_cnn.network_spec`` (the spec travels in the JSON
config as a list of layer descriptions), times one configuration in this fresh process
and prints one JSON line (the fields of ``_timing.measure``) with the kernels saved to
``config["save"]`` when given. It imports nothing from widebnn: it runs on NT 0.6.5's
old stack (jax 0.4.25).
"""

import json
import pathlib
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def build(stax, spec):
    """Turns the JSON layer descriptions into ``stax`` layers."""
    layers = []
    for kind, kwargs in spec:
        if kind == "conv":
            layers.append(
                stax.Conv(
                    kwargs["width"],
                    tuple(kwargs["filter"]),
                    padding="SAME",
                    W_std=kwargs["W_std"],
                    b_std=kwargs["b_std"],
                )
            )
        elif kind == "relu":
            layers.append(stax.Relu())
        elif kind == "avgpool":
            layers.append(stax.AvgPool(tuple(kwargs["window"])))
        elif kind == "gap":
            layers.append(stax.GlobalAvgPool())
        elif kind == "dense":
            layers.append(
                stax.Dense(
                    kwargs["width"], W_std=kwargs["W_std"], b_std=kwargs["b_std"]
                )
            )
        else:
            raise ValueError(f"unknown layer {kind!r}")
    return stax.serial(*layers)


def main(config):
    config = json.loads(config)
    warnings.simplefilter("ignore")
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", config["dtype"] == "float64")
    import neural_tangents as nt
    from _timing import measure
    from neural_tangents import stax

    _, _, kernel_fn = build(stax, config["spec"])
    rng = np.random.default_rng(config["seed"])
    shape = (config["n"], *config["image"])
    x1 = jax.device_put(rng.normal(size=shape).astype(config["dtype"]))
    fn = jax.jit(kernel_fn, static_argnames="get")
    result = measure(fn, (x1, None), config["repeats"], {"get": ("nngp", "ntk")})
    if config.get("save"):
        nngp, ntk = fn(x1, None, get=("nngp", "ntk"))
        np.savez(config["save"], nngp=np.asarray(nngp), ntk=np.asarray(ntk))
    result.update(side="nt", library=f"neural_tangents {nt.__version__}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
