"""The CPU guard of ``samplers/_platform.py``: batched factorisations of many chains
must not deadlock XLA's intra-op thread pool.

The script below has the shape of a sampler chunk: in one loop body, the gradient of
the closed-form log density of 4 chains and the parameters of 4 chains (dual path:
a QR and a Cholesky each), independent of each other, so that XLA may run their
LAPACK calls at the same time. With plain ``vmap`` (``--unguarded``) it hung on
the 2-core development machine in 3 of 3 runs (no CPU use after ~4 s); guarded it
finishes in seconds.
"""

import os
import subprocess
import sys
import textwrap

# The installed package is widebnn.samplers; patch its _platform module.
SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    import widebnn.samplers._platform as platform
    from widebnn import WideBNN, kernels, samplers

    if "--unguarded" in sys.argv:
        platform._on_cpu = lambda: False
    width, n = 200, 64
    model = WideBNN(kernels.serial(kernels.Dense(width), kernels.Relu()), width,
                    1.0, 0.1, 0.1, 1)
    x = jax.random.normal(jax.random.key(0), (n, 3))
    y = jnp.sin(x[:, :1])
    density = samplers.log_density_fn(model)
    hidden, _ = model.split_readout(model.init(jax.random.key(1), x.shape))
    hidden = jax.tree.map(lambda v: jnp.stack([v] * 4), hidden)
    phi = (hidden, jnp.zeros((4, width + 1, 1)))

    def to_params(position):
        return samplers.repriorise(model, position, x, y)[0]["readout"]["W"]

    @jax.jit
    def run(phi):
        def body(phi, _):
            grads = jax.vmap(jax.grad(lambda p: density(p, x, y)))(phi)
            readout = platform.batch_map(to_params, phi)
            moved = jax.tree.map(lambda p, g: p + 1e-4 * g, phi, grads)
            return moved, jnp.sum(readout)
        return jax.lax.scan(body, phi, None, length=50)

    for _ in range(10):
        phi, out = run(phi)
        jax.block_until_ready(out)
    print("finished")
    """
)


def test_batched_factorisations_do_not_deadlock(tmp_path):
    script = tmp_path / "chunk.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # the default CPU backend (no simulated devices)
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "finished" in result.stdout
