"""UNet 3+ (Huang et al., ICASSP 2020) as a MONAI network, 2D and 3D, with deep supervision and the CGM."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch.utils.checkpoint import checkpoint

from .blocks import (
    ConvBlock,
    check_input,
    conv_unit,
    interpolate_to,
    max_pool,
    normalize_dropout,
    validate_features,
    validate_spatial_dims,
)

__all__ = ["UNet3Plus"]

_NUM_LEVELS = 5
# Under checkpointing, an upsampling branch is computed in chunks of at most this many input channels
# per output channel (1024 -> 4 x 256 and 320 -> 2 x 160 for the paper's widths), see _Branch.
_CHUNK_RATIO = 4


class _RestoreBuffers:
    """Context manager that puts a module's buffers back as they were on entry.

    Used around the re-computation of a checkpointed segment: without it every BatchNorm in the
    segment would update its running statistics twice per training step (once in the forward pass,
    once when the backward pass recomputes it), so a checkpointed model would drift away from the
    same model trained without checkpointing.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> _RestoreBuffers:
        self.saved = [(b, b.detach().clone()) for b in self.module.buffers()]
        return self

    def __exit__(self, *exc_info: object) -> None:
        with torch.no_grad():
            for buffer, value in self.saved:
                buffer.copy_(value)
        self.saved = []


def _checkpoint_contexts(module: nn.Module) -> tuple[contextlib.AbstractContextManager, _RestoreBuffers]:
    return contextlib.nullcontext(), _RestoreBuffers(module)


def _checkpointed(function: Callable[..., torch.Tensor], module: nn.Module, *args: object) -> torch.Tensor:
    """``function(*args)`` under non-reentrant activation checkpointing; ``module``'s buffers are kept."""
    return checkpoint(function, *args, use_reentrant=False, context_fn=functools.partial(_checkpoint_contexts, module))


