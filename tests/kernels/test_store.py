"""The checkpoint store (``widebnn.kernels._store``): atomic files with checksums,
a fingerprint written once and compared part by part, explicit start/resume.

Oracles: the arrays written (round trip must be bit-exact), hand-made damaged
files (truncated, empty, bit-flipped, garbage), and hand-made fingerprints whose
differing parts are known.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from _helpers import empty_file, flip_bit, truncate_file
from widebnn.kernels import _store
from widebnn.kernels._store import CheckpointWarning, Store

PARTS = {
    "network": {"nngp": "sha256:aaaa"},
    "inputs": {"x1": "sha256:bbbb", "x2": None},
    "key": "sha256:cccc",
    "settings": {"thin": 2, "algorithm": "ghmc"},
}


def open_store(directory, parts=PARTS, *, resume=False, kind="test"):
    return Store(
        directory, lambda: parts, resume=resume, argument="checkpoint", kind=kind
    )


def arrays():
    rng = np.random.default_rng(0)
    return {
        "a": rng.normal(size=(3, 4)),
        "b": rng.normal(size=5).astype(np.float32),
        "scalar": np.float64(2.5),
        "count": np.int64(7),
        "mask": np.array([True, False]),
    }


def assert_same(got, expected):
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].dtype == np.asarray(value).dtype, name
        assert got[name].shape == np.shape(value), name
        np.testing.assert_array_equal(got[name], value)


def dead_pid():
    """A pid no process has (searched downwards from 2**22 + 1000)."""
    for pid in range(2**22 + 1000, 2**22, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    pytest.skip("no free pid found")


def test_round_trip_is_exact(tmp_path):
    store = open_store(tmp_path / "run")
    store.save("entry", arrays())
    assert_same(store.load("entry"), arrays())
    expected = {n: (np.shape(v), np.asarray(v).dtype) for n, v in arrays().items()}
    assert_same(store.load("entry", expected), arrays())
    assert store.load("missing") is None
    assert sorted(os.listdir(tmp_path / "run")) == ["entry.npz", "fingerprint.json"]


def test_entries_are_plain_npz_without_pickle(tmp_path):
    store = open_store(tmp_path)
    store.save("entry", arrays())
    with np.load(tmp_path / "entry.npz", allow_pickle=False) as data:
        assert set(data.files) == set(arrays()) | {"__store__"}
        record = json.loads(bytes(data["__store__"]).decode())
    assert record["arrays"]["a"]["shape"] == [3, 4]
    assert record["arrays"]["a"]["dtype"] == "<f8"


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    store = open_store(tmp_path)
    store.save("entry", {"a": np.zeros(3)})

    def dying_savez(handle, **kwargs):
        handle.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(_store.np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        store.save("entry", {"a": np.ones(3)})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["entry.npz", "fingerprint.json"]
    np.testing.assert_array_equal(store.load("entry")["a"], np.zeros(3))


def _garbage(path):
    # Not a zip: np.load would try pickle, which allow_pickle=False refuses.
    path.write_bytes(b"\x80\x04garbage that looks like a pickle")


def _same_record_other_values(path):
    """A valid zip (good CRCs) whose array differs from its SHA-256 record."""
    with np.load(path, allow_pickle=False) as data:
        contents = {n: data[n] for n in data.files}
    contents["a"] = contents["a"] + 1e-12
    buffer = io.BytesIO()
    np.savez(buffer, **contents)
    path.write_bytes(buffer.getvalue())
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # the zip itself is intact


@pytest.mark.parametrize(
    "damage", [truncate_file, empty_file, flip_bit, _garbage, _same_record_other_values]
)
def test_damaged_entry_warns_naming_the_file_and_is_deleted(tmp_path, damage):
    store = open_store(tmp_path)
    store.save("entry", {"a": np.arange(40.0), "b": np.ones((2, 2))})
    path = tmp_path / "entry.npz"
    damage(path)
    with pytest.warns(CheckpointWarning, match=str(path)) as record:
        assert store.load("entry") is None
    assert "recomputed" in str(record[0].message)
    assert not path.exists()
    store.save("entry", {"a": np.arange(40.0), "b": np.ones((2, 2))})
    np.testing.assert_array_equal(store.load("entry")["a"], np.arange(40.0))


def test_checksum_names_the_array(tmp_path):
    store = open_store(tmp_path)
    store.save("entry", {"a": np.arange(40.0)})
    _same_record_other_values(tmp_path / "entry.npz")
    with pytest.warns(CheckpointWarning, match="'a' does not match its SHA-256"):
        store.load("entry")


def test_intact_entry_of_another_structure_is_refused(tmp_path):
    store = open_store(tmp_path)
    store.save("entry", {"a": np.zeros(3)})
    with pytest.raises(ValueError, match="entry.npz is intact but holds other"):
        store.load("entry", {"a": ((4,), np.float64)})
    with pytest.raises(ValueError, match="holds other arrays"):
        store.load("entry", {"a": ((3,), np.float32)})


def test_fingerprint_mismatch_names_each_differing_part(tmp_path):
    open_store(tmp_path)
    other = {
        "network": {"nngp": "sha256:dddd"},
        "inputs": {"x1": "sha256:bbbb", "x2": "sha256:eeee"},
        "key": "sha256:cccc",
        "settings": {"thin": 3, "algorithm": "ghmc"},
    }
    with pytest.raises(ValueError) as error:
        open_store(tmp_path, other, resume=True)
    message = str(error.value)
    assert "network (nngp), inputs (x2), settings (thin: 2 -> 3)" in message
    assert "key" not in message.split("differ:")[1].split(".")[0]
    assert "checkpoint=" in message and "resume=False" in message
    # A part that only one of the two has is a difference too.
    with pytest.raises(ValueError, match=r"differ: masks \("):
        open_store(tmp_path, PARTS | {"masks": {"mask1": None}}, resume=True)
    open_store(tmp_path, dict(PARTS), resume=True)  # equal: accepted


def test_fingerprint_is_written_once(tmp_path):
    open_store(tmp_path)
    text = (tmp_path / "fingerprint.json").read_text()
    open_store(tmp_path, resume=True)
    assert (tmp_path / "fingerprint.json").read_text() == text


def test_kind_mismatch_is_refused(tmp_path):
    open_store(tmp_path, kind="widebnn.kernels.batched")
    with pytest.raises(ValueError, match="checkpoint of widebnn.kernels.batched"):
        open_store(tmp_path, resume=True, kind="widebnn.samplers.hmc")


@pytest.mark.parametrize("damage", [truncate_file, empty_file, flip_bit])
def test_damaged_fingerprint_is_an_error_naming_the_file(tmp_path, damage):
    open_store(tmp_path)
    damage(tmp_path / "fingerprint.json")
    with pytest.raises(ValueError, match="fingerprint.json .* is damaged"):
        open_store(tmp_path, resume=True)


def test_start_needs_a_missing_or_empty_directory(tmp_path):
    open_store(tmp_path / "new" / "nested")  # missing: created
    (tmp_path / "empty").mkdir()
    open_store(tmp_path / "empty")  # empty: used
    with pytest.raises(ValueError, match="already holds a checkpoint.*resume=True"):
        open_store(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty"):
        open_store(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_resume_needs_a_saved_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*mistyped"):
        open_store(tmp_path / "typo", resume=True)
    assert not (tmp_path / "typo").exists()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        open_store(tmp_path, resume=True)


@pytest.mark.parametrize("resume", [False, True])
def test_path_that_is_a_file_is_refused(tmp_path, resume):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="checkpoint=.*is an existing file"):
        open_store(path, resume=resume)
    with pytest.raises(ValueError, match="checkpoint=.*a part of the path is a file"):
        open_store(path / "sub")
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        open_store(3)
    with pytest.raises(TypeError, match="resume must be True or False"):
        open_store(tmp_path / "d", resume="yes")


def test_stale_temporary_files_are_removed(tmp_path):
    open_store(tmp_path)
    stale = tmp_path / f".tile-0-0.npz.{dead_pid()}.0a1b2c3d.tmp"
    mine = tmp_path / f".tile-0-1.npz.{os.getpid()}.0a1b2c3d.tmp"
    live = tmp_path / f".tile-0-2.npz.{os.getppid()}.0a1b2c3d.tmp"
    other = tmp_path / "user.tmp"
    for path in (stale, mine, live, other):
        path.write_bytes(b"half")
    open_store(tmp_path, resume=True)
    assert not stale.exists() and not mine.exists()
    assert live.exists()  # another running process may still be writing it
    assert other.exists()  # not a name the store writes


def test_start_ignores_stale_temporaries_in_an_empty_directory(tmp_path):
    stale = tmp_path / f".chunk_00000.npz.{dead_pid()}.00ff.tmp"
    stale.write_bytes(b"half")
    open_store(tmp_path)  # only a stale temporary: counts as empty
    assert not stale.exists()


def test_rounded_digest_ignores_round_off_but_not_real_changes():
    values = np.array([1 / 3, -2.718281828459045, 1e-8, 123456.789, 0.0])
    digest = _store.hash_rounded(values)
    one_ulp = np.nextafter(values, np.inf)
    one_ulp[-1] = -0.0  # -0 and +0 are the same value
    assert _store.hash_rounded(one_ulp) == digest
    assert _store.hash_rounded(values * (1 + 1e-8)) != digest
    assert _store.hash_rounded(values.astype(np.float32)) != digest  # dtype counts
    assert _store.hash_rounded(values[:4]) != digest
    assert _store.hash_rounded({"a": values}) != _store.hash_rounded({"b": values})


def test_exact_digest_sees_every_bit_and_the_dtype():
    values = np.array([1 / 3, 2.0])
    assert _store.hash_exact(values) == _store.hash_exact(values.copy())
    assert _store.hash_exact(np.nextafter(values, 1)) != _store.hash_exact(values)
    assert _store.hash_exact(values.reshape(2, 1)) != _store.hash_exact(values)
    assert _store.hash_exact(np.array([1, 2])) != _store.hash_exact(
        np.array([1, 2], np.int32)
    )
    assert _store.hash_exact(None) is None


def test_key_digest_sees_the_key_data():
    import jax

    a = _store.hash_key(jax.random.key(0))
    assert a == _store.hash_key(jax.random.key(0))
    assert a != _store.hash_key(jax.random.key(1))
    assert a != _store.hash_key(jax.random.PRNGKey(0))  # raw key: other kind
