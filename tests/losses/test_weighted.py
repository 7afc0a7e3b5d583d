"""WeightedLoss: per-voxel class weights (the seed's intended {0: 1, 1: 50, 2: 70}), wrapped losses, frequencies."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss
from torch.nn.modules.loss import _Loss

from unet_monai.losses import WeightedLoss, compute_class_weights

SEED_WEIGHTS = {0: 1.0, 1: 50.0, 2: 70.0}
SPATIAL = {2: (6, 7), 3: (4, 5, 6)}


class _Ones(_Loss):
    """A voxel-wise "loss" of 1 everywhere: the weighted result is the weight map itself."""

    def __init__(self) -> None:
        super().__init__(reduction="none")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.ones(input.shape[0], *input.shape[2:])


def _label(dims: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (batch, 1, *SPATIAL[dims]), generator=g)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("weights", [SEED_WEIGHTS, [1.0, 50.0, 70.0]])
def test_seed_weights_are_applied_by_class_index(dims, weights):
    """The seed meant class 0 -> 1, 1 -> 50, 2 -> 70; by a bug it used the dict keys 1, 2, 3."""
    label = _label(dims)
    logits = torch.randn(2, 3, *SPATIAL[dims])
    weight_map = WeightedLoss(_Ones(), weights, reduction="none")(logits, label)
    expected = torch.zeros(label[:, 0].shape)
    for c, w in SEED_WEIGHTS.items():
        expected[label[:, 0] == c] = w
    assert torch.equal(weight_map, expected)
    assert {float(v) for v in weight_map.unique()} == {1.0, 50.0, 70.0}
    seed_bug = (label[:, 0] + 1).float()  # iterating the dict's keys gave class c the weight c + 1
    assert not torch.equal(weight_map, seed_bug)
    assert torch.equal(WeightedLoss(_Ones(), weights).weight_map(logits, label), expected)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("target_form", ["label_map", "onehot", "index"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_weighted_by_hand(dims, target_form, reduction):
    label = _label(dims)
    logits = torch.randn(2, 3, *SPATIAL[dims], generator=torch.Generator().manual_seed(1))
    target = {
        "label_map": label.float(),
        "onehot": F.one_hot(label[:, 0], 3).movedim(-1, 1).float(),
        "index": label[:, 0],
    }[target_form]
    loss = WeightedLoss(torch.nn.CrossEntropyLoss(reduction="none"), SEED_WEIGHTS, reduction=reduction)
    value = loss(logits, target)
    ce = -torch.log_softmax(logits, 1).gather(1, label).squeeze(1)
    w = torch.tensor([1.0, 50.0, 70.0])[label[:, 0]]
    expected = {"mean": (w * ce).mean(), "sum": (w * ce).sum(), "none": w * ce}[reduction]
    torch.testing.assert_close(value, expected)


def test_wrapped_monai_focal_loss_keeps_its_channel_axis():
    label = _label(2)
    logits = torch.randn(2, 3, *SPATIAL[2])
    focal = FocalLoss(to_onehot_y=True, use_softmax=True, reduction="none")
    loss = WeightedLoss(focal, SEED_WEIGHTS, reduction="none")
    assert loss.target_as_index is False  # MONAI losses get the target unchanged
    value = loss(logits, label)
    w = torch.tensor([1.0, 50.0, 70.0])[label[:, 0]]
    torch.testing.assert_close(value, focal(logits, label) * w[:, None])


def test_dict_missing_classes_weigh_one_and_keys_may_be_strings():
    loss = WeightedLoss(_Ones(), {"2": 4.0, 0: 0.5})
    assert loss.class_weights.tolist() == [0.5, 1.0, 4.0]
    assert "class_weights" in dict(loss.named_buffers())
    assert loss.to(torch.float64).class_weights.dtype == torch.float64  # follows .to() like any buffer


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_with_the_loss_left_on_the_cpu():
    """A bundle never moves its loss to the device: the CPU weights must meet CUDA labels (found on an H100)."""
    label, logits = _label(3), torch.randn(2, 3, *SPATIAL[3])
    loss = WeightedLoss(torch.nn.CrossEntropyLoss(reduction="none"), SEED_WEIGHTS)
    with torch.autocast("cuda"):
        on_gpu = loss(logits.cuda(), label.cuda())
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    torch.testing.assert_close(on_gpu.cpu(), loss(logits, label))
    assert loss.weight_map(logits.cuda(), label.cuda()).device.type == "cuda"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    label = _label(2)
    logits = torch.randn(2, 3, *SPATIAL[2]).to(dtype)
    loss = WeightedLoss(torch.nn.CrossEntropyLoss(reduction="none"), SEED_WEIGHTS)
    value = loss(logits, label)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(logits.float(), label))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert loss(logits.float(), label).dtype == torch.float32


def test_bad_inputs_raise():
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match=r"unreduced map \(reduction='none'\); got reduction='mean'"):
        WeightedLoss(torch.nn.CrossEntropyLoss(), SEED_WEIGHTS)
    with pytest.raises(ValueError, match="class weights must be finite and >= 0"):
        WeightedLoss(ce, [1.0, -2.0])
    with pytest.raises(ValueError, match="weights dict keys must be class indices"):
        WeightedLoss(ce, {"liver": 2.0})
    with pytest.raises(TypeError, match="loss must be callable"):
        WeightedLoss("ce", [1.0])
    logits = torch.randn(2, 3, 6, 7)
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\] but weights are given for classes 0..1"):
        WeightedLoss(ce, [1.0, 2.0])(logits, _label(2))
    with pytest.raises(ValueError, match=r"got input \(2, 3, 6, 7\) and target \(2, 2, 6, 7\)"):
        WeightedLoss(ce, SEED_WEIGHTS)(logits, torch.zeros(2, 2, 6, 7))
    with pytest.raises(ValueError, match=r"voxel-wise map .* got shape \(2, 3, 1, 1\)"):
        WeightedLoss(DiceLoss(to_onehot_y=True, reduction="none"), SEED_WEIGHTS)(logits, _label(2))


# ---- weights from class frequencies ----

LABELS = [np.array([0, 0, 0, 0, 0, 0, 1, 1]), np.array([0, 0, 0, 0, 1, 1, 1, 2])]
# counts 10, 5, 1 of 16 voxels; class 2 occurs only in the second image (8 voxels)


@pytest.mark.parametrize(
    "method,expected",
    [
        ("inverse", [1.0, 2.0, 10.0]),
        ("inverse_sqrt", [1.0, math.sqrt(2.0), math.sqrt(10.0)]),
        # f = n_c / voxels of the images holding c = 10/16, 5/16, 1/8; median 5/16; w = median / f, over min
        ("median", [1.0, 2.0, 5.0]),
    ],
)
def test_class_weights_from_frequencies(method, expected):
    assert compute_class_weights(LABELS, method=method) == pytest.approx(expected)


def test_class_weights_from_tensors_files_and_datalists(tmp_path):
    paths = []
    for i, array in enumerate(LABELS):
        volume = array.reshape(2, 2, 2).astype(np.int16)
        path = tmp_path / f"label_{i}.nii.gz"
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
        paths.append(path)
    npy = tmp_path / "label_1.npy"
    np.save(npy, LABELS[1].astype(np.uint8))
    expected = compute_class_weights(LABELS, method="inverse")
    assert compute_class_weights([torch.from_numpy(a) for a in LABELS], method="inverse") == pytest.approx(expected)
    assert compute_class_weights(paths, method="inverse") == pytest.approx(expected)
    assert compute_class_weights([str(paths[0]), npy], method="inverse") == pytest.approx(expected)
    datalist = [{"image": "unused", "label": str(p)} for p in paths]
    assert compute_class_weights(datalist, method="inverse", key="label") == pytest.approx(expected)
    weights = compute_class_weights(LABELS, method="inverse")
    assert WeightedLoss(torch.nn.CrossEntropyLoss(reduction="none"), weights).class_weights.tolist() == pytest.approx(
        [1.0, 2.0, 10.0]
    )


def test_class_weights_errors():
    with pytest.raises(ValueError, match=r"class\(es\) \[3\] never occur in the 2 label map\(s\)"):
        compute_class_weights(LABELS, num_classes=4)
    with pytest.raises(ValueError, match="method must be one of"):
        compute_class_weights(LABELS, method="log")
    with pytest.raises(ValueError, match="label value 2 in item 1 is >= num_classes=2"):
        compute_class_weights(LABELS, num_classes=2)
    with pytest.raises(ValueError, match="class indices >= 0"):
        compute_class_weights([np.array([0, -1])])
    with pytest.raises(ValueError, match="no labels given"):
        compute_class_weights([])
    with pytest.raises(ValueError, match="needs key=None naming its label entry"):
        compute_class_weights([{"label": LABELS[0]}])