class _Branch(nn.Module):
    """One full-scale skip branch of a UNet 3+ decoder stage: resample, then a [3x3 conv, norm, act] unit.

    The resampling is a ``factor`` x ``factor`` max-pool with stride ``factor`` (``resample="pool"``,
    ``ceil_mode``), nothing (``"none"``), or non-learned linear interpolation with
    ``align_corners=False`` to the exact size of the target map (``"up"``). The convolution comes
    AFTER the resampling, as in the paper.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        resample: str,
        factor: int,
        act: tuple | str | None,
        norm: tuple | str | None,
        dropout: float | tuple | str | None,
        bias: bool,
    ) -> None:
        super().__init__()
        self.upsample = resample == "up"
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.pool = max_pool(spatial_dims, factor) if resample == "pool" else nn.Identity()
        self.conv = conv_unit(spatial_dims, in_channels, out_channels, act=act, norm=norm, dropout=dropout, bias=bias)

    def _resample_conv(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        if self.upsample:
            x = interpolate_to(x, size, self.mode)
        else:
            x = self.pool(x)
        return self.conv(x)

    def forward(self, x: torch.Tensor, size: list[int], checkpointing: bool = False) -> torch.Tensor:
        if checkpointing and not torch.jit.is_scripting():
            if self.upsample:
                return self._checkpointed_in_chunks(x, size)
            return _checkpointed(self._resample_conv, self, x, size)
        return self._resample_conv(x, size)

    @torch.jit.unused
    def _checkpointed_in_chunks(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        """Checkpointed upsampling branch, computed over chunks of input channels.

        Upsampling acts on each channel separately and the convolution is a sum over input channels,
        so ``conv(up(x)) = bias + sum_k conv_k(up(x_k))`` for a split of the channels into chunks
        ``x_k`` (and of the kernel into ``conv_k``). Each chunk is checkpointed on its own, so the
        backward pass holds the upsampled map and its gradient for one chunk at a time instead of
        for all channels (1024 at full resolution for the bottleneck branch of ``d_1``). Only the
        convolution output and the norm/act output are stored.
        """
        conv = self.conv.conv
        conv_fn = F.conv2d if x.dim() == 4 else F.conv3d
        in_channels = x.shape[1]
        num_chunks = -(-in_channels // (_CHUNK_RATIO * conv.out_channels))
        chunk = -(-in_channels // num_chunks)

        def upsample_conv(x_k: torch.Tensor, weight_k: torch.Tensor) -> torch.Tensor:
            up = interpolate_to(x_k, size, self.mode)
            return conv_fn(up, weight_k, None, conv.stride, conv.padding, conv.dilation, conv.groups)

        y: torch.Tensor | None = None
        for x_k, weight_k in zip(x.split(chunk, dim=1), conv.weight.split(chunk, dim=1)):
            part = checkpoint(upsample_conv, x_k, weight_k, use_reentrant=False)
            y = part if y is None else y + part
        if conv.bias is not None:
            y = y + conv.bias.reshape([1, -1] + [1] * (x.dim() - 2))
        return self.conv.adn(y)


class _DecoderNode(nn.Module):
    """The decoder node at encoder level ``level`` (1..4) of UNet 3+, with the branches it owns.

    Stage ``d_level`` concatenates, shallow to deep, one ``cat_channels`` map per scale:
    ``h_1 .. h_level`` (max-pooled by ``2**(level - j)``, ``h_level`` as is), the deeper decoder
    nodes ``d_(level+1) .. d_4`` (upsampled) and ``h_5`` (upsampled), and fuses them with one
    [3x3 conv, norm, act] unit into ``5 * cat_channels`` channels.

    The branches that read an encoder map (``encoder_branches``, ``bottom_branch``) live in the
    node that consumes them; the branches that read this node's output and feed the shallower
    stages (``up_branches``, one per shallower stage, nearest first) live here, in the node that
    produces their input. That is how the reference per-block parameter counts group them.
    """

    def __init__(
        self,
        spatial_dims: int,
        level: int,
        features: tuple[int, ...],
        cat_channels: int,
        act: tuple | str | None,
        norm: tuple | str | None,
        dropout: float | tuple | str | None,
        bias: bool,
    ) -> None:
        super().__init__()
        fused = _NUM_LEVELS * cat_channels
        unit = {"act": act, "norm": norm, "dropout": dropout, "bias": bias}
        self.encoder_branches = nn.ModuleList(
            _Branch(
                spatial_dims,
                features[j - 1],
                cat_channels,
                "pool" if j < level else "none",
                2 ** (level - j),
                **unit,
            )
            for j in range(1, level + 1)
        )
        self.bottom_branch = _Branch(spatial_dims, features[-1], cat_channels, "up", 1, **unit)
        self.fuse = conv_unit(spatial_dims, fused, fused, **unit)
        self.up_branches = nn.ModuleList(
            _Branch(spatial_dims, fused, cat_channels, "up", 1, **unit) for _ in range(1, level)
        )

    def forward(
        self,
        skips: list[torch.Tensor],
        bottom: torch.Tensor,
        from_deeper: list[torch.Tensor],
        checkpointing: bool = False,
    ) -> torch.Tensor:
        """Fuse the encoder maps ``skips`` (``h_1 .. h_level``), ``bottom`` (``h_5``) and the
        already projected maps of the deeper decoder nodes ``from_deeper`` (shallow to deep)."""
        size = list(skips[-1].shape[2:])
        parts: list[torch.Tensor] = []
        for j, branch in enumerate(self.encoder_branches):
            parts.append(branch(skips[j], size, checkpointing))
        parts.extend(from_deeper)
        parts.append(self.bottom_branch(bottom, size, checkpointing))
        return self.fuse(torch.cat(parts, dim=1))


class _GlobalMaxPool(nn.Module):
    """(B, C, *spatial) -> (B, C): the maximum over all positions.

    The forward of ``AdaptiveMaxPool{2,3}d(1)`` plus ``Flatten`` (the state_dict is the same), but PyTorch
    2.11's ONNX exporter has no conversion for ``adaptive_max_pool2d``, while ``amax`` exports as ReduceMax;
    its backward is deterministic on CUDA too (tied maxima share the gradient instead of one taking it).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).amax(dim=2)


