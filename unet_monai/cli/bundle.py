"""Loading a MONAI bundle for prediction: its own config, metadata and weights, nothing copied.

``<bundle>/configs/inference.json`` is parsed with ``monai.bundle.ConfigParser`` (``bundle_root`` set
to the bundle folder, ``device`` to the chosen device, user overrides applied), and its
``network``, ``preprocessing`` and ``inferer`` are used as they are. Weights come from
``<bundle>/models/model.pt`` through :func:`unet_monai.utils.load_state_dict` (``weights_only=True``:
a file holding pickled code is refused), or from ``models/model.ts`` (TorchScript) when only that
exists. Whether the bundle is 2D (2.5D slices) or 3D comes from its metadata: the length of
``network_data_format.inputs.image.spatial_shape``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unet_monai.utils.flags import as_bool

__all__ = ["BundleError", "FlipTTA", "LoadedBundle", "load_bundle", "parse_overrides", "resolve_device"]

logger = logging.getLogger(__name__)

_CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")


class BundleError(ValueError):
    """The bundle cannot be used: missing config, metadata or weights, a bad override, weights that do not fit."""


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["features=[4,8,8,16,16]", "inferer#overlap=0.25"]`` -> ``{"features": [4, 8, 8, 16, 16], ...}``.

    The value is read as JSON (numbers, lists, ``true``/``false``/``null``, quoted strings); a value that
    is not valid JSON is taken as a plain string (``mode=gaussian``). Nested ids use ``#`` as in MONAI.

    Raises:
        BundleError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BundleError(f"--override expects KEY=VALUE (VALUE in JSON), got {item!r}.")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; otherwise ``torch.device(name)``, checked.

    Raises:
        BundleError: an unknown device name, or CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise BundleError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N).") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BundleError(f"device {name!r} asked for, but CUDA is not available on this machine.")
    return device


class FlipTTA(torch.nn.Module):
    """Flip test-time augmentation: the mean of the softmax over in-plane flips of the input.

    Runs ``network`` on the input as is, flipped along the first spatial axis, the second, and both,
    flips each softmax back and averages them. It returns the *logarithm* of the mean probabilities,
    so that the softmax the post-processing applies gives back exactly that mean: the wrapper drops
    into any inferer in place of the network. In-plane means the first two spatial axes, which is the
    axial plane for 2D slices and for RAS-oriented 3D volumes.

    Args:
        network: a segmentation network returning logits (or a list, the first element being used).
        dims: the tensor dimensions to flip; default ``(2, 3)`` (the first two spatial axes).

    Example::

        probs = torch.softmax(FlipTTA(net)(x), 1)  # = mean of the four flipped softmaxes
    """

    def __init__(self, network: torch.nn.Module, dims: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        self.network = network
        a, b = (int(d) for d in dims)
        self.flips: list[tuple[int, ...]] = [(), (a,), (b,), (a, b)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for dims in self.flips:
            out = self.network(torch.flip(x, dims) if dims else x)
            if isinstance(out, (list, tuple)):
                out = out[0]
            prob = torch.softmax(out.float(), dim=1)
            prob = torch.flip(prob, dims) if dims else prob
            total = prob if total is None else total + prob
        assert total is not None
        mean = total / len(self.flips)
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))


@dataclass
class LoadedBundle:
    """A bundle ready for prediction (see :func:`load_bundle`).

    Attributes:
        root: the bundle folder.
        name: the bundle's name from its metadata (the folder name without one).
        spatial_dims: 2 for 2D (2.5D slice) bundles, 3 for 3D bundles.
        network: the network in eval mode on ``device``, weights loaded.
        preprocessing: the bundle's ``preprocessing`` Compose.
        inferer: the bundle's ``inferer``.
        device: where the network runs.
        amp: autocast (CUDA only, as the bundle's evaluator does).
        class_names: output channel names, from the metadata (``background``, ``liver``, ``tumour``).
        weights: the weights file loaded.
        parser: the ``ConfigParser``, for anything else.
    """

    root: Path
    name: str
    spatial_dims: int
    network: torch.nn.Module
    preprocessing: Any
    inferer: Any
    device: torch.device
    amp: bool
    class_names: list[str]
    weights: Path
    parser: Any = field(repr=False, default=None)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _metadata(root: Path) -> dict[str, Any]:
    path = root / "configs" / "metadata.json"
    if not path.is_file():
        raise BundleError(f"bundle {root}: configs/metadata.json not found (is this a MONAI bundle folder?).")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"bundle {root}: cannot read configs/metadata.json ({e}).") from e
    return meta


def _spatial_dims(root: Path, meta: dict[str, Any]) -> int:
    try:
        shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    except (KeyError, TypeError) as e:
        raise BundleError(
            f"bundle {root}: metadata.json has no network_data_format.inputs.image.spatial_shape, so whether the "
            "bundle is 2D or 3D is unknown."
        ) from e
    if len(shape) not in (2, 3):
        raise BundleError(f"bundle {root}: input spatial_shape {shape} is neither 2D nor 3D.")
    return len(shape)


def _class_names(meta: dict[str, Any]) -> list[str]:
    pred = meta.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    channels = pred.get("channel_def") or {}
    if channels:
        return [str(channels[k]) for k in sorted(channels, key=int)]
    return [f"class_{i}" for i in range(int(pred.get("num_channels", 3)))]


def load_bundle(
    path: str | os.PathLike,
    device: str | torch.device = "auto",
    overrides: dict[str, Any] | None = None,
) -> LoadedBundle:
    """Parse a bundle's inference config and load its trained network.

    Args:
        path: the bundle folder (holding ``configs/`` and ``models/``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a torch device.
        overrides: config ids and values applied before parsing (e.g. ``{"features": [4, 8, 8, 16, 16]}``):
            they must match the architecture the weights were trained with.

    Returns:
        a :class:`LoadedBundle`.

    Raises:
        BundleError: not a bundle folder, no inference config, no ``models/model.pt`` (or ``model.ts``),
            a config that does not parse, or weights that do not fit the network.
    """
    from monai.bundle import ConfigParser

    from unet_monai.bundle import fold_as_configured
    from unet_monai.utils.serialization import load_state_dict

    root = Path(path).expanduser()
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist or is not a folder.")
    root = root.resolve()
    meta = _metadata(root)
    config = next((root / "configs" / n for n in _CONFIG_NAMES if (root / "configs" / n).is_file()), None)
    if config is None:
        raise BundleError(f"bundle {root}: configs/inference.json not found.")
    pt, ts = root / "models" / "model.pt", root / "models" / "model.ts"
    if not pt.is_file() and not ts.is_file():
        raise BundleError(
            f"bundle {root} has no trained weights: models/model.pt (or models/model.ts) not found; train the "
            "bundle first or copy its weights there."
        )
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        parser["bundle_root"] = str(root)
        for key, value in (overrides or {}).items():
            parser[key] = value
        parser["device"] = f"$torch.device({str(dev)!r})"
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise BundleError(f"bundle {root}: cannot apply the overrides {overrides} ({type(e).__name__}: {e}).") from e
    spatial_dims = _spatial_dims(root, meta)
    try:
        preprocessing = parser.get_parsed_content("preprocessing")
        inferer = parser.get_parsed_content("inferer")
        amp = as_bool(parser.get_parsed_content("amp"), "amp") if "amp" in parser else False
        if pt.is_file():
            network = parser.get_parsed_content("network" if "network" in parser else "network_def")
    except Exception as e:
        cause = e.__cause__ or e
        raise BundleError(f"bundle {root}: {config.name} does not parse ({type(cause).__name__}: {cause}).") from e
    if pt.is_file():
        network = network.to(dev)
        try:
            load_state_dict(network, pt)
        except (ValueError, FileNotFoundError) as e:
            raise BundleError(f"bundle {root}: {e} (pass the --override values the weights were trained with).") from e
        weights = pt
        fold_as_configured(parser, network)
    else:
        try:
            network = torch.jit.load(str(ts), map_location=dev)
        except (RuntimeError, ValueError) as e:
            raise BundleError(f"bundle {root}: cannot load models/model.ts ({e}).") from e
        weights = ts
        logger.info("no models/model.pt in %s: using the TorchScript models/model.ts", root)
    network.eval()
    return LoadedBundle(
        root=root,
        name=str(meta.get("name") or root.name),
        spatial_dims=spatial_dims,
        network=network,
        preprocessing=preprocessing,
        inferer=inferer,
        device=dev,
        amp=amp and dev.type == "cuda",
        class_names=_class_names(meta),
        weights=weights,
        parser=parser,
    )
