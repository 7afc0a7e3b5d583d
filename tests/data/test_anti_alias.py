"""Anti-aliasing before Spacingd and Resized: sigma rule, noise reduction, untouched axes, inversion, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Resized, Spacingd

from unet_monai.data import AntiAliasedResized, SpacingAntiAliasd, anti_aliasing_sigma
from unet_monai.data.anti_alias import gaussian_smooth_replicate


def _volume(spacing, shape=(64, 64, 16), seed=0) -> MetaTensor:
    g = torch.Generator().manual_seed(seed)
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    return MetaTensor(torch.randn((1, *shape), generator=g), affine=affine)


def test_sigma_follows_monai_resize_rule():
    assert anti_aliasing_sigma((0.5, 0.5, 2.0), (2.5, 2.5, 2.5)) == pytest.approx((2.0, 2.0, 0.125))
    assert anti_aliasing_sigma((3.0, 1.0), (1.5, 1.0)) == (0.0, 0.0)  # upsampled / unchanged: no smoothing
    with pytest.raises(ValueError, match="differ in length"):
        anti_aliasing_sigma((1.0, 1.0), (2.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="positive"):
        anti_aliasing_sigma((0.0, 1.0), (2.0, 2.0))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_downsampled_noise_is_averaged_not_point_sampled(spatial_dims):
    """White noise taken from 0.5 mm to 2 mm: point sampling keeps its std, anti-aliasing divides it."""
    shape = (64, 64, 16)[:spatial_dims]
    spacing, target = (0.5,) * spatial_dims, (2.0,) * spatial_dims
    resample = Spacingd("image", pixdim=target, mode="bilinear")
    plain = resample({"image": _volume(spacing, shape)})["image"]
    smoothed_input = SpacingAntiAliasd("image", pixdim=target)({"image": _volume(spacing, shape)})["image"]
    smoothed = resample({"image": smoothed_input})["image"]
    assert plain.shape == smoothed.shape
    assert float(plain.std()) > 0.9
    assert float(smoothed.std()) < 0.5 * float(plain.std())
    assert np.allclose(smoothed.affine.numpy(), plain.affine.numpy())  # geometry untouched


def test_axes_that_are_not_downsampled_are_not_smoothed():
    """Thick slices (5 mm) going to 2.5 mm: in-plane smoothing only, slices do not mix."""
    image = MetaTensor(
        torch.arange(8, dtype=torch.float32).reshape(1, 1, 1, 8).expand(1, 32, 32, 8).clone(),
        affine=torch.diag(torch.tensor([0.5, 0.5, 5.0, 1.0], dtype=torch.float64)),
    )
    out = SpacingAntiAliasd("image", pixdim=(2.5, 2.5, 2.5))({"image": image})["image"]
    assert torch.allclose(out, image, atol=1e-4)  # constant in-plane: smoothing there changes nothing


def test_no_smoothing_when_nothing_is_downsampled():
    image = _volume((2.0, 2.0, 2.0))
    out = SpacingAntiAliasd("image", pixdim=(1.5, 1.5, 2.0))({"image": image})["image"]
    assert torch.equal(out, image)


def test_bad_arguments_and_inputs_are_named():
    with pytest.raises(ValueError, match="pixdim"):
        SpacingAntiAliasd("image", pixdim=(2.0, -1.0, 2.0))
    with pytest.raises(ValueError, match="MetaTensor"):
        SpacingAntiAliasd("image", pixdim=(2.0, 2.0, 2.0))({"image": torch.zeros(1, 4, 4, 4)})
    with pytest.raises(ValueError, match="'image' has 3 axes"):
        SpacingAntiAliasd("image", pixdim=(2.0, 2.0))({"image": _volume((1.0, 1.0, 1.0))})


def test_borders_are_replicated_so_air_stays_air():
    """MONAI's GaussianSmooth zero-pads: a -1000 HU border would drift towards 0 HU (water)."""
    image = MetaTensor(torch.full((1, 24, 24, 8), -1000.0), affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    out = SpacingAntiAliasd("image", pixdim=(2.5, 2.5, 2.5))({"image": image})["image"]
    assert torch.allclose(out, image)


@pytest.mark.parametrize("sigma, tol", [((1.5, 0.0, 2.0), 0.01), ((0.6, 0.6, 0.0), 0.1)])
def test_smoothing_matches_scipy_and_does_not_depend_on_chunks(sigma, tol):
    from scipy.ndimage import gaussian_filter

    x = torch.rand(2, 40, 30, 20, generator=torch.Generator().manual_seed(0))
    whole = gaussian_smooth_replicate(x, sigma)
    chunked = gaussian_smooth_replicate(x, sigma, chunk_elements=1000)
    assert torch.equal(whole, chunked)
    # scipy samples the Gaussian, MONAI's kernel integrates it (erf): close, not equal (less so for small sigma)
    ref = np.stack([gaussian_filter(x[c].numpy(), sigma=sigma, mode="nearest", truncate=4.0) for c in range(2)])
    assert np.abs(whole.numpy() - ref).max() < tol
    assert torch.equal(x, torch.rand(2, 40, 30, 20, generator=torch.Generator().manual_seed(0)))  # input intact
    with pytest.raises(ValueError, match="one value per spatial axis"):
        gaussian_smooth_replicate(x, sigma[:2])


def _framed(shape, frame, seed=0) -> MetaTensor:
    """Noise inside a zero frame ``frame`` voxels wide on every in-plane side (air after the HU window)."""
    x = torch.zeros((1, *shape))
    inner = tuple(slice(frame, n - frame) for n in shape[:2])
    x[(slice(None), *inner)] = torch.rand((1, *(n - 2 * frame for n in shape[:2]), *shape[2:]),
                                          generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return MetaTensor(x, affine=torch.diag(torch.tensor([0.7, 0.8, 2.5, 1.0], dtype=torch.float64)))


@pytest.mark.parametrize("spatial_size", [(40, 30, -1), (24, 64, -1)])
def test_resize_equals_monai_anti_aliased_resize(spatial_size):
    """Same voxels and affine as ``Resized(anti_aliasing=True)`` where zero padding = replicated air."""
    image = _framed((96, 80, 6), frame=24)
    ours = AntiAliasedResized("image", spatial_size=spatial_size)({"image": image.clone()})["image"]
    ref = Resized("image", spatial_size=spatial_size, mode="bilinear", anti_aliasing=True)({"image": image.clone()})
    assert ours.shape == ref["image"].shape
    assert torch.allclose(ours, ref["image"], atol=1e-4)  # float summation order (MONAI convolves)
    assert np.allclose(ours.affine.numpy(), ref["image"].affine.numpy())


def test_resize_keeps_slices_apart_and_inverts():
    """``-1`` on the slice axis: no smoothing across slices (slabs give the whole volume's slices); Invertd works."""
    image = _framed((64, 64, 8), frame=0)
    resize = Compose([AntiAliasedResized("image", spatial_size=(32, 32, -1))])
    whole = resize({"image": image.clone()})["image"]
    slab = resize({"image": MetaTensor(image[..., 2:5].clone(), affine=image.affine)})["image"]
    assert whole.shape == (1, 32, 32, 8)
    assert torch.allclose(slab, whole[..., 2:5], atol=1e-6)
    back = resize.inverse({"image": whole})["image"]
    assert back.shape == image.shape
    assert np.allclose(back.affine.numpy(), image.affine.numpy())
    assert not back.applied_operations  # the resize was recorded once and undone


def test_resize_borders_are_replicated_and_not_lazy():
    air = MetaTensor(torch.full((1, 48, 48, 2), -1000.0))
    out = AntiAliasedResized("image", spatial_size=(16, 16, -1))({"image": air})["image"]
    assert torch.allclose(out, torch.full((1, 16, 16, 2), -1000.0))  # MONAI's zero padding gives > -1000 here
    with pytest.raises(ValueError, match="cannot be lazy"):
        AntiAliasedResized("image", spatial_size=(16, 16, -1))({"image": air}, lazy=True)
