"""The 2.5D slice dataset (selection, stacking, caches), the slice-stack inferer, and learnability of the data."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet

from unet_monai.data import (
    InvalidCaseError,
    LiTSSliceDataset,
    generate_dataset,
    lits_2d_augmentation,
    lits_2d_preprocessing,
    volume_to_slice_stack,
)
from unet_monai.data.slices import CACHE_VERSION

SIZE = (32, 32)


@pytest.fixture(scope="module")
def datalist(tmp_path_factory):
    """Three small cases, RAS / LPS / RAS."""
    return generate_dataset(tmp_path_factory.mktemp("slices"), num_cases=3, seed=2, size=(48, 64), slices=(16, 24))


@pytest.fixture(scope="module")
def memory_ds(datalist):
    return LiTSSliceDataset(datalist, num_slices=3, spatial_size=SIZE, neg_fraction=0.25)


@pytest.fixture(scope="module")
def disk_cache(datalist, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    ds = LiTSSliceDataset(datalist, num_slices=3, spatial_size=SIZE, neg_fraction=0.25, cache_dir=cache)
    return cache, ds


def test_selects_liver_slices_plus_a_fraction_of_the_others(memory_ds):
    shapes = memory_ds.volume_shapes()
    assert list(shapes) == ["volume-0", "volume-1", "volume-2"] == memory_ds.cases
    expected = 0
    for v in memory_ds._volumes:
        bg = v.shape[0] - v.foreground.size
        expected += v.foreground.size + round(0.25 * bg)
    assert len(memory_ds) == expected
    labels = [memory_ds[i]["label"] for i in range(len(memory_ds))]
    with_liver = sum(bool((lbl > 0).any()) for lbl in labels)
    assert with_liver == memory_ds.num_foreground_slices and with_liver < len(memory_ds)


@pytest.mark.parametrize("neg_fraction", [0.0, 1.0])
def test_neg_fraction_bounds(datalist, neg_fraction):
    ds = LiTSSliceDataset(datalist[:1], num_slices=1, spatial_size=SIZE, neg_fraction=neg_fraction)
    depth = ds.volume_shapes()["volume-0"][0]
    assert len(ds) == (depth if neg_fraction == 1.0 else ds.num_foreground_slices)


def test_set_epoch_redraws_negatives_with_the_same_length(memory_ds):
    first = memory_ds._index.copy()
    memory_ds.set_epoch(1)
    second = memory_ds._index.copy()
    memory_ds.set_epoch(0)
    assert len(first) == len(second) and not np.array_equal(first, second)
    assert np.array_equal(first, memory_ds._index)  # deterministic per (seed, epoch)


@pytest.mark.parametrize("num_slices", [1, 3, 5])
@pytest.mark.parametrize("merge_tumour", [False, True])
def test_items_match_the_inference_preprocessing(datalist, num_slices, merge_tumour):
    """A training sample equals the same slice built by the inference path (preprocessing + stacking)."""
    ds = LiTSSliceDataset(datalist[1:2], num_slices=num_slices, spatial_size=SIZE, neg_fraction=1.0,
                          merge_tumour=merge_tumour, cache_dtype="float32")  # fmt: skip
    volume = lits_2d_preprocessing("val", spatial_size=SIZE, merge_tumour=merge_tumour)(datalist[1])
    stack = volume_to_slice_stack(volume["image"], num_slices)
    depth = volume["image"].shape[-1]
    assert len(ds) == depth
    for z in (0, depth // 2, depth - 1):  # borders replicate the edge slice
        item = ds[z]
        assert item["case"] == "volume-1" and item["slice"] == z
        assert item["image"].shape == (num_slices, *SIZE) and item["image"].dtype == torch.float32
        assert item["label"].shape == (1, *SIZE) and item["label"].dtype == torch.int64
        assert torch.equal(item["image"], stack[z].as_tensor())
        assert torch.equal(item["label"], volume["label"][..., z].long().as_tensor())
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    values = set(torch.unique(torch.stack([ds[i]["label"] for i in range(len(ds))])).tolist())
    assert values <= ({0, 1} if merge_tumour else {0, 1, 2}) and 1 in values


def test_float16_cache_is_close_to_float32(datalist):
    a = LiTSSliceDataset(datalist[:1], spatial_size=SIZE, neg_fraction=1.0)
    b = LiTSSliceDataset(datalist[:1], spatial_size=SIZE, neg_fraction=1.0, cache_dtype="float32")
    assert (a[5]["image"] - b[5]["image"]).abs().max() <= 2.5e-4


def test_disk_cache_is_written_atomically_and_equals_memory(disk_cache, memory_ds):
    cache, ds = disk_cache
    names = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert len(names) == 9 and sum(n.endswith(".image.npy") for n in names) == 3
    assert not list(cache.glob(".*.tmp*"))
    assert len(ds) == len(memory_ds)
    for i in (0, len(ds) // 2, len(ds) - 1):
        a, b = ds[i], memory_ds[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_disk_cache_is_reused_without_reading_volumes(disk_cache, datalist, monkeypatch):
    cache, ds = disk_cache

    def fail(*args, **kwargs):
        raise AssertionError("a volume was preprocessed again")

    monkeypatch.setattr(LiTSSliceDataset, "_preprocess", fail)
    again = LiTSSliceDataset(datalist, num_slices=5, spatial_size=SIZE, neg_fraction=0.25, cache_dir=cache)
    assert len(again) == len(ds) and again[0]["image"].shape == (5, *SIZE)  # num_slices is not part of the key


def test_changed_arguments_or_sources_rebuild_the_cache(disk_cache, datalist, tmp_path):
    cache, _ = disk_cache
    before = {p.name for p in cache.glob("*.json")}
    LiTSSliceDataset(datalist[:1], spatial_size=(16, 16), cache_dir=cache)
    assert len({p.name for p in cache.glob("*.json")} - before) == 1
    # a broken entry is rebuilt, not trusted
    entry = sorted(cache.glob("volume-2.*.image.npy"))[0]
    entry.write_bytes(b"broken")
    ds = LiTSSliceDataset(datalist, num_slices=3, spatial_size=SIZE, neg_fraction=0.25, cache_dir=cache)
    assert np.load(entry).dtype == np.float16 and len(ds) > 0
    assert CACHE_VERSION >= 1


def test_each_volume_is_preprocessed_once(datalist, monkeypatch, tmp_path):
    calls = []
    original = LiTSSliceDataset._preprocess

    def counting(self, record):
        calls.append(record["case"])
        return original(self, record)

    monkeypatch.setattr(LiTSSliceDataset, "_preprocess", counting)
    for cache_dir in (None, tmp_path):
        calls.clear()
        ds = LiTSSliceDataset(datalist, spatial_size=SIZE, cache_dir=cache_dir, num_workers=2)
        for i in range(len(ds)):
            ds[i]
        assert sorted(calls) == ["volume-0", "volume-1", "volume-2"]


def test_concurrent_builders_share_the_work(datalist, tmp_path, monkeypatch):
    """Two builders of one disk cache (think DDP ranks) preprocess each case once between them."""
    calls = []
    original = LiTSSliceDataset._preprocess

    def slow(self, record):
        calls.append(record["case"])
        time.sleep(0.2)
        return original(self, record)

    monkeypatch.setattr(LiTSSliceDataset, "_preprocess", slow)
    built: list[LiTSSliceDataset] = []
    workers = [
        threading.Thread(target=lambda: built.append(LiTSSliceDataset(datalist, spatial_size=SIZE, cache_dir=tmp_path)))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(built) == 2 and len(built[0]) == len(built[1])
    assert sorted(calls) == ["volume-0", "volume-1", "volume-2"]


def test_pickling_a_disk_dataset_does_not_copy_the_volumes(disk_cache, datalist):
    _cache, ds = disk_cache
    ds[0]  # opens the memory maps
    restored = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 20_000
    assert torch.equal(restored[3]["image"], ds[3]["image"])


def test_transform_and_dataloader(datalist):
    ds = LiTSSliceDataset(datalist[:2], spatial_size=SIZE, transform=lits_2d_augmentation(affine_prob=1.0))
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=True, num_workers=0)))
    assert batch["image"].shape == (4, 3, *SIZE) and batch["label"].shape == (4, 1, *SIZE)
    assert len(batch["case"]) == 4


def test_bad_case_raises_a_clear_error(datalist, tmp_path):
    record = dict(datalist[0], label=str(tmp_path / "segmentation-0.nii.gz"))
    with pytest.raises(FileNotFoundError, match="case 'volume-0': the label file"):
        LiTSSliceDataset([record], spatial_size=SIZE)
    with pytest.raises(ValueError, match="needs 'image' and 'label'"):
        LiTSSliceDataset([{"image": datalist[0]["image"]}])
    (tmp_path / "segmentation-0.nii.gz").write_bytes(b"junk")
    with pytest.raises(InvalidCaseError, match=r"case 'volume-0'.*cannot read the label header"):
        LiTSSliceDataset([record], spatial_size=SIZE)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_slices": 2}, "odd"), ({"neg_fraction": 1.5}, "neg_fraction"), ({"cache_dtype": "uint8"}, "cache_dtype")],
)
def test_argument_errors(datalist, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LiTSSliceDataset(datalist[:1], **kwargs)


# ----------------------------------------------------------------------------- learnability


def test_a_small_network_learns_the_synthetic_liver(datalist):
    """The data is learnable, not noise: a tiny 2D U-Net's loss falls clearly within 40 steps."""
    torch.manual_seed(0)
    ds = LiTSSliceDataset(datalist, num_slices=3, spatial_size=(48, 48), neg_fraction=0.3, merge_tumour=True)
    net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    loader = DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    losses: list[float] = []
    while len(losses) < 40:
        for batch in loader:
            opt.zero_grad()
            loss = loss_fn(net(batch["image"]), batch["label"])
            loss.backward()
            opt.step()
            losses.append(float(loss))
            if len(losses) == 40:
                break
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.6 * first, (first, last)
