"""MONAI Label inference task for the LiTS bundles: a 3D study in, a 3D label on the study's grid out."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from monailabel.tasks.infer.bundle import BundleInferTask

__all__ = ["TRAINING_CHECKPOINT", "LiverBundleInferTask", "has_weights"]

logger = logging.getLogger(__name__)

#: the full training checkpoint of the bundles' ``TrainingCheckpointer`` (network, optimizer, epoch):
#: not loadable as served weights
TRAINING_CHECKPOINT = "checkpoint.pt"


def has_weights(bundle: str | os.PathLike) -> bool:
    """Whether ``bundle/models`` holds weights MONAI Label can serve (``model.pt`` or ``model.ts``)."""
    models = Path(bundle) / "models"
    return (models / "model.pt").is_file() or (models / "model.ts").is_file()


class LiverBundleInferTask(BundleInferTask):
    """Serve one of the project's LiTS bundles (UNet++ / UNet 3+, 2D or 3D) for MONAI Label inference.

    MONAI Label's ``BundleInferTask`` runs the bundle's ``inference.json`` (``preprocessing`` with its
    ``LoadImaged`` replaced, ``inferer``, ``postprocessing`` without ``SaveImaged``) on the study the
    client asks for, and takes the labels from the output ``channel_def`` of ``metadata.json``
    (``liver`` 1, ``tumour`` 2; background dropped). This subclass adapts it to these bundles:

    - ``dimension`` is 3 for every bundle. MONAI Label derives it from the input ``spatial_shape`` of
      the metadata, which has two entries for the 2D bundles; but their inferer,
      :class:`~unet_monai.inferers.SliceStackInferer`, applies the 2D network slice by slice (with its
      neighbour slices as channels) to the whole preprocessed volume, and ``Invertd`` maps the
      prediction back onto the study: the task takes a 3D study and returns a 3D label with the
      study's shape and affine, which is what ``dimension`` tells a client. The network's own
      dimension is kept in ``network_dimension``. The 3D bundles run a sliding window.
    - weights are loaded strictly: ``models/model.pt`` is a plain ``state_dict`` of ``network_def``,
      and MONAI Label's default non-strict load would serve a partly random network without an error.
    - ``models/checkpoint.pt`` (the training checkpoint) is not offered as a model file to load.
    - labels are written as uint8 unless the request asks for another ``result_dtype``.
    - the pre-transforms run without MONAI Label's ``image_path`` entry, which MONAI 1.6's ``Spacingd``
      (3D bundles) would take for a meta-data dict and fail on.

    ``CheckCaseFilesd`` stays in the pre-transforms: MONAI Label passes the study as a file path (or
    a DICOM folder, or an array), and the transform checks file headers and leaves folders and arrays
    to the reader.

    Args:
        path: the bundle folder, ``<app>/model/<bundle name>``.
        conf: the app's ``--conf`` settings (``preload`` is read here).
        kwargs: passed on to ``BundleInferTask`` (``load_strict`` defaults to ``True``).

    Example::

        task = LiverBundleInferTask("app/model/liver_ct_unetplusplus_2d_segmentation", conf={})
        label_file, params = task({"image": "studies/volume-0.nii.gz", "device": "cpu"})
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, **kwargs)
        self.network_dimension: int | None = None
        if not self.valid:  # no inference config, or no weights yet (see has_weights)
            return
        self.network_dimension = self.dimension
        self.dimension = 3
        if self.network_dimension == 2:
            note = "The 2D network runs slice by slice over the whole study; the label is 3D."
            self.description = f"{self.description} {note}" if self.description else note
        files = self._config.get("model_filename")
        if isinstance(files, list):
            self._config["model_filename"] = [f for f in files if f != TRAINING_CHECKPOINT]

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        """Run the pre-transforms with MONAI Label's ``image_path`` entry set aside.

        MONAI 1.6's ``Spacingd`` (in the 3D bundles' preprocessing) updates every ``image_*`` entry of
        the data as a meta-data dict, and fails on the path string MONAI Label keeps in ``image_path``.
        """
        image_path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if image_path is not None:
            data["image_path"] = image_path
        return data

    def _get_network(self, device: str, data: dict[str, Any] | None) -> Any:
        """The network for ``device``, reloaded by MONAI Label when the weights file changed; logs each load."""
        cached = self._networks.get(device)
        network = super()._get_network(device, data)
        if self._networks.get(device) is not cached:
            path = Path(self.get_path())
            logger.info("serving weights %s (st_mtime_ns %d) on %s", path, path.stat().st_mtime_ns, device)
        return network

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        """Write the label through MONAI Label's writer, as uint8 unless ``dtype`` or the request says otherwise."""
        dtype = dtype if dtype is not None else data.get("result_dtype") or np.uint8
        return super().writer(data, extension=extension, dtype=dtype)
