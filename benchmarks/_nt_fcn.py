"""Neural Tangents side of ``kernels_fcn.py``; run by the NT venv's interpreter.

Usage: ``.nt-venv/bin/python _nt_fcn.py '{"dtype": "float64", "n": 2000, ...}'``.
Times one configuration in this fresh process and prints one JSON line (the fields
of ``_timing.measure``). It imports nothing from widebnn: it runs on NT 0.6.5's old
stack (jax 0.4.25).
"""

import json
import pathlib
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def main(config):
    config = json.loads(config)
    warnings.simplefilter("ignore")
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", config["dtype"] == "float64")
    import neural_tangents as nt
    from _timing import measure
    from neural_tangents import stax

    layers = []
    for _ in range(config["depth"]):
        layers += [stax.Dense(config["width"], W_std=1.5, b_std=0.05), stax.Relu()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=1.5, b_std=0.05))
    rng = np.random.default_rng(config["seed"])
    shape, dtype = (config["n"], config["d"]), config["dtype"]
    x1 = jax.device_put(rng.normal(size=shape).astype(dtype))
    x2 = None
    if config["mode"] == "cross":
        x2 = jax.device_put(rng.normal(size=shape).astype(dtype))
    fn = jax.jit(kernel_fn, static_argnames="get")
    result = measure(fn, (x1, x2), config["repeats"], {"get": ("nngp", "ntk")})
    result.update(side="nt", library=f"neural_tangents {nt.__version__}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
