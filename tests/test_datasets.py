"""IDX parsing, load_mnist's options and sources, and the checked download."""
import gzip
import hashlib
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from bprop import datasets
from bprop.datasets import EmbeddedDataWarning, load_mnist, read_idx

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
NAMES = list(datasets.FILES.values())


@pytest.fixture(autouse=True)
def no_user_data(monkeypatch, tmp_path):
    """Hide the user's BPROP_DATA and cache so only what a test sets up is seen."""
    monkeypatch.delenv("BPROP_DATA", raising=False)
    monkeypatch.delenv("BPROP_MNIST_MIRRORS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def idx_bytes(magic, dims, payload):
    return struct.pack(">" + "i" * (1 + len(dims)), magic, *dims) + bytes(payload)


def write_gz(path, raw):
    path.write_bytes(gzip.compress(raw))
    return path


def write_set(directory, n_train=5, n_test=3, seed=0):
    """A tiny, valid MNIST-layout set; returns the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        t = rng.integers(0, 10, size=n, dtype=np.uint8)
        img, lab = datasets.FILES[f"{split}_img"], datasets.FILES[f"{split}_label"]
        write_gz(directory / img, idx_bytes(2051, x.shape, x.tobytes()))
        write_gz(directory / lab, idx_bytes(2049, t.shape, t.tobytes()))
        arrays[split] = (x, t)
    return arrays


# --- read_idx ---------------------------------------------------------------

def test_read_idx_good_files(tmp_path):
    x = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    t = np.array([7, 0, 9], dtype=np.uint8)
    xi = read_idx(write_gz(tmp_path / "x.gz", idx_bytes(2051, (3, 4, 5), x.tobytes())), 2051)
    ti = read_idx(write_gz(tmp_path / "t.gz", idx_bytes(2049, (3,), t.tobytes())), 2049)
    assert xi.dtype == np.uint8 and ti.dtype == np.uint8
    np.testing.assert_array_equal(xi, x)
    np.testing.assert_array_equal(ti, t)


@pytest.mark.parametrize("payload, found", [(59, 59), (61, 61), (0, 0)])
def test_read_idx_wrong_payload_size(tmp_path, payload, found):
    path = write_gz(tmp_path / "x.gz", idx_bytes(2051, (3, 4, 5), b"\x01" * payload))
    with pytest.raises(ValueError, match=rf"x\.gz.*3 x 4 x 5 needs 60 bytes, found {found}"):
        read_idx(path, 2051)


def test_read_idx_truncated_header(tmp_path):
    path = write_gz(tmp_path / "t.gz", struct.pack(">i", 2049) + b"\x00\x00")
    with pytest.raises(ValueError, match=r"t\.gz: truncated IDX header: expected 8 bytes, found 6"):
        read_idx(path, 2049)


def test_read_idx_wrong_magic(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(2051, (2, 2, 2), bytes(8)))
    with pytest.raises(ValueError, match=r"x\.gz: wrong IDX magic number: expected 2049 \(labels\), found 2051"):
        read_idx(path, 2049)


def test_read_idx_truncated_gzip(tmp_path):
    raw = idx_bytes(2049, (1000,), np.random.default_rng(1).integers(0, 10, 1000, dtype=np.uint8).tobytes())
    full = gzip.compress(raw)
    path = tmp_path / "t.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match=r"t\.gz: not a complete gzip file"):
        read_idx(path, 2049)


def test_read_idx_corrupt_gzip(tmp_path):
    raw = idx_bytes(2049, (1000,), np.random.default_rng(2).integers(0, 10, 1000, dtype=np.uint8).tobytes())
    data = bytearray(gzip.compress(raw))
    data[len(data) // 2] ^= 0xFF  # inside the deflate stream: zlib error or CRC mismatch
    path = tmp_path / "t.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"t\.gz: not a complete gzip file"):
        read_idx(path, 2049)


def test_read_idx_not_gzip(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(idx_bytes(2049, (2,), b"\x01\x02"))
    with pytest.raises(ValueError, match=r"t\.gz: not a complete gzip file"):
        read_idx(path, 2049)


def test_read_idx_missing_file_is_not_a_format_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent.gz", 2049)


# --- load_mnist on a directory ---------------------------------------------

def test_load_from_data_dir_book_layout(tmp_path):
    arrays = write_set(tmp_path / "d")
    (x_train, t_train), (x_test, t_test) = load_mnist(data_dir=tmp_path / "d")
    for (x, t), (xr, tr) in (((x_train, t_train), arrays["train"]), ((x_test, t_test), arrays["test"])):
        assert x.dtype == np.float32 and x.shape == (len(xr), 784)
        np.testing.assert_array_equal(x, xr.reshape(len(xr), 784).astype(np.float32) / np.float32(255.0))
        assert t.dtype == np.uint8
        np.testing.assert_array_equal(t, tr)


def test_load_options(tmp_path):
    arrays = write_set(tmp_path / "d")
    xr, tr = arrays["train"]
    (x, t), _ = load_mnist(normalize=False, flatten=False, one_hot_label=True, data_dir=tmp_path / "d")
    assert x.dtype == np.uint8 and x.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0], xr)
    assert t.dtype == np.float64 and t.shape == (5, 10)
    expected = np.zeros((5, 10))
    expected[np.arange(5), tr] = 1.0
    np.testing.assert_array_equal(t, expected)


def test_results_are_fresh_writable_arrays(tmp_path):
    write_set(tmp_path / "d")
    for normalize in (True, False):
        (x, t), _ = load_mnist(normalize=normalize, data_dir=tmp_path / "d")
        x_before, t_before = x.copy(), t.copy()
        x += 1  # the loader caches parsed files; callers must not be able to corrupt them
        t += 1
        (x2, t2), _ = load_mnist(normalize=normalize, data_dir=tmp_path / "d")
        np.testing.assert_array_equal(x2, x_before)
        np.testing.assert_array_equal(t2, t_before)


def test_wrong_image_size_is_an_error(tmp_path):
    d = tmp_path / "d"
    write_set(d)
    write_gz(d / NAMES[0], idx_bytes(2051, (5, 2, 2), bytes(20)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: expected 28x28 images, found 2x2"):
        load_mnist(data_dir=d)


def test_label_count_mismatch_is_an_error(tmp_path):
    d = tmp_path / "d"
    write_set(d)
    write_gz(d / NAMES[1], idx_bytes(2049, (4,), bytes(4)))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: expected 5 labels .* found 4"):
        load_mnist(data_dir=d)


def test_label_out_of_range_is_an_error(tmp_path):
    d = tmp_path / "d"
    write_set(d)
    write_gz(d / NAMES[3], idx_bytes(2049, (3,), bytes([1, 10, 2])))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: labels must be 0\.\.9, found 10"):
        load_mnist(data_dir=d)


def test_explicit_dir_missing_files_does_not_fall_back(tmp_path, monkeypatch):
    d = tmp_path / "d"
    write_set(d)
    (d / NAMES[2]).unlink()
    with pytest.raises(FileNotFoundError, match=r"data_dir=.*missing t10k-images-idx3-ubyte\.gz"):
        load_mnist(data_dir=d)
    monkeypatch.setenv("BPROP_DATA", str(d))
    with pytest.raises(FileNotFoundError, match=r"BPROP_DATA=.*missing t10k-images-idx3-ubyte\.gz"):
        load_mnist()


def test_source_order(tmp_path, monkeypatch):
    env = write_set(tmp_path / "env", n_train=2)
    cache = write_set(tmp_path / "xdg-cache" / "bprop" / "mnist", n_train=3)
    given = write_set(tmp_path / "given", n_train=4)
    (x, _), _ = load_mnist(normalize=False)
    np.testing.assert_array_equal(x.reshape(-1, 28, 28), cache["train"][0])
    monkeypatch.setenv("BPROP_DATA", str(tmp_path / "env"))
    (x, _), _ = load_mnist(normalize=False)
    np.testing.assert_array_equal(x.reshape(-1, 28, 28), env["train"][0])
    (x, _), _ = load_mnist(normalize=False, data_dir=tmp_path / "given")
    np.testing.assert_array_equal(x.reshape(-1, 28, 28), given["train"][0])
    labels = [label for label, _, _ in datasets.sources(tmp_path / "given")]
    assert labels == ["data_dir", "BPROP_DATA", "cache", "embedded"]


def test_incomplete_cache_falls_back_to_embedded(tmp_path):
    cache = tmp_path / "xdg-cache" / "bprop" / "mnist"
    write_set(cache)
    (cache / NAMES[0]).unlink()
    with pytest.warns(EmbeddedDataWarning):
        (x, _), (xt, _) = load_mnist()
    assert (len(x), len(xt)) == (8000, 2000)


def test_install_without_embedded_copy_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "embedded_dir", lambda: tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="lacks its embedded copy"):
        load_mnist()


def test_data_dir_expands_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    arrays = write_set(tmp_path / "mnist")
    (_, t), _ = load_mnist(data_dir="~/mnist")
    np.testing.assert_array_equal(t, arrays["train"][1])


# --- the embedded set ------------------------------------------------------

def embedded_raw():
    d = datasets.embedded_dir()
    return read_idx(d / NAMES[2], 2051), read_idx(d / NAMES[3], 2049)


def test_embedded_split_and_warning():
    xr, tr = embedded_raw()
    assert xr.shape == (10000, 28, 28) and tr.shape == (10000,)
    with pytest.warns(EmbeddedDataWarning, match=r"8000 training images \(the first 8000\) and 2000 test images"):
        (x_train, t_train), (x_test, t_test) = load_mnist()
    assert x_train.shape == (8000, 784) and x_test.shape == (2000, 784)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    np.testing.assert_array_equal(x_train, xr[:8000].reshape(8000, 784).astype(np.float32) / np.float32(255.0))
    np.testing.assert_array_equal(x_test, xr[8000:].reshape(2000, 784).astype(np.float32) / np.float32(255.0))
    assert t_train.dtype == np.uint8
    np.testing.assert_array_equal(t_train, tr[:8000])
    np.testing.assert_array_equal(t_test, tr[8000:])


def test_embedded_options():
    xr, tr = embedded_raw()
    with pytest.warns(EmbeddedDataWarning):
        (x, t), (xt, tt) = load_mnist(normalize=False, flatten=False, one_hot_label=True)
    assert x.dtype == np.uint8 and x.shape == (8000, 1, 28, 28) and xt.shape == (2000, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0], xr[:8000])
    assert t.dtype == np.float64 and t.shape == (8000, 10) and tt.shape == (2000, 10)
    np.testing.assert_array_equal(t.sum(axis=1), np.ones(8000))
    np.testing.assert_array_equal(t.argmax(axis=1), tr[:8000])
    np.testing.assert_array_equal(tt.argmax(axis=1), tr[8000:])


def test_embedded_files_match_published_checksums():
    for name in NAMES[2:]:
        digest = hashlib.sha256((datasets.embedded_dir() / name).read_bytes()).hexdigest()
        assert digest == datasets.SHA256[name]


# --- the full set, when the project's shared copy is beside the checkout -----

def full_set():
    if not all((MNIST_DIR / n).is_file() for n in NAMES):
        pytest.skip(f"full MNIST not found at {MNIST_DIR} (the project's shared data folder)")
    return MNIST_DIR


def test_full_set_shapes_and_label_counts():
    d = full_set()
    (x, t), (xt, tt) = load_mnist(data_dir=d)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    # Per-digit counts of the training labels, as published with the data.
    np.testing.assert_array_equal(np.bincount(t), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert tt.shape == (10000,)


def test_checksum_constants_match_shared_sums():
    d = full_set()
    sums = dict(line.split()[::-1] for line in (d / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert sums == datasets.SHA256


# --- download, with the network replaced -----------------------------------

@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """Serve a tiny set from memory; SHA256 is pointed at its files."""
    src = tmp_path / "src"
    write_set(src)
    files = {n: (src / n).read_bytes() for n in NAMES}
    monkeypatch.setattr(datasets, "SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    calls = []

    def serve(url, timeout):
        calls.append(url)
        base, name = url.rsplit("/", 1)
        if base == "https://down.example":
            raise urllib.error.URLError("Name or service not known")
        if base == "https://bad.example":
            return bytes([files[name][0] ^ 1]) + files[name][1:]
        return files[name]

    monkeypatch.setattr(datasets, "_download", serve)
    return files, calls


def test_fetch_skips_failing_and_bad_mirrors(tmp_path, fake_mirror):
    files, calls = fake_mirror
    mirrors = ["https://down.example", "https://bad.example/", "https://good.example"]
    out = datasets.fetch(tmp_path / "dl", mirrors=mirrors)
    assert out == tmp_path / "dl"
    for n in NAMES:
        assert (out / n).read_bytes() == files[n]
    assert len(calls) == 3 * 4
    assert not list(out.glob("*.part"))
    datasets.fetch(tmp_path / "dl", mirrors=mirrors)
    assert len(calls) == 12  # verified files are not fetched again


def test_fetch_replaces_a_damaged_file(tmp_path, fake_mirror):
    files, calls = fake_mirror
    d = tmp_path / "dl"
    datasets.fetch(d, mirrors=["https://good.example"])
    (d / NAMES[0]).write_bytes(b"junk")
    datasets.fetch(d, mirrors=["https://good.example"])
    assert (d / NAMES[0]).read_bytes() == files[NAMES[0]]
    assert calls[4:] == ["https://good.example/" + NAMES[0]]


def test_mirror_list_from_environment(tmp_path, fake_mirror, monkeypatch):
    _, calls = fake_mirror
    monkeypatch.setenv("BPROP_MNIST_MIRRORS", "https://down.example, https://good.example")
    datasets.fetch(tmp_path / "dl")
    assert calls[:2] == ["https://down.example/" + NAMES[0], "https://good.example/" + NAMES[0]]


def test_offline_fetch_says_what_to_do(tmp_path, fake_mirror):
    with pytest.raises(datasets.DownloadError) as err:
        datasets.fetch(tmp_path / "dl", mirrors=["https://down.example"])
    msg = str(err.value)
    assert "offline" in msg and "Name or service not known" in msg
    assert "data_dir" in msg and "BPROP_DATA" in msg and all(n in msg for n in NAMES)
    assert not (tmp_path / "dl").exists()


def test_checksum_mismatch_everywhere_fails(tmp_path, fake_mirror):
    with pytest.raises(datasets.DownloadError, match=r"SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64}") as err:
        datasets.fetch(tmp_path / "dl", mirrors=["https://bad.example"])
    msg = str(err.value)
    assert "checksum mismatch: every mirror's copy differs" in msg and "offline" not in msg


def test_mismatch_and_unreachable_mirror_is_not_called_offline(tmp_path, fake_mirror):
    with pytest.raises(datasets.DownloadError) as err:
        datasets.fetch(tmp_path / "dl", mirrors=["https://down.example", "https://bad.example"])
    msg = str(err.value)
    assert "no mirror had a copy with the right checksum" in msg and "offline" not in msg
    assert "Name or service not known" in msg and "checksum mismatch: SHA-256" in msg


# --- local mirrors: a folder or a file:// URL, read without the network ------

@pytest.fixture
def local_mirror(tmp_path, monkeypatch):
    """A folder holding a tiny set, SHA256 pointed at it, and the network refused."""
    src = tmp_path / "mirror dir"  # a space, as user folders have
    write_set(src)
    files = {n: (src / n).read_bytes() for n in NAMES}
    monkeypatch.setattr(datasets, "SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})

    def no_network(url, timeout):
        raise AssertionError(f"a local mirror went to the network: {url}")

    monkeypatch.setattr(datasets, "_download", no_network)
    return src, files


@pytest.mark.parametrize("form", ["folder", "file-url"])
def test_mirror_environment_takes_a_local_folder(tmp_path, local_mirror, monkeypatch, form):
    src, files = local_mirror
    monkeypatch.setenv("BPROP_MNIST_MIRRORS", str(src) if form == "folder" else src.as_uri())
    out = datasets.fetch(tmp_path / "dl")
    for n in NAMES:
        assert (out / n).read_bytes() == files[n]


def test_local_folder_after_a_missing_one(tmp_path, local_mirror):
    src, files = local_mirror
    out = datasets.fetch(tmp_path / "dl", mirrors=[str(tmp_path / "nowhere"), str(src)])
    assert all((out / n).read_bytes() == files[n] for n in NAMES)


def test_local_folder_checksum_mismatch_says_so(tmp_path, local_mirror):
    src, files = local_mirror
    (src / NAMES[0]).write_bytes(b"not the file")
    with pytest.raises(datasets.DownloadError) as err:
        datasets.fetch(tmp_path / "dl", mirrors=[str(src)])
    msg = str(err.value)
    assert f"could not get {NAMES[0]}: checksum mismatch" in msg and "offline" not in msg
    assert str(src / NAMES[0]) in msg


def test_local_folder_without_the_files_is_not_called_offline(tmp_path, local_mirror):
    with pytest.raises(datasets.DownloadError) as err:
        datasets.fetch(tmp_path / "dl", mirrors=[(tmp_path / "empty").as_uri()])
    msg = str(err.value)
    assert "no mirror had the file" in msg and "no such folder" in msg and "offline" not in msg


def test_data_fetch_command_with_a_local_mirror(tmp_path, local_mirror, monkeypatch, capsys):
    """`bprop data fetch` with BPROP_MNIST_MIRRORS set to a folder, as a user without a network would."""
    from bprop import cli

    src, files = local_mirror
    monkeypatch.setenv("BPROP_MNIST_MIRRORS", str(src))
    monkeypatch.setenv("BPROP_DATA", str(tmp_path / "data"))
    assert cli.main(["data", "fetch"]) in (0, None)
    assert "MNIST is ready in" in capsys.readouterr().out
    assert all((tmp_path / "data" / n).read_bytes() == files[n] for n in NAMES)


def test_load_mnist_download_goes_to_the_cache(tmp_path, fake_mirror, monkeypatch):
    files, _ = fake_mirror
    monkeypatch.setattr(datasets, "MIRRORS", ("https://good.example/",))
    (x, t), (xt, tt) = load_mnist(normalize=False, download=True)
    cache = tmp_path / "xdg-cache" / "bprop" / "mnist"
    assert datasets.cache_dir() == cache and all((cache / n).is_file() for n in NAMES)
    assert x.shape == (5, 784) and xt.shape == (3, 784)
    (x2, _), _ = load_mnist(normalize=False)  # now found in the cache without downloading
    np.testing.assert_array_equal(x2, x)
