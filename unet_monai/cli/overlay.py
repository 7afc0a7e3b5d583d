"""PNG previews of segmentations: axial CT slices with the predicted (and reference) labels drawn on top.

Slices are shown in the radiological convention: RAS-oriented arrays, patient's anterior at the top
and patient's right on the viewer's left, with the in-plane pixel aspect ratio of the voxel spacing.
Figures are drawn with matplotlib's Agg canvas (no display, no global pyplot state) and written
through :func:`unet_monai.utils.io.atomic_path`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet_monai.utils.io import atomic_path

__all__ = ["Panel", "draw_panels", "figure_png", "pick_slices", "render_overlay", "save_figure"]

#: fill colours of the predicted classes (1 liver, 2 tumour) and line colours of the reference
PRED_COLOURS = {1: (0.17, 0.75, 0.17), 2: (0.9, 0.1, 0.1)}
REF_COLOURS = {1: "cyan", 2: "yellow"}


@dataclass
class Panel:
    """One axial slice to draw.

    Attributes:
        image: the CT slice (HU), a 2D RAS-oriented array ``(X, Y)``.
        prediction: labels of the same shape drawn as filled colours, or ``None``.
        reference: reference labels drawn as contour lines, or ``None``.
        title: the panel's title.
        aspect: physical height / width of a displayed pixel (``spacing_y / spacing_x``).
    """

    image: np.ndarray
    prediction: np.ndarray | None = None
    reference: np.ndarray | None = None
    title: str = ""
    aspect: float = 1.0


def pick_slices(labels: np.ndarray, max_slices: int = 4) -> list[int]:
    """Axial slices worth showing for a RAS label volume ``(X, Y, Z)``.

    The slice with the largest liver area (labels 1 and 2), the one with the largest tumour area
    (label 2), and slices at a quarter and three quarters of the liver's extent; without any
    foreground, slices at a quarter, half and three quarters of the volume. Sorted, unique.
    """
    depth = labels.shape[2]
    liver = (labels > 0).sum(axis=(0, 1))
    tumour = (labels == 2).sum(axis=(0, 1))
    if not liver.any():
        picks = [depth // 4, depth // 2, (3 * depth) // 4]
    else:
        z = np.flatnonzero(liver)
        picks = [int(np.argmax(liver))]
        if tumour.any():
            picks.append(int(np.argmax(tumour)))
        lo, hi = int(z[0]), int(z[-1])
        picks += [lo + (hi - lo) // 4, lo + (3 * (hi - lo)) // 4]
    unique = sorted(dict.fromkeys(min(max(p, 0), depth - 1) for p in picks))
    return unique[:max_slices]


def _display(array: np.ndarray) -> np.ndarray:
    """RAS slice ``(X, Y)`` -> image rows/columns: anterior up, patient's right on the left."""
    return np.asarray(array).T[::-1, ::-1]


def draw_panels(
    panels: Sequence[Panel],
    title: str = "",
    window: Sequence[float] = (-200.0, 250.0),
    panel_size: float = 3.2,
    class_names: Sequence[str] = ("background", "liver", "tumour"),
) -> Any:
    """A matplotlib ``Figure`` with one column per panel.

    Args:
        panels: the slices.
        title: the figure title.
        window: HU display window (low, high).
        panel_size: inches per panel.
        class_names: names of the label values, for the legend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n = max(len(panels), 1)
    fig = Figure(figsize=(panel_size * n, panel_size + 0.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        ax.imshow(_display(panel.image), cmap="gray", vmin=window[0], vmax=window[1], aspect=panel.aspect)
        if panel.prediction is not None:
            pred = _display(panel.prediction)
            rgba = np.zeros((*pred.shape, 4), dtype=np.float32)
            for value, colour in PRED_COLOURS.items():
                rgba[pred == value] = (*colour, 0.45)
            ax.imshow(rgba, aspect=panel.aspect, interpolation="nearest")
        if panel.reference is not None:
            ref = _display(panel.reference)
            for value, colour in REF_COLOURS.items():
                mask = (ref >= value) if value == 1 else (ref == value)
                if mask.any() and not mask.all():
                    ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=0.9)
        ax.set_title(panel.title, fontsize=9)
        ax.set_axis_off()
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    handles = []
    if any(p.prediction is not None for p in panels):
        handles += [
            Patch(color=(*c, 0.6), label=f"predicted {class_names[v] if v < len(class_names) else v}")
            for v, c in PRED_COLOURS.items()
        ]
    if any(p.reference is not None for p in panels):
        handles += [
            Patch(edgecolor=c, fill=False, label=f"reference {class_names[v] if v < len(class_names) else v}")
            for v, c in REF_COLOURS.items()
        ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07 if handles else 0, 1, 0.95 if title else 1))
    return fig


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """The PNG bytes of a figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a figure as PNG through a temporary file renamed into place."""
    from unet_monai.cli.io import readable_mode

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
        readable_mode(tmp)
    return Path(path)


def render_overlay(
    path: str | os.PathLike,
    image_slices: Sequence[np.ndarray],
    prediction_slices: Sequence[np.ndarray],
    slice_indices: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    title: str = "",
    window: Sequence[float] = (-200.0, 250.0),
    class_names: Sequence[str] = ("background", "liver", "tumour"),
) -> Path:
    """Write ``<case>_overlay.png``: the given RAS axial slices with the predicted labels filled in colour."""
    aspect = float(spacing[1]) / float(spacing[0])
    panels = [
        Panel(image=img, prediction=pred, title=f"axial slice {z}", aspect=aspect)
        for img, pred, z in zip(image_slices, prediction_slices, slice_indices)
    ]
    fig = draw_panels(panels, title=title, window=window, class_names=class_names)
    return save_figure(fig, path)