class UNet3Plus(nn.Module):
    """UNet 3+: a U-Net with full-scale skip connections and full-scale deep supervision.

    Every decoder stage ``d_i`` (``i`` = 4, 3, 2, 1, at the resolution of encoder level ``i``)
    receives all five scales: the shallower encoder maps max-pooled (``k`` x ``k``, stride ``k``),
    the same-level encoder map as is, and the deeper decoder maps and the bottleneck ``h_5``
    upsampled by non-learned bilinear (trilinear in 3D) interpolation with ``align_corners=False``.
    Each branch is turned into ``cat_channels`` channels by one [3x3 conv, norm, act] unit applied
    after the resampling; the five maps are concatenated shallow to deep and fused by one more
    [3x3 conv, norm, act] unit with ``5 * cat_channels`` channels. The encoder has five levels of two
    [3x3 conv, norm, act] units with 2x2 max-pooling in between. With the default arguments and 2D
    input this is exactly the paper's network (26,971,777 parameters for 3 input channels, 1 class).

    Any input size works, without padding or cropping: the max-pools use ``ceil_mode`` (a size ``n``
    becomes ``ceil(n / k)``, the same as repeated 2x pools), and every upsampling interpolates to the
    exact size of the map it joins, so the reference's "divisible by 16" restriction is gone. For
    sizes that are multiples of 16 the network is the paper's one.

    Heads: ``head`` (3x3 conv to ``out_channels``) on ``d_1`` is always built. With
    ``deep_supervision`` the four ``side_heads`` (3x3 convs on ``d_2``, ``d_3``, ``d_4`` and ``h_5``,
    at their native resolution) are built too and their logits upsampled (bilinear / trilinear,
    ``align_corners=False``) to the input size. With ``classification_guided`` the
    classification-guided module ``cgm`` (dropout, 1x1 conv to 2 channels, global max-pool) on
    ``h_5`` predicts whether the organ is present in the image; logits index 0 is "absent", index 1
    "present". The side heads and the CGM are built only when asked for, so that the parameter counts
    are the paper's; a checkpoint trained with them loads into a network without them with
    ``load_state_dict(..., strict=False)``.

    Forward contract:

    - eval mode, or training with ``deep_supervision`` and ``classification_guided`` both off: one
      tensor of logits ``(B, out_channels, *input_spatial)``, so MONAI inferers and evaluators work
      unchanged. The network never applies sigmoid or softmax.
    - training with ``deep_supervision`` (CGM off): a list of five full-resolution logits tensors,
      the FINAL output first: ``[d_1, d_2, d_3, d_4, h_5]`` heads, matching MONAI's
      ``DeepSupervisionLoss`` (which gives position 0 the largest weight) and ``SegResNetDS``.
    - training with ``classification_guided``: a dict ``{"seg": seg, "cls": cls}`` with ``seg`` the
      tensor or list above, NOT gated by the classifier, and ``cls`` the ``(B, 2)`` classification
      logits, for a BCE term against ``[1 - present, present]`` computed from the label.
    - eval mode with ``classification_guided``: one tensor. The decision per sample is the argmax
      of the classification logits; a "present" sample gets exactly the ungated logits, an "absent"
      sample gets background logits: ``-absent_logit`` everywhere for one channel (sigmoid), and
      ``+absent_logit`` in channel 0, ``-absent_logit`` in the others for several channels (softmax).
      The attribute ``absent_logit`` defaults to 10: a sigmoid or softmax background probability
      above 0.9999, yet finite and moderate, so that sliding-window inferers can average overlapping
      windows and float16 holds it.

    Defects of the reference implementations that are fixed here: the CGM multiplied its hard 0/1
    decision into the logits before the sigmoid, so "absent" images came out as 0.5 maps instead of
    background, and no gradient reached the classifier (whose logits were never returned, so the
    paper's BCE term could not be computed); the authors' PyTorch CGM forward crashed; the Keras CGM
    only worked for one class; the model applied sigmoid inside ``forward``. Here the classifier's
    logits are returned in training and reach the loss, the segmentation is not gated in training,
    "absent" gives background at inference, and any number of classes works (softmax when
    ``out_channels > 1``).

    ``use_checkpointing`` trades compute for memory in training. Every full-scale skip branch of the
    decoder runs under non-reentrant ``torch.utils.checkpoint``: the pooling branches as a whole, the
    upsampling branches (the costly ones: the bottleneck upsampled to full resolution alone holds
    ``features[-1]`` channels at the input size) in chunks of input channels, each chunk
    (upsample + its share of the convolution) checkpointed on its own. Their intermediate maps are
    recomputed in the backward pass instead of stored; the fusion units are not checkpointed
    (little memory for their cost). Measured on CPU (2D, batch 2, one channel, one training step,
    peak RSS): 864 -> 437 MiB (-49%) at 1.06x the step time with the paper's widths at 128 x 128,
    1703 -> 834 MiB (-51%) at 1.16x with widths (32, ..., 512) at 256 x 256. Outputs and
    gradients are unchanged (up to float rounding of the chunked sums), and the BatchNorm running
    statistics are updated once per step, as without checkpointing. Ignored in eval mode and in
    TorchScript.

    Reference:
        Huang et al., "UNet 3+: A Full-Scale Connected UNet for Medical Image Segmentation",
        ICASSP 2020, https://arxiv.org/abs/2004.08790.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3. Defaults to 3.
        in_channels: number of input channels. Defaults to 1.
        out_channels: number of output channels (classes). Defaults to 2.
        features: widths of the five encoder levels. Defaults to the paper's
            ``(64, 128, 256, 512, 1024)``.
        cat_channels: channels of every full-scale skip branch; decoder stages have
            ``5 * cat_channels``. ``None`` (default) means ``features[0]``, the paper's 64.
        deep_supervision: build the four side heads and return the five outputs in training.
            Defaults to False.
        classification_guided: build the classification-guided module (CGM) on ``h_5``.
            Defaults to False.
        act: activation, a MONAI factory name or ``(name, {args})``. Defaults to
            ``("relu", {"inplace": True})``.
        norm: normalization, a MONAI factory name or ``(name, {args})``. Defaults to ``"batch"``.
        bias: whether the convolutions of the encoder and decoder units have a bias. Defaults to
            True (the heads and the CGM always have one).
        dropout: dropout after every encoder and decoder unit, a rate or a MONAI factory form.
            Defaults to 0.0 (none, as in the paper).
        cgm_dropout: dropout rate in the CGM, in [0, 1). Defaults to the paper's 0.5.
        use_checkpointing: activation checkpointing of the decoder in training (see above).
            Defaults to False.

    Returns:
        See the forward contract above: a tensor, a list of five tensors, or a dict with keys
        ``"seg"`` and ``"cls"``.

    Raises:
        ValueError: when ``spatial_dims`` is not 2 or 3, ``features`` is not five positive integers,
            ``cat_channels`` is not None or a positive integer, ``dropout`` or ``cgm_dropout`` is not a
            rate in [0, 1); in ``forward``, when the input has the wrong number of dimensions or
            channels.

    Example::

        >>> net = UNet3Plus(spatial_dims=2, in_channels=3, out_channels=1, deep_supervision=True,
        ...                 classification_guided=True)
        >>> out = net(torch.randn(2, 3, 320, 320))  # training: {"seg": [5 x (2, 1, 320, 320)], "cls": (2, 2)}
        >>> _ = net.eval()
        >>> logits = net(torch.randn(1, 3, 320, 320))  # (1, 1, 320, 320), background if "absent"
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        features: tuple[int, ...] = (64, 128, 256, 512, 1024),
        cat_channels: int | None = None,
        deep_supervision: bool = False,
        classification_guided: bool = False,
        act: tuple | str = ("relu", {"inplace": True}),
        norm: tuple | str = "batch",
        bias: bool = True,
        dropout: float | tuple = 0.0,
        cgm_dropout: float = 0.5,
        use_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        spatial_dims = validate_spatial_dims(spatial_dims)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        features = validate_features(features, _NUM_LEVELS)
        if cat_channels is None:
            cat_channels = features[0]
        elif isinstance(cat_channels, bool) or not isinstance(cat_channels, int) or cat_channels < 1:
            raise ValueError(f"cat_channels must be None (= features[0]) or a positive integer, got {cat_channels!r}.")
        if (
            isinstance(cgm_dropout, bool)
            or not isinstance(cgm_dropout, (int, float))
            or not 0.0 <= float(cgm_dropout) < 1.0
        ):
            raise ValueError(f"cgm_dropout must be a rate in [0, 1), got {cgm_dropout!r}.")
        dropout = normalize_dropout(dropout)

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.cat_channels = cat_channels
        self.deep_supervision = bool(deep_supervision)
        self.classification_guided = bool(classification_guided)
        self.use_checkpointing = bool(use_checkpointing)
        self.absent_logit = 10.0
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        unit = {"act": act, "norm": norm, "dropout": dropout, "bias": bias}
        fused = _NUM_LEVELS * cat_channels

        self.encoder = nn.ModuleList(
            ConvBlock(spatial_dims, in_channels if i == 0 else features[i - 1], features[i], **unit)
            for i in range(_NUM_LEVELS)
        )
        self.pool = max_pool(spatial_dims, 2)
        # decoder[0] is d_4, ..., decoder[3] is d_1 (execution order)
        self.decoder = nn.ModuleList(
            _DecoderNode(spatial_dims, level, features, cat_channels, **unit) for level in range(_NUM_LEVELS - 1, 0, -1)
        )

        conv = Conv[Conv.CONV, spatial_dims]
        self.head = conv(fused, out_channels, kernel_size=3, padding=1)
        # side heads on d_2, d_3, d_4 (fused channels) and h_5 (features[-1] channels)
        self.side_heads = nn.ModuleList()
        if self.deep_supervision:
            for channels in (fused, fused, fused, features[-1]):
                self.side_heads.append(conv(channels, out_channels, kernel_size=3, padding=1))
        self.cgm: nn.Module | None = None
        if self.classification_guided:
            self.cgm = nn.Sequential(
                nn.Dropout(float(cgm_dropout)) if cgm_dropout > 0 else nn.Identity(),
                conv(features[-1], 2, kernel_size=1),
                _GlobalMaxPool(),
            )

    def _encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.encoder):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        return skips

    def _decode(self, skips: list[torch.Tensor], checkpointing: bool) -> list[torch.Tensor]:
        """Decoder nodes ``[d_1, d_2, d_3, d_4]`` from the encoder maps ``[h_1, ..., h_5]``."""
        sizes = [list(s.shape[2:]) for s in skips]
        # from_deeper[k]: projected maps of the deeper decoder nodes for decoder[k], shallow to deep
        num_nodes = len(self.decoder)
        from_deeper: list[list[torch.Tensor]] = [[] for _ in range(num_nodes)]
        nodes: list[torch.Tensor] = []
        for k, node in enumerate(self.decoder):
            level = num_nodes - k
            d = node(skips[:level], skips[-1], from_deeper[k], checkpointing)
            # d_level feeds every shallower stage, nearest (level - 1) first
            for t, branch in enumerate(node.up_branches):
                from_deeper[k + 1 + t].insert(0, branch(d, sizes[level - 2 - t], checkpointing))
            nodes.insert(0, d)
        return nodes

    def _gate(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Replace the logits of the samples classified "organ absent" by finite background logits."""
        present = (torch.argmax(cls, dim=1) == 1).reshape([-1] + [1] * (logits.dim() - 1))
        background = torch.full_like(logits[:1], -self.absent_logit)
        if self.out_channels > 1:
            background[:, 0] = self.absent_logit
        return torch.where(present, logits, background)

    @torch.jit.export
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Classification logits ``(B, 2)`` of the CGM ("absent", "present") for ``x``, encoder only.

        Raises:
            RuntimeError: when the network was built with ``classification_guided=False``.
        """
        check_input(x, self.spatial_dims, self.in_channels, "UNet3Plus")
        cgm = self.cgm
        if cgm is None:
            raise RuntimeError("UNet3Plus.classify needs classification_guided=True.")
        return cgm(self._encode(x)[-1])

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor | list[torch.Tensor] | dict[str, torch.Tensor | list[torch.Tensor]]:
        check_input(x, self.spatial_dims, self.in_channels, "UNet3Plus")
        skips = self._encode(x)
        nodes = self._decode(skips, self.use_checkpointing and self.training)
        logits = self.head(nodes[0])

        cls: torch.Tensor | None = None
        cgm = self.cgm
        if cgm is not None:
            cls = cgm(skips[-1])

        if not self.training:
            if cls is not None:
                return self._gate(logits, cls)
            return logits

        seg: torch.Tensor | list[torch.Tensor] = logits
        if self.deep_supervision:
            size = list(x.shape[2:])
            outputs = [logits]
            sources = nodes[1:] + skips[-1:]
            for i, side_head in enumerate(self.side_heads):
                outputs.append(interpolate_to(side_head(sources[i]), size, self.mode))
            seg = outputs
        if cls is not None:
            return {"seg": seg, "cls": cls}
        return seg
