"""Neural Tangents side of ``kernels_attention.py``; run by the NT venv's interpreter.

Usage: ``.nt-venv/bin/python _nt_attention.py '{"dtype": "float64", "n": 256, ...}'``.
Builds the same attention network with ``neural_tangents.stax``, times one
configuration in this fresh process and prints one JSON line (the fields of
``_timing.measure``); with ``"save"`` in the configuration it also writes the NNGP
and NTK to that ``.npz`` file. It imports nothing from widebnn: it runs on NT
0.6.5's old stack (jax 0.4.25).
"""

import json
import pathlib
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def network(stax, width):
    """The benchmark network in NT's layers (mirrors ``kernels_attention.network``)."""
    return stax.serial(
        stax.Dense(width, W_std=1.0, b_std=0.0),
        stax.GlobalSelfAttention(
            n_chan_out=width,
            n_chan_key=width,
            n_chan_val=width,
            n_heads=4,
            linear_scaling=True,
            W_key_std=1.2,
            W_value_std=1.1,
            W_query_std=0.9,
            W_out_std=1.0,
            b_std=0.05,
            attention_mechanism="SOFTMAX",
        ),
        stax.LayerNorm(axis=-1),
        stax.Dense(width, W_std=1.4, b_std=0.05),
        stax.Relu(),
        stax.Dense(width, W_std=1.4, b_std=0.05),
        stax.GlobalAvgPool(),
        stax.Dense(1, W_std=1.0, b_std=0.0),
    )


def main(config):
    config = json.loads(config)
    warnings.simplefilter("ignore")
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", config["dtype"] == "float64")
    import neural_tangents as nt
    from _timing import measure
    from neural_tangents import stax

    _, _, kernel_fn = network(stax, config["width"])
    rng = np.random.default_rng(config["seed"])
    shape = (config["n"], config["length"], config["d"])
    x1 = jax.device_put(rng.normal(size=shape).astype(config["dtype"]))
    fn = jax.jit(kernel_fn, static_argnames="get")
    get = ("nngp", "ntk")
    result = measure(fn, (x1, None), config["repeats"], {"get": get})
    if config.get("save"):
        out = fn(x1, None, get=get)
        np.savez(
            config["save"], **{k: np.asarray(v) for k, v in zip(get, out, strict=True)}
        )
    result.update(side="nt", library=f"neural_tangents {nt.__version__}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
