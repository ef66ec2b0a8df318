#!/usr/bin/env bash
# Create the optional Neural Tangents 0.6.5 environment used by the benchmarks and by
# the by-hand cross-check (benchmarks/kernels_fcn.py, benchmarks/crosscheck_nt.py).
#
# It is never used by the tests or by CI. NT 0.6.5 (the last release) needs an old
# stack: jax/jaxlib 0.4.25, numpy < 2 (it imports TensorFlow 2.15) and tf2jax 0.3.6.
# tensorflow-cpu replaces the full tensorflow wheel; NT and tf2jax are installed with
# --no-deps so that pip does not pull the GPU TensorFlow wheel (kernels are
# bit-identical either way, see shared/reference/neural_tangents.md section 11).
#
# Usage:  bash benchmarks/setup_nt_venv.sh [PYTHON]     (PYTHON defaults to python3.11)
# Result: benchmarks/.nt-venv (git-ignored). Re-running it recreates the venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/.nt-venv"
python="${1:-python3.11}"

"${python}" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "setup_nt_venv.sh: ${python} must be Python 3.11" >&2; exit 1; }

rm -rf "${venv}"
"${python}" -m venv "${venv}"
pip=("${venv}/bin/python" -m pip install --disable-pip-version-check --no-input)

"${pip[@]}" --upgrade "pip<25"
"${pip[@]}" \
  "jax==0.4.25" "jaxlib==0.4.25" "numpy==1.26.4" "scipy==1.12.0" \
  "frozendict==2.4.0" "tensorflow-cpu==2.15.1"
# tf2jax 0.3.6's own dependencies (besides jax, numpy and tensorflow, installed above).
"${pip[@]}" "chex>=0.1.85,<0.1.87" "dm-tree" "typing_extensions"
"${pip[@]}" --no-deps "tf2jax==0.3.6" "neural-tangents==0.6.5"

"${venv}/bin/python" - <<'PY'
import jax, jaxlib, neural_tangents as nt
from neural_tangents import stax
_, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
k = kernel_fn(jax.numpy.ones((2, 3)), None, "ntk")
print(f"neural_tangents {nt.__version__} ok (jax {jax.__version__}, "
      f"jaxlib {jaxlib.__version__}); ntk[0,0] = {float(k[0, 0]):.6f}")
PY
