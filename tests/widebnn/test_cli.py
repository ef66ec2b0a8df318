"""The ``widebnn`` command, run as a user runs it (subprocess, temp directories)
and, for the heavier subcommands, in-process through ``cli.main``."""

import json
import subprocess
import sys

import numpy as np
import pytest

from widebnn import cli, diagnostics

# Short plumbing runs: convergence warnings are tested in tests/samplers.
pytestmark = pytest.mark.filterwarnings("ignore::widebnn.samplers.SamplerWarning")


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "widebnn.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def _one_line_error(result, code=2):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    return lines[0]


@pytest.fixture
def regression_files(tmp_path):
    """A 1-D regression problem as .npz (train) and .csv (test) files."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(6, 1))
    y = np.sin(3 * x) + 0.2 * rng.normal(size=(6, 1))
    np.savez(tmp_path / "train.npz", x=x, y=y)
    x_test = np.linspace(-2, 2, 5)[:, None]
    np.savetxt(tmp_path / "test.csv", x_test, delimiter=",", header="x")
    return tmp_path


def _main(*args):
    """``widebnn ARGS`` in-process: ``(exit code, stderr lines)``."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
    return code, err.getvalue().strip().splitlines()


def _relu_kernels(x, w_std, b_std, readout_w=1.0, readout_b=0.1):
    """NNGP and NTK of Dense(w_std, b_std) + ReLU + Dense readout, by the
    arc-cosine formulas in numpy (NTK parameterisation)."""
    d = x.shape[1]
    k = w_std**2 * x @ x.T / d + b_std**2
    q = np.sqrt(np.diag(k))
    cos = np.clip(k / np.outer(q, q), -1, 1)
    angle = np.arccos(cos)
    v = np.outer(q, q) * (np.sin(angle) + (np.pi - angle) * cos) / (2 * np.pi)
    nngp = readout_w**2 * v + readout_b**2
    ntk = nngp + readout_w**2 * (np.pi - angle) / (2 * np.pi) * k
    return nngp, ntk


def test_kernel_demo_prints_both_kernels(capsys):
    assert cli.main(["kernel", "--demo", "--n", "3", "--depth", "1"]) == 0
    stdout = capsys.readouterr().out
    assert "NNGP kernel:" in stdout and "NTK:" in stdout
    # the printed NNGP of a one-hidden-layer ReLU network on unit vectors, with the
    # defaults W_std 1.4, b_std 0.1 and the readout W_std 1.0, b_std 0.1:
    # diagonal = 1.0^2 * q / 2 + 0.1^2 with q = W^2 * 1/2 + b^2 (inputs have
    # squared norm 1 over 2 channels).
    W, b = 1.4, 0.1
    q = W**2 * 0.5 + b**2
    expected = q / 2 + 0.1**2
    first = stdout.split("NNGP kernel:")[1].split("NTK:")[0]
    value = float(first.replace("[", " ").split()[0])
    np.testing.assert_allclose(value, expected, rtol=1e-3)


