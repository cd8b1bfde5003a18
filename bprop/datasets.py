"""MNIST for the book's examples: ``load_mnist`` with the book's signature and layout.

Where the data comes from, first match wins:

1. ``data_dir`` passed to :func:`load_mnist` (all four IDX files required);
2. the ``BPROP_DATA`` environment variable (all four files required);
3. the user cache, ``$XDG_CACHE_HOME/bprop/mnist`` or ``~/.cache/bprop/mnist``,
   where :func:`fetch` (``bprop data fetch``) puts downloads, used when complete;
4. the copy of MNIST's 10,000-image test set embedded in the package, split
   deterministically into the first 8,000 images for training and the last
   2,000 for testing, with an :class:`EmbeddedDataWarning`.

Files are parsed with NumPy; a file that is not exactly what its IDX header
promises raises ``ValueError`` naming it, so a damaged download never turns
into a silently wrong array.
"""
import functools
import gzip
import hashlib
import math
import os
import struct
import urllib.parse
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "load_mnist", "fetch", "read_idx", "sources", "cache_dir", "embedded_dir",
    "EmbeddedDataWarning", "DownloadError", "FILES", "SHA256", "MIRRORS",
    "EMBEDDED_TRAIN_SIZE",
]

#: The book's keys for the four standard MNIST files.
FILES = {
    "train_img": "train-images-idx3-ubyte.gz",
    "train_label": "train-labels-idx1-ubyte.gz",
    "test_img": "t10k-images-idx3-ubyte.gz",
    "test_label": "t10k-labels-idx1-ubyte.gz",
}

#: SHA-256 of the original gzip files; downloads are checked against these.
SHA256 = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

#: Base URLs tried in order; ``BPROP_MNIST_MIRRORS`` (comma-separated URLs, ``file://``
#: URLs or plain folders) overrides.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: Images of the embedded set used for training; the rest are the test set.
EMBEDDED_TRAIN_SIZE = 8000

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
_ROWS = _COLS = 28
_HINT = (
    "Put the four MNIST files ({}) in a directory and pass it as load_mnist(data_dir=...), "
    "`bprop train --data DIR`, or the BPROP_DATA environment variable."
).format(", ".join(FILES.values()))


class EmbeddedDataWarning(UserWarning):
    """The full MNIST set was not found: the embedded 10,000 test images are split 8,000/2,000."""


class DownloadError(RuntimeError):
    """No mirror delivered a file whose SHA-256 matched."""


def embedded_dir():
    """Directory of the MNIST test set shipped inside the package."""
    return Path(__file__).resolve().parent / "data" / "mnist"


