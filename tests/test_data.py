"""Datasets: IDX parsing, splits, Fashion-MNIST, the digits fallback, augmentation, identity."""

from __future__ import annotations

import gzip
import io
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import needs_fashion
from PIL import Image

import core.data as datasets
from core import UserError
from core.config import DataConfig
from core.data import augment, fashion_mnist, folder
from core.data.dataset import ImageData, split_train_val


def write_idx(path, array: np.ndarray, type_code: int = 0x08, cut: int = 0) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(raw[: len(raw) - cut])


# -- IDX files ------------------------------------------------------------------------------


def test_read_idx_images_and_labels(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 0, 255, 3], dtype=np.uint8)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels.gz", labels)
    got = fashion_mnist.read_idx(tmp_path / "images.gz")
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "labels.gz"), labels)
    got[0, 0, 0] = 99  # a writable array (torch.from_numpy warns on read-only ones)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    images = np.ones((3, 5, 5), dtype=np.uint8)
    write_idx(tmp_path / "short.gz", images, cut=7)
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist.read_idx(tmp_path / "short.gz")
    write_idx(tmp_path / "float.gz", images, type_code=0x0D)  # IDX of floats: not ours
    with pytest.raises(ValueError):
        fashion_mnist.read_idx(tmp_path / "float.gz")
    with gzip.open(tmp_path / "tiny.gz", "wb") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ValueError):
        fashion_mnist.read_idx(tmp_path / "tiny.gz")


# -- splits ---------------------------------------------------------------------------------


def imbalanced(counts=(50, 30, 20)):
    y = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(1)
    y = y[rng.permutation(len(y))]
    return np.arange(len(y)), y  # x = each sample's own index


def test_split_is_deterministic_per_seed():
    x, y = imbalanced()
    a = split_train_val(x, y, 20, seed=3)
    b = split_train_val(x, y, 20, seed=3)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    other = split_train_val(x, y, 20, seed=4)
    assert not np.array_equal(a[2], other[2])


def test_split_is_disjoint_complete_and_keeps_order():
    x, y = imbalanced()
    x_train, y_train, x_val, y_val = split_train_val(x, y, 20, seed=0)
    assert set(x_train).isdisjoint(x_val)
    assert sorted([*x_train, *x_val]) == list(x)
    np.testing.assert_array_equal(y_train, y[x_train])  # labels travel with their images
    np.testing.assert_array_equal(y_val, y[x_val])
    assert np.all(np.diff(x_train) > 0)  # the training set keeps the source order


def test_split_is_stratified():
    x, y = imbalanced((50, 30, 20))
    _, _, _, y_val = split_train_val(x, y, 20, seed=0)
    np.testing.assert_array_equal(np.bincount(y_val, minlength=3), [10, 6, 4])
    x, y = imbalanced((600, 300, 100))
    _, _, _, y_val = split_train_val(x, y, 100, seed=0)
    np.testing.assert_array_equal(np.bincount(y_val, minlength=3), [60, 30, 10])


def test_split_keeps_a_singleton_class_in_training():
    y = np.array([0] * 10 + [1] * 10 + [2])
    _, y_train, _, y_val = split_train_val(np.arange(21), y, 5, seed=0)
    assert 2 in y_train and 2 not in y_val


@pytest.mark.parametrize("val_size", [0, 100, 101])
def test_split_rejects_impossible_sizes(val_size):
    x, y = imbalanced()
    with pytest.raises(ValueError):
        split_train_val(x, y, val_size, seed=0)


# -- Fashion-MNIST --------------------------------------------------------------------------


@needs_fashion
def test_fashion_mnist_loads_with_the_documented_splits():
    data = datasets.load(DataConfig())
    assert data.name == "Fashion-MNIST"
    assert data.classes == fashion_mnist.CLASSES and len(data.classes) == 10
    for split, n in (("train", 50_000), ("val", 10_000), ("test", 10_000)):
        x, y = data.split(split)
        assert x.shape == (n, 1, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))
    np.testing.assert_array_equal(data.class_counts("val"), [1000] * 10)  # stratified
    np.testing.assert_array_equal(data.class_counts("test"), [1000] * 10)
    assert data.x_train.max() == 255 and data.x_train.min() == 0
    assert data.identity == datasets.identity(DataConfig())