def test_help_for_every_subcommand(capsys):
    for command in ("demo", "kernel", "sample", "compare"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        assert f"usage: widebnn {command}" in capsys.readouterr().out


def test_every_option_has_help_text():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    missing = []
    for name, subparser in sub.choices.items():
        for action in subparser._actions:
            if not action.help or action.help == "==SUPPRESS==":
                missing.append(f"{name} {'/'.join(action.option_strings)}")
    assert not missing, missing


def test_sampler_options_default_to_the_package_defaults():
    """``None`` lets ``samplers.hmc`` choose (exact readout + Gaussian split when
    repriorised); the flags still switch either way."""
    parser = cli.build_parser()
    args = parser.parse_args(["sample", "--data", "train.npz"])
    assert args.exact_readout is None and args.integrator is None
    args = parser.parse_args(
        ["sample", "--data", "t.npz", "--no-exact-readout", "--integrator", "leapfrog"]
    )
    assert args.exact_readout is False and args.integrator == "leapfrog"


NETWORK_OPTIONS = ("--depth", "--width", "--activation", "--W-std", "--b-std")


def test_network_options_and_defaults_are_the_same_in_every_subcommand():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    seen = {}
    for name in ("kernel", "sample", "compare"):
        actions = {
            a.option_strings[0]: (a.default, a.choices, a.help)
            for a in sub.choices[name]._actions
            if a.option_strings and a.option_strings[0] in NETWORK_OPTIONS
        }
        assert set(actions) == set(NETWORK_OPTIONS), name
        seen[name] = actions
    assert seen["kernel"] == seen["sample"] == seen["compare"]


@pytest.mark.parametrize(
    "args, match",
    [
        (("kernel", "--activation", "sigmoid"), "invalid choice"),
        (("kernel", "--depth", "0"), "--depth: must be an integer >= 1, got 0"),
        (("kernel", "--test", "test.csv"), "--test needs --data"),
        (("kernel", "--out", "k"), "--out needs --data"),
        (("kernel", "--data", "train.npz", "--n", "3"), "--n sets the number"),
        (("kernel", "--data", "train.npz", "--demo"), "--demo"),
        (("sample",), "--data"),
        (("sample", "--data", "missing.npz"), "--data: no such file"),
        (("compare", "--data", "train.npz", "--sampler", "x"), "invalid choice"),
        (
            ("sample", "--data", "train.npz", "--width", "0"),
            "--width: must be an integer >= 1",
        ),
        (("sample", "--data", "train.npz", "--thin", "0"), "--thin: must be"),
        (
            ("sample", "--data", "train.npz", "--noise-std", "-1"),
            "--noise-std: must be a finite number > 0",
        ),
        (("sample", "--data", "train.npz", "--arch", "arch.json"), "unknown layer"),
        (
            ("sample", "--data", "train.npz", "--arch", "arch.json", "--depth", "2"),
            "--depth cannot be combined with --arch",
        ),
        (
            ("kernel", "--data", "train.npz", "--arch", "arch.json", "--W-std", "2"),
            "--W-std cannot be combined with --arch",
        ),
        (("sample", "--data", "train.npz", "--test", "bad.csv"), "--test"),
        (
            ("sample", "--data", "train.csv", "--y-cols", "-1"),
            "--y-cols: must be an integer >= 0, got -1",
        ),
        (("sample", "--data", "train.csv", "--y-cols", "0"), "--y-cols must be >= 1"),
        # library messages are rewritten with the flags that set the arguments
        (
            ("sample", "--data", "train.npz", "--reparam", "none", "--exact-readout"),
            "--exact-readout needs --reparam repriorised",
        ),
        (
            ("sample", "--data", "train.npz", "--warmup", "0"),
            "--warmup must be >= 1",
        ),
        (("kernel", "--data", "train.npz", "--out", "train.npz"), "not a directory"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(regression_files, monkeypatch, args, match):
    monkeypatch.chdir(regression_files)
    (regression_files / "arch.json").write_text('{"layers": [{"layer": "Nope"}]}')
    (regression_files / "bad.csv").write_text("1,2\n3,4\n")  # 2 columns, x is 1
    code, lines = _main(*args)
    assert code == 2, lines
    assert len(lines) == 1 and "error:" in lines[0], lines
    assert match in lines[0]


def test_errors_in_a_subprocess_are_one_line_without_traceback():
    line = _one_line_error(_run("demo", "--out", "/proc/widebnn-nope"))
    assert "--out: cannot create /proc/widebnn-nope" in line


def test_flag_names_rewrites_library_argument_names():
    assert (
        cli.flag_names("exact_readout=True needs reparam='repriorised'.")
        == "--exact-readout needs --reparam repriorised."
    )
    assert cli.flag_names("num_warmup must be >= 1") == "--warmup must be >= 1"
    assert cli.flag_names("thin must be an integer >= 1, got 0.") == (
        "--thin must be an integer >= 1, got 0."
    )
    assert cli.flag_names("noise_std must be > 0") == "--noise-std must be > 0"
    assert cli.flag_names("within --thin, num_chains=4") == "within --thin, --chains 4"


def test_only_the_package_s_own_errors_become_one_line(monkeypatch, tmp_path):
    """A ValueError raised by widebnn's own checks is an input error (exit 2); one
    raised inside a dependency is a bug and keeps its traceback."""
    from widebnn import _cli_commands, gp

    monkeypatch.chdir(tmp_path)

    def ours(args):
        gp.posterior(None, np.ones((2, 1)), np.ones((2, 1)), noise_var=-1.0)

    monkeypatch.setattr(_cli_commands, "kernel_command", ours)
    code, lines = _main("kernel")
    assert code == 2 and "noise_var" in lines[0], lines

    def dependency(args):
        np.reshape(np.ones(3), (2,))

    monkeypatch.setattr(_cli_commands, "kernel_command", dependency)
    with pytest.raises(ValueError, match="reshape"):
        cli.main(["kernel"])

    def crash(args):
        raise KeyError("bug")

    monkeypatch.setattr(_cli_commands, "kernel_command", crash)
    with pytest.raises(KeyError):
        cli.main(["kernel"])


def test_the_command_runs_with_one_blas_thread(monkeypatch, tmp_path):
    import scipy.linalg.cython_lapack  # noqa: F401  (the BLAS JAX's LAPACK uses)
    import threadpoolctl

    from widebnn import _cli_commands

    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    seen = []

    def record(args):
        seen.extend(
            info["num_threads"]
            for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"
        )
        return 0

    monkeypatch.setattr(_cli_commands, "kernel_command", record)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert _main("kernel")[0] == 0
        outside = [
            info["num_threads"]
            for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"
        ]
    assert seen and set(seen) == {1}
    assert set(outside) == {2}  # restored after the command
    # a user's own setting is left alone
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    seen.clear()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert _main("kernel")[0] == 0
    assert set(seen) == {2}


def test_outputs_are_not_overwritten_without_overwrite(regression_files, monkeypatch):
    monkeypatch.chdir(regression_files)
    args = ("kernel", "--data", "train.npz", "--width", "8", "--out", "k")
    assert _main(*args)[0] == 0
    saved = regression_files / "k" / "kernels.npz"
    saved.write_bytes(b"keep me")
    code, lines = _main(*args, "--W-std", "2")
    assert code == 2 and "kernels.npz" in lines[0] and "--overwrite" in lines[0]
    assert saved.read_bytes() == b"keep me"
    assert _main(*args, "--W-std", "2", "--overwrite")[0] == 0
    assert np.load(saved)["nngp"].shape == (6, 6)
    # sample and the demo refuse before any work (no sampling starts)
    (regression_files / "s").mkdir()
    (regression_files / "s" / "trace.png").write_bytes(b"old")
    code, lines = _main("sample", "--data", "train.npz", "--out", "s")
    assert code == 2 and "trace.png" in lines[0]
    (regression_files / "demo").mkdir()
    (regression_files / "demo" / "posterior.nc").write_bytes(b"old")
    code, lines = _main("demo", "--out", "demo", "--quick")
    assert code == 2 and "posterior.nc" in lines[0]
    assert (regression_files / "demo" / "posterior.nc").read_bytes() == b"old"


def test_kernel_on_user_data_uses_the_network_options(regression_files, monkeypatch):
    """--activation/--W-std/--b-std/--depth reach the network, and inputs without
    targets are enough (.npz without y, .csv with --y-cols 0)."""
    monkeypatch.chdir(regression_files)
    x = np.load("train.npz")["x"]
    np.savez("inputs.npz", x=x)
    np.savetxt("inputs.csv", x, delimiter=",")
    expected = _relu_kernels(x, 2.0, 0.3)
    x_test = np.linspace(-2, 2, 5)[:, None]
    expected_test = _relu_kernels(np.concatenate([x_test, x]), 2.0, 0.3)
    for data, extra in (("inputs.npz", ()), ("inputs.csv", ("--y-cols", "0"))):
        out = f"k-{data}"
        code, lines = _main(
            "kernel", "--data", data, *extra, "--W-std", "2", "--b-std", "0.3",
            "--test", "test.csv", "--out", out,
        )  # fmt: skip
        assert code == 0, lines
        saved = np.load(f"{out}/kernels.npz")
        np.testing.assert_allclose(saved["nngp"], expected[0], rtol=1e-12)
        # the library's ReLU NTK carries an angle round-off of ~sqrt(eps) near the
        # diagonal (see tests/widebnn/test_gp.py): rtol 1e-6
        np.testing.assert_allclose(saved["ntk"], expected[1], rtol=1e-6)
        np.testing.assert_allclose(
            saved["nngp_test"], expected_test[0][:5, 5:], rtol=1e-12
        )
        np.testing.assert_allclose(
            saved["ntk_test"], expected_test[1][:5, 5:], rtol=1e-6
        )
    code, _ = _main(
        "kernel", "--data", "inputs.npz", "--activation", "erf", "--depth", "2",
        "--out", "k-erf",
    )  # fmt: skip
    assert code == 0
    from widebnn import kernels

    erf = kernels.serial(
        kernels.Dense(8, 1.4, 0.1), kernels.Erf(), kernels.Dense(8, 1.4, 0.1),
        kernels.Erf(), kernels.Dense(1, 1.0, 0.1),
    )  # fmt: skip
    np.testing.assert_allclose(
        np.load("k-erf/kernels.npz")["nngp"], erf.kernel(x, get="nngp"), rtol=1e-12
    )


def test_sample_and_compare_in_process(regression_files, capsys):
    """``sample`` (posterior.nc loads back) and ``compare`` (its comparison.json has
    every metric), both with the rejection sampler, which compiles in seconds; the
    GHMC path of the command runs in ``test_demo_quick_writes_its_files``."""
    out = regression_files / "s"
    common = ["--data", str(regression_files / "train.npz"), "--width", "4"]
    code = cli.main(
        ["sample", *common, "--sampler", "rejection", "--draws", "10"]
        + ["--noise-std", "0.5", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    idata = diagnostics.load_inference_data(out / "posterior.nc")
    assert idata.posterior.sizes["chain"] == 1 and idata.posterior.sizes["draw"] == 10
    assert json.loads((out / "mixing.json").read_text())["predictions"]
    assert (out / "trace.png").stat().st_size > 0
    out = regression_files / "c"
    code = cli.main(
        ["compare", *common, "--test", str(regression_files / "test.csv")]
        + ["--sampler", "rejection", "--draws", "20", "--noise-std", "0.5"]
        + ["--out", str(out), "--no-progress"]
    )
    assert code == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert {"rmse", "kl", "w2", "mmd2"} <= set(comparison)
    assert (out / "predictive.png").stat().st_size > 0
    assert "rmse" in capsys.readouterr().out


def test_rejection_out_of_proposals_exits_1(regression_files):
    result = _run(
        "sample",
        "--data",
        "train.npz",
        "--sampler",
        "rejection",
        "--max-proposals",
        "3",
        "--draws",
        "50",
        "--noise-std",
        "0.01",
        "--no-progress",
        cwd=regression_files,
    )
    line = _one_line_error(result, code=1)
    assert "proposals" in line


def test_demo_quick_writes_its_files(tmp_path):
    result = _run("demo", "--quick", "--out", str(tmp_path / "demo"), "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (
        "posterior.nc",
        "predictive_ghmc.png",
        "predictive_rejection.png",
        "trace.png",
        "energy.png",
        "comparison.json",
    ):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    tables = json.loads((tmp_path / "demo" / "comparison.json").read_text())
    assert set(tables) == {"ghmc_vs_nngp", "rejection_vs_nngp"}
    assert "ess_bulk" in result.stdout  # the ArviZ summary
    assert str(tmp_path / "demo") in result.stdout
