"""The real MNIST files are checked against their published checksums (cached by path,
size and modification time); a same-length corrupt copy stops validate and run."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from helpers import REPO, shared_data_dir

import fedsim.data.checksums as checksums
from fedsim.cli import main
from fedsim.data import load_dataset
from fedsim.data.checksums import VerifiedFiles
from fedsim.errors import InputError

SHARED_MNIST = shared_data_dir() / "mnist"
TEST_IMAGES = "t10k-images-idx3-ubyte"
pytestmark = pytest.mark.skipif(
    not (SHARED_MNIST / f"{TEST_IMAGES}.gz").is_file(),
    reason=f"real MNIST files not present in {SHARED_MNIST}",
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fedsim" / checksums.CACHE_NAME


def copy_mnist(data_dir: Path) -> Path:
    """Copy the real files, the test images uncompressed; return the test-images file."""
    folder = data_dir / "mnist"
    shutil.copytree(SHARED_MNIST, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    plain = folder / TEST_IMAGES
    plain.write_bytes(gzip.decompress((folder / f"{TEST_IMAGES}.gz").read_bytes()))
    (folder / f"{TEST_IMAGES}.gz").unlink()
    return plain


def corrupt_one_byte(path: Path, offset: int = 16 + 5000 * 784 + 400) -> None:
    """Change one pixel (of image 5,000), keeping the length; move the mtime on."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_corrupt_test_images_stop_validate_and_run(tmp_path, capsys):
    images = copy_mnist(tmp_path / "data")
    corrupt_one_byte(images)
    scenario = str(REPO / "scenarios" / "mnist_2nn.yaml")
    sets = ["--set", f"data.dir={tmp_path / 'data'}"]
    for argv in (
        ["validate", scenario, *sets],
        ["run", scenario, *sets, "--out", str(tmp_path / "run")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1, err
        assert str(images) in err[0] and "corrupt" in err[0] and TEST_IMAGES in err[0]
        assert "expected 0fa7898d509279e4" in err[0]


def test_untouched_copy_loads_once_verified_and_a_later_change_is_caught(
    tmp_path, own_cache, monkeypatch
):
    images = copy_mnist(tmp_path / "data")
    ds = load_dataset("mnist", tmp_path / "data", seed=0)
    assert ds.x_test.shape == (10000, 784)
    cached = json.loads(own_cache.read_text())
    assert len(cached) == 4 and any(k.startswith(f"{images.resolve()}|") for k in cached)

    # known by path, size and mtime: the next load does not hash again
    def no_hashing(*args):
        raise AssertionError("hashed a file already verified")

    with monkeypatch.context() as m:
        m.setattr(checksums.hashlib, "sha256", no_hashing)
        load_dataset("mnist", tmp_path / "data", seed=0)

    corrupt_one_byte(images)
    with pytest.raises(InputError, match=re.escape(f"{images}: corrupt")):
        load_dataset("mnist", tmp_path / "data", seed=0)


def test_verified_files_survive_a_bad_cache_file(tmp_path):
    cache = tmp_path / "verified.json"
    cache.write_text("not json")
    verified = VerifiedFiles.load(cache)
    assert verified.entries == {}
    assert verified.mismatch("k", b"abc", "0" * 64) is not None  # wrong: not remembered
    sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert verified.mismatch("k", b"abc", sha) is None
    verified.save()
    assert VerifiedFiles.load(cache).entries == {"k": sha}