def cache_dir():
    """Per-user directory where :func:`fetch` stores the full set by default."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bprop" / "mnist"


def _missing(directory):
    return [name for name in FILES.values() if not (Path(directory) / name).is_file()]


def sources(data_dir=None):
    """Where :func:`load_mnist` looks, in order.

    Parameters
    ----------
    data_dir : str or Path, optional
        The directory a caller would pass to :func:`load_mnist`.

    Returns
    -------
    list of tuple
        ``(label, path or None, missing_file_names)`` for ``data_dir``,
        ``BPROP_DATA``, the cache and the embedded set.
    """
    env = os.environ.get("BPROP_DATA") or None
    out = []
    for label, path in (("data_dir", data_dir), ("BPROP_DATA", env), ("cache", cache_dir())):
        path = None if path is None else Path(path).expanduser()
        out.append((label, path, None if path is None else _missing(path)))
    emb = embedded_dir()
    out.append(("embedded", emb, [n for n in (FILES["test_img"], FILES["test_label"]) if not (emb / n).is_file()]))
    return out


def _read_bytes(path):
    with open(path, "rb") as raw:  # a missing file stays a FileNotFoundError
        try:
            return gzip.GzipFile(fileobj=raw, mode="rb").read()
        except (OSError, EOFError, zlib.error) as exc:
            # gzip checks the CRC and length trailer, so truncation and bit rot land here.
            raise ValueError(f"{path}: not a complete gzip file ({type(exc).__name__}: {exc})") from None


def read_idx(path, magic):
    """Read one gzip-compressed IDX file of unsigned bytes.

    Parameters
    ----------
    path : str or Path
        A ``.gz`` IDX file.
    magic : {2051, 2049}
        The expected magic number: 2051 for images (count, rows, columns),
        2049 for labels (count).

    Returns
    -------
    numpy.ndarray
        uint8, shape ``(count, rows, cols)`` or ``(count,)``, read-only.

    Raises
    ------
    ValueError
        The file is not valid gzip, its magic is not ``magic``, or its payload
        is not exactly the size its header states.
    """
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        raise ValueError(f"read_idx: magic must be {IMAGE_MAGIC} or {LABEL_MAGIC}, got {magic}")
    data = _read_bytes(path)
    ndim = 3 if magic == IMAGE_MAGIC else 1
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header: expected {header} bytes, found {len(data)}")
    found, *dims = struct.unpack(">" + "i" * (1 + ndim), data[:header])
    if found != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise ValueError(f"{path}: wrong IDX magic number: expected {magic} ({kind}), found {found}")
    if min(dims) < 0:
        raise ValueError(f"{path}: negative dimension in IDX header: {dims}")
    expected = math.prod(dims)
    payload = len(data) - header
    if payload != expected:
        raise ValueError(
            f"{path}: IDX payload size mismatch: header {' x '.join(map(str, dims))} needs "
            f"{expected} bytes, found {payload}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


# Decompressing the training images takes about half a second (the book pickles
# for the same reason); parsed files stay cached, keyed by size and mtime.
@functools.lru_cache(maxsize=8)
def _cached(path, magic, _stamp):
    return read_idx(path, magic)


def _load(path, magic):
    st = os.stat(path)
    return _cached(str(path), magic, (st.st_size, st.st_mtime_ns))


def _load_pair(directory, img_name, label_name):
    directory = Path(directory)
    x = _load(directory / img_name, IMAGE_MAGIC)
    t = _load(directory / label_name, LABEL_MAGIC)
    if x.shape[1:] != (_ROWS, _COLS):
        raise ValueError(
            f"{directory / img_name}: expected {_ROWS}x{_COLS} images, found {x.shape[1]}x{x.shape[2]}"
        )
    if len(x) != len(t):
        raise ValueError(
            f"{directory / label_name}: expected {len(x)} labels (one per image in {img_name}), found {len(t)}"
        )
    if t.size and t.max() > 9:
        raise ValueError(f"{directory / label_name}: labels must be 0..9, found {int(t.max())}")
    return x, t


def _locate(data_dir, download):
    """Return (directory, is_embedded)."""
    explicit = data_dir if data_dir is not None else (os.environ.get("BPROP_DATA") or None)
    explicit = None if explicit is None else Path(explicit).expanduser()
    if download:
        return fetch(explicit), False
    if explicit is not None:
        missing = _missing(explicit)
        if missing:
            where = "data_dir" if data_dir is not None else "BPROP_DATA"
            raise FileNotFoundError(
                f"MNIST not found in {where}={str(explicit)!r}: missing {', '.join(missing)}. {_HINT} "
                "Or download them there with load_mnist(download=True) or `bprop data fetch --dir DIR`."
            )
        return explicit, False
    if not _missing(cache_dir()):
        return cache_dir(), False
    if not all((embedded_dir() / FILES[k]).is_file() for k in ("test_img", "test_label")):
        raise FileNotFoundError(f"MNIST not found, and this bprop install lacks its embedded copy "
                                f"({embedded_dir()}). {_HINT}")
    return embedded_dir(), True


def _change_one_hot_label(t):
    # The book builds one-hot rows with np.zeros, so they are float64.
    one_hot = np.zeros((t.size, 10))
    one_hot[np.arange(t.size), t] = 1
    return one_hot


def load_mnist(normalize=True, flatten=True, one_hot_label=False, data_dir=None, download=False):
    """Load MNIST as the book's ``dataset.mnist.load_mnist`` does.

    Parameters
    ----------
    normalize : bool
        Scale pixels to float32 in [0, 1] (divided by 255.0); else uint8 0..255.
    flatten : bool
        Images as rows of 784 values; else shape ``(N, 1, 28, 28)``.
    one_hot_label : bool
        Labels as float64 one-hot rows ``(N, 10)``; else uint8 digits ``(N,)``.
    data_dir : str or Path, optional
        Directory holding the four IDX ``.gz`` files. Defaults to ``BPROP_DATA``,
        then the user cache, then the embedded test set (see the module docs).
    download : bool
        Fetch missing files into ``data_dir`` (or ``BPROP_DATA`` or the cache)
        first, checking their SHA-256.

    Returns
    -------
    tuple
        ``((x_train, t_train), (x_test, t_test))``.

    Raises
    ------
    FileNotFoundError
        ``data_dir`` or ``BPROP_DATA`` lacks one of the four files.
    ValueError
        A file is corrupt, truncated, or not the MNIST layout.
    DownloadError
        ``download=True`` and a file could not be fetched.

    Warns
    -----
    EmbeddedDataWarning
        Only the embedded test set was found; it is split 8,000 train / 2,000 test.

    Examples
    --------
    >>> (x_train, t_train), (x_test, t_test) = load_mnist(one_hot_label=True)  # doctest: +SKIP
    >>> x_train.shape, t_train.shape  # doctest: +SKIP
    ((60000, 784), (60000, 10))
    """
    directory, embedded = _locate(data_dir, download)
    if embedded:
        x, t = _load_pair(directory, FILES["test_img"], FILES["test_label"])
        n = EMBEDDED_TRAIN_SIZE
        train, test = (x[:n], t[:n]), (x[n:], t[n:])
        warnings.warn(
            f"full MNIST not found: using the embedded MNIST test set, split into {n} training images "
            f"(the first {n}) and {len(x) - n} test images (the last {len(x) - n}). For the full set, run "
            "`bprop data fetch`, or pass data_dir / set BPROP_DATA (see `bprop data path`).",
            EmbeddedDataWarning,
            stacklevel=2,
        )
    else:
        train = _load_pair(directory, FILES["train_img"], FILES["train_label"])
        test = _load_pair(directory, FILES["test_img"], FILES["test_label"])
    out = []
    for x, t in (train, test):
        x = x.reshape(len(x), 1, _ROWS, _COLS) if not flatten else x.reshape(len(x), _ROWS * _COLS)
        if normalize:
            x = x.astype(np.float32)
            x /= 255.0
        else:
            x = x.copy()
        t = _change_one_hot_label(t) if one_hot_label else t.copy()
        out.append((x, t))
    return tuple(out)


def _download(url, timeout):
    # The one place that touches the network, so tests can replace it.
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _local_folder(mirror):
    """The folder a mirror names (a plain path or a ``file://`` URL), or None for a network URL."""
    parts = urllib.parse.urlsplit(mirror)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    # A one-letter "scheme" is a Windows drive (C:\data), not a URL.
    if len(parts.scheme) > 1:
        return None
    return Path(mirror).expanduser()


def _mirrors(mirrors):
    """The mirrors to try, in order: network base URLs ending in "/", or local folders (Path)."""
    if mirrors is None:
        mirrors = []
        # Comma-separated; whitespace separates only URLs (a folder may contain spaces).
        for part in os.environ.get("BPROP_MNIST_MIRRORS", "").split(","):
            words = part.split()
            mirrors += words if len(words) > 1 and all("://" in w for w in words) else [part.strip()]
        mirrors = [m for m in mirrors if m] or MIRRORS
    out = []
    for m in mirrors:
        folder = _local_folder(str(m))
        out.append(folder if folder is not None else (m if m.endswith("/") else m + "/"))
    return out


def _get(mirror, name, timeout):
    """The bytes of ``name`` from one mirror (a base URL or a local folder)."""
    if isinstance(mirror, Path):
        if not mirror.is_dir():
            raise FileNotFoundError(f"no such folder: {mirror}")
        return (mirror / name).read_bytes()
    return _download(mirror + name, timeout)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(data_dir=None, mirrors=None, timeout=30, log=None):
    """Download the four MNIST files, verifying each one's SHA-256.

    Files already present with the right checksum are kept; a file with a
    wrong checksum is replaced.

    Parameters
    ----------
    data_dir : str or Path, optional
        Target directory; default ``BPROP_DATA`` if set, else :func:`cache_dir`.
    mirrors : sequence of str, optional
        Tried in order: base URLs, ``file://`` URLs or plain local folders;
        default ``BPROP_MNIST_MIRRORS`` (comma-separated) or :data:`MIRRORS`.
    timeout : float
        Seconds per request.
    log : callable, optional
        Called with one progress message per file.

    Returns
    -------
    Path
        The directory holding the four verified files.

    Raises
    ------
    DownloadError
        Every mirror failed for a file; the message says whether the copies
        had the wrong checksum or the mirrors could not be reached.
    """
    target = Path(data_dir if data_dir is not None else (os.environ.get("BPROP_DATA") or cache_dir())).expanduser()
    log = log or (lambda msg: None)
    for name, digest in SHA256.items():
        path = target / name
        if path.is_file() and _sha256(path) == digest:
            log(f"{name}: present, checksum ok")
            continue
        errors, mismatches, unreachable = [], 0, 0
        for mirror in _mirrors(mirrors):
            where = mirror / name if isinstance(mirror, Path) else mirror + name
            try:
                data = _get(mirror, name, timeout)
            except Exception as exc:  # any failure just means: try the next mirror
                errors.append(f"{where}: {type(exc).__name__}: {exc}")
                unreachable += not isinstance(mirror, Path)
                continue
            got = hashlib.sha256(data).hexdigest()
            if got != digest:
                mismatches += 1
                errors.append(f"{where}: checksum mismatch: SHA-256 {got}, expected {digest}")
                continue
            target.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            log(f"{name}: {'copied' if isinstance(mirror, Path) else 'downloaded'} from {mirror}")
            break
        else:
            if errors and mismatches == len(errors):
                why = "checksum mismatch: every mirror's copy differs from the published file"
            elif mismatches:
                why = "no mirror had a copy with the right checksum"
            elif errors and unreachable == len(errors):
                why = "no mirror could be reached (are you offline?)"
            else:
                why = "no mirror had the file"
            raise DownloadError(
                f"could not get {name}: {why}:\n  " + "\n  ".join(errors or ["no mirrors"])
                + f"\n{_HINT} The directory bprop would use is {target}."
            )
    return target
