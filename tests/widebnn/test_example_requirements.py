"""Examples that need an optional dependency say how to install it."""

import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_digits_example_without_scikit_learn_names_the_extra():
    # ``sys.modules[name] = None`` makes ``import name`` raise ImportError
    code = (
        "import sys, runpy\n"
        "sys.modules['sklearn'] = None\n"
        "sys.modules['sklearn.datasets'] = None\n"
        f"runpy.run_path({str(EXAMPLES / 'digits_nngp.py')!r}, run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert 'pip install -e ".[examples]"' in result.stderr
    assert "scikit-learn" in result.stderr
