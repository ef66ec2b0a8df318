"""Data files and architecture specs of the ``widebnn`` command."""

import json

import jax
import numpy as np
import pytest

from widebnn import kernels
from widebnn._cli_io import (
    InputError,
    build_body,
    default_spec,
    load_arrays,
    read_spec,
)


def test_npz_round_trip(tmp_path):
    x, y = np.arange(12.0).reshape(6, 2), np.arange(6.0)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    got_x, got_y = load_arrays(tmp_path / "d.npz", role="--data", need_y=True)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y[:, None])


def test_csv_with_header_and_two_targets(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,y1,y2\n1,2,3,4\n5,6,7,8\n\n")
    x, y = load_arrays(path, role="--data", need_y=True, y_columns=2)
    np.testing.assert_array_equal(x, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(y, [[3, 4], [7, 8]])
    x, y = load_arrays(path, role="--test", need_y=False)
    assert x.shape == (2, 4) and y is None


def test_y_columns_split_and_validation(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1,2,3\n4,5,6\n")
    x, y = load_arrays(path, role="--data", need_y=True, y_columns=1)
    np.testing.assert_array_equal(x, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(y, [[3], [6]])
    x, y = load_arrays(path, role="--data", need_y=False, y_columns=0)
    assert x.shape == (2, 3) and y is None
    x, y = load_arrays(path, role="--data", need_y=False, y_columns=2)
    np.testing.assert_array_equal(x, [[1], [4]])
    # a negative count used to slice from the wrong end (x = column 0 only, y = the
    # rest) and exit 0; zero targets where targets are needed
    for bad in (-1, 0):
        with pytest.raises(InputError, match="--y-cols must be >= 1"):
            load_arrays(path, role="--data", need_y=True, y_columns=bad)
    with pytest.raises(InputError, match="--y-cols must be >= 0"):
        load_arrays(path, role="--data", need_y=False, y_columns=-2)
    with pytest.raises(InputError, match="--y-cols must be an integer"):
        load_arrays(path, role="--data", need_y=True, y_columns=1.0)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("missing.npz", None, "no such file"),
        ("d.txt", "1,2", "expected a .npz or .csv"),
        ("d.csv", "1,2\n3,x\n", "not a numeric CSV"),
        ("d.csv", "1,2\n3\n", "numeric CSV"),
        ("d.csv", "1\n2\n", "need more than"),
        ("d.csv", "1,nan\n2,3\n", "NaN"),
    ],
)
def test_bad_files_name_the_option(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=match) as info:
        load_arrays(path, role="--data", need_y=True)
    assert str(info.value).startswith("--data")


def test_npz_without_y_or_with_wrong_rows(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.ones((3, 2)))
    with pytest.raises(InputError, match="no 'y' array"):
        load_arrays(tmp_path / "a.npz", role="--data", need_y=True)
    np.savez(tmp_path / "b.npz", x=np.ones((3, 2)), y=np.ones(4))
    with pytest.raises(InputError, match="N = 3"):
        load_arrays(tmp_path / "b.npz", role="--data", need_y=True)
    np.savez(tmp_path / "c.npz", z=np.ones(3))
    with pytest.raises(InputError, match="named 'x'"):
        load_arrays(tmp_path / "c.npz", role="--data", need_y=True)
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="cannot read"):
        load_arrays(tmp_path / "d.npz", role="--data", need_y=False)


def test_spec_builds_the_network_it_describes(tmp_path):
    spec = {
        "layers": [
            {"layer": "Dense", "out_dim": "width", "W_std": 1.3, "b_std": 0.2},
            {"layer": "Erf"},
        ],
        "noise_std": 0.3,
    }
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(spec))
    body, settings = build_body(read_spec(path), width=7)
    assert settings == {"readout_W_std": 1.0, "readout_b_std": 0.1, "noise_std": 0.3}
    x = np.random.default_rng(0).normal(size=(4, 3))
    expected = kernels.serial(kernels.Dense(7, 1.3, 0.2), kernels.Erf()).kernel(x)
    for got, want in zip(body.kernel(x), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert body.init(jax.random.key(0), (4, 3))[0] == (4, 7)


def test_default_spec_is_depth_dense_relu():
    spec = default_spec(2)
    assert [entry["layer"] for entry in spec["layers"]] == ["Dense", "Relu"] * 2
    body, _ = build_body(spec, width=5)
    x = np.ones((2, 3))
    assert body.kernel(x, get="nngp").shape == (2, 2)


def test_default_spec_takes_activation_and_stds():
    spec = default_spec(1, "Tanh", W_std=2.0, b_std=0.5)
    assert spec["layers"] == [
        {"layer": "Dense", "out_dim": "width", "W_std": 2.0, "b_std": 0.5},
        {"layer": "Tanh"},
    ]
    body, _ = build_body(spec, width=5)
    x = np.random.default_rng(1).normal(size=(3, 2))
    expected = kernels.serial(kernels.Dense(5, 2.0, 0.5), kernels.Tanh())
    np.testing.assert_array_equal(
        body.kernel(x, get="nngp"), expected.kernel(x, get="nngp")
    )


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"layers": [{"layer": "Bogus"}]}, "unknown layer 'Bogus'"),
        ({"layers": [{"layer": "Dense", "width": 3}]}, r"layers\[0\] \(Dense\)"),
        ({"layers": [{"layer": "Dense", "out_dim": 3, "W_std": -1}]}, "W_std"),
        ({"layers": [{"out_dim": 3}]}, '"layer" name'),
        ({"layers": []}, "no layers"),
        ({"layer": []}, '"layers" list'),
        ({"layers": [{"layer": "Relu"}], "noise": 1}, "unknown top-level"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(InputError, match=match):
        build_body(spec, width=4)


def test_spec_file_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_spec(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{layers: ")
    with pytest.raises(InputError, match="not valid JSON"):
        read_spec(tmp_path / "bad.json")