@needs_fashion
def test_fashion_mnist_train_limit_takes_the_first_images():
    full = datasets.load(DataConfig())
    few = datasets.load(DataConfig(train_limit=300))
    np.testing.assert_array_equal(few.x_train, full.x_train[:300])
    np.testing.assert_array_equal(few.x_val, full.x_val)
    assert few.identity != full.identity


# -- digits and the fallback ----------------------------------------------------------------


def test_digits_loads_as_28x28_uint8():
    data = datasets.load(DataConfig(dataset="digits", val_size=100))
    assert data.classes == tuple(str(d) for d in range(10))
    sizes = {s: len(data.split(s)[1]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert abs(sizes["val"] - 100) <= 5 and abs(sizes["test"] - 359) <= 5
    for s in ("train", "val", "test"):
        x, y = data.split(s)
        assert x.dtype == np.uint8 and x.shape[1:] == (1, 28, 28)
        assert set(np.unique(y)) == set(range(10))
    # The 8x8 glyph sits in the middle 20x20: the 4-pixel border is dark.
    assert data.x_train[:, :, :4].max() == 0 and data.x_train[:, :, :, -4:].max() == 0


def test_digits_with_the_default_validation_size_works():
    """DataConfig(dataset="digits") keeps the Fashion-MNIST default val_size of 10000."""
    data = datasets.load(DataConfig(dataset="digits"))
    assert 0 < len(data.y_val) < len(data.y_train)


@pytest.fixture
def no_fashion(tmp_path, monkeypatch):
    """Fashion-MNIST is nowhere: not installed, not cached, no internet."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # in this process only
    monkeypatch.delenv(fashion_mnist.ENV_DIR, raising=False)
    monkeypatch.setenv(datasets.OFFLINE_ENV, "1")
    datasets._fashion_source.cache_clear()
    datasets._decoded.clear()
    yield tmp_path
    datasets._fashion_source.cache_clear()
    datasets._decoded.clear()


def test_missing_fashion_mnist_falls_back_to_digits_with_one_note(no_fashion, capsys):
    source = datasets.describe(DataConfig())
    assert source.kind == "digits"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note:"), err
    assert "digits" in err[0]

    data = datasets.load(DataConfig())
    assert data.classes == tuple(str(d) for d in range(10))
    assert data.x_train.shape[1:] == (1, 28, 28)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1  # loading says it once, not once per helper
    assert datasets.effective(DataConfig()).dataset == "digits"
    assert datasets.identity(DataConfig()) == datasets.identity(datasets.effective(DataConfig()))


def test_explicit_data_dir_without_files_is_an_error(no_fashion):
    empty = no_fashion / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="empty"):
        datasets.describe(DataConfig(data_dir=str(empty)))


@needs_fashion
def test_explicit_data_dir_is_not_silently_replaced(tmp_path):
    datasets._fashion_source.cache_clear()
    try:
        with pytest.raises(UserError):
            datasets.describe(DataConfig(data_dir=str(tmp_path)))
    finally:
        datasets._fashion_source.cache_clear()


def test_data_dir_holding_the_files_is_used(tmp_path, no_fashion):
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = np.arange(30, dtype=np.uint8) % 10
    folder = tmp_path / "fm"
    folder.mkdir()
    for key, name in fashion_mnist.FILES.items():
        write_idx(folder / name, images if "images" in key else labels)
    source = datasets.describe(DataConfig(data_dir=str(folder)))
    assert source.kind == "fashion-mnist" and source.folder == folder
    x, y, _, _ = fashion_mnist.load(folder)
    assert x.shape == (30, 1, 28, 28) and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images)


def test_unknown_dataset_path_is_an_error():
    with pytest.raises(UserError, match="does not exist"):
        datasets.describe(DataConfig(dataset="/no/such/path"))


# -- identity -------------------------------------------------------------------------------


def test_identity_follows_everything_that_decides_the_images():
    cfg = DataConfig(dataset="digits", val_size=100)
    base = datasets.identity(cfg)
    assert base == datasets.identity(DataConfig(dataset="digits", val_size=100))
    changed = [
        replace(cfg, val_size=101),
        replace(cfg, train_limit=50),
        replace(cfg, split_seed=1),
    ]
    if hasattr(cfg, "image_size"):
        changed.append(replace(cfg, image_size=32))
    ids = [datasets.identity(c) for c in changed]
    assert base not in ids and len(set(ids)) == len(ids)
    assert datasets.identity(replace(cfg, data_dir="/elsewhere")) == base
    assert datasets.load(cfg).identity == base


# -- bounded memory -------------------------------------------------------------------------


def fake_data(mb: float, name: str = "fake") -> ImageData:
    """An ImageData whose arrays take ``mb`` MB (all of it in x_train)."""
    empty = np.zeros((0, 1, 1, 1), np.uint8)
    x = np.zeros((int(mb * (1 << 20)), 1, 1, 1), np.uint8)
    no = np.zeros(0, np.int64)
    return ImageData(name, ("a",), x, no, empty, no, empty, no, name, name)


def test_decoded_datasets_are_bounded_in_entries_and_bytes(monkeypatch):
    monkeypatch.setenv(datasets.CACHE_ENV, "10")
    cache = datasets.DecodedCache(entries=3)
    sizes = {DataConfig(val_size=n): n for n in (1, 2, 3, 4, 6, 11)}
    made = []

    def make(cfg):
        made.append(sizes[cfg])
        return fake_data(sizes[cfg])

    cfgs = list(sizes)
    for cfg in cfgs[:3]:
        cache.get(cfg, make)
    assert cache.get(cfgs[0], make) is cache.get(cfgs[0], make)  # kept, now most recent
    cache.get(cfgs[3], make)  # 4 entries is one too many: the least recently used (2) goes
    assert list(cache._items) == [cfgs[2], cfgs[0], cfgs[3]]
    cache.get(cfgs[4], make)  # 3 + 1 + 4 + 6 MB is over 10: 3 and 1 go
    assert list(cache._items) == [cfgs[3], cfgs[4]]
    assert cache.get(cfgs[5], make).x_train.nbytes == 11 << 20  # over the budget: not kept
    assert list(cache._items) == [cfgs[3], cfgs[4]]
    assert made == [1, 2, 3, 4, 6, 11]


def test_two_callers_asking_for_the_same_dataset_decode_it_once():
    cache = datasets.DecodedCache()
    started, release, made = threading.Event(), threading.Event(), []

    def make(cfg):
        made.append(cfg)
        started.set()
        release.wait(5)
        return fake_data(0.1)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.get, DataConfig(), make)
        started.wait(5)
        second = pool.submit(cache.get, DataConfig(), make)
        time.sleep(0.1)  # the second caller is waiting on the first
        release.set()
        assert first.result() is second.result()
    assert len(made) == 1


def test_load_keeps_what_fits_the_byte_budget(monkeypatch):
    """Digits take 1.4 MB each way they are split: with 2 MB only the last one stays."""
    datasets._decoded.clear()
    monkeypatch.setenv(datasets.CACHE_ENV, "2")
    one, two = DataConfig(dataset="digits", val_size=100), DataConfig(dataset="digits")
    first = datasets.load(one)
    assert datasets.load(one) is first
    datasets.load(two)
    assert datasets.load(one) is not first  # it was dropped, and decoded again
    assert list(datasets._decoded._items) == [one]
    datasets._decoded.clear()


def test_a_bad_cache_setting_is_one_clear_line(monkeypatch):
    monkeypatch.setenv(datasets.CACHE_ENV, "2GB")
    with pytest.raises(UserError, match=r"^CNN_CLASSROOM_DATA_CACHE_MB must be a positive whole "
                       r"number of MB, not '2GB'$"):  # fmt: skip
        datasets.load(DataConfig(dataset="digits"))


def write_photo_folder(root, classes: int, per_class: int):
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (4, 4), 40 * i).save(root / f"class{c}" / f"{i}.png")
    return root


def test_a_zip_that_makes_no_dataset_leaves_no_extraction(tmp_path, monkeypatch):
    """Safe to extract, but one class: refused when its folders are scanned, and the
    extraction goes with the refusal (the command line's path; the app's is test_uploads)."""
    import zipfile

    from core.data import archive

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    zipped = tmp_path / "ants.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for i in range(3):
            buf = io.BytesIO()
            Image.new("L", (4, 4), 40 * i).save(buf, "PNG")
            zf.writestr(f"ants/{i}.png", buf.getvalue())
    with pytest.raises(UserError, match="at least two classes"):
        datasets.describe(DataConfig(dataset=str(zipped)))
    assert list(archive.default_root().iterdir()) == []


def test_photo_datasets_are_capped_when_scanned(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "MAX_IMAGES", 8)
    monkeypatch.setattr(folder, "MAX_CLASSES", 3)
    assert len(folder.scan(write_photo_folder(tmp_path / "ok", 2, 4)).files["all"]) == 8
    big = write_photo_folder(tmp_path / "big", 3, 3)
    with pytest.raises(UserError, match=r"holds more than 8 images; at most that many are "):
        folder.scan(big)
    many = write_photo_folder(tmp_path / "many", 4, 1)
    with pytest.raises(UserError, match=r"has 4 class folders; at most 3 are accepted: refused$"):
        datasets.describe(DataConfig(dataset=str(many)))


# -- augmentation ---------------------------------------------------------------------------


def dots(n: int, size: int = 16) -> torch.Tensor:
    """(n, 1, size, size) images with one bright pixel in the middle."""
    x = torch.zeros(n, 1, size, size)
    x[:, :, size // 2, size // 2] = 1.0
    return x


def test_jitter_zero_is_identity():
    x = torch.rand(5, 2, 8, 8)
    assert torch.equal(augment.jitter(x, 0), x)


@pytest.mark.parametrize("pixels", [1, 3])
def test_jitter_moves_content_by_at_most_n_pixels(pixels):
    x = dots(200)
    out = augment.jitter(x, pixels, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # nothing falls off
    where = (out[:, 0] == 1).nonzero()[:, 1:] - 8  # (dy, dx) of each image's dot
    assert len(where) == 200
    assert where.abs().max() == pixels  # the extreme shift is reached, never exceeded
    shifts = {tuple(s) for s in where.tolist()}
    assert len(shifts) == (2 * pixels + 1) ** 2  # every offset occurs in 200 draws
    again = augment.jitter(x, pixels, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_jitter_keeps_uint8_batches():
    x = (dots(4) * 255).to(torch.uint8)
    out = augment.jitter(x, 2, torch.Generator().manual_seed(1))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert int(out.sum()) == int(x.sum())


def test_hflip_flips_about_half_and_only_mirrors():
    torch.manual_seed(0)
    x = torch.rand(1000, 1, 5, 7)
    out = augment.hflip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 400 <= int(mirrored.sum()) <= 600


def test_epoch_order_is_a_permutation():
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 1, 0])
    order = augment.epoch_order(labels, False, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(len(labels)))


def test_oversampling_draws_every_class_equally_often():
    labels = torch.tensor([0] * 40 + [1] * 7 + [3] * 3)  # class 2 is absent
    order = augment.epoch_order(labels, True, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[order], minlength=4)
    assert counts.tolist() == [40, 40, 0, 40]
    for c in (1, 3):  # the small classes use all their images, as evenly as possible
        used = torch.bincount(order[labels[order] == c], minlength=50)
        members = (labels == c).nonzero().flatten()
        assert (used[members] > 0).all()
        assert int(used[members].max()) - int(used[members].min()) <= 1
