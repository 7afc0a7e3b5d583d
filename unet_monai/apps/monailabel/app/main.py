"""The MONAI Label app serving the project's LiTS bundles (UNet++ / UNet 3+, 2D / 3D) for inference and training.

MONAI Label loads this file as ``<app>/main.py`` and instantiates the ``MONAILabelApp`` subclass it
finds. The launcher (``python -m unet_monai.apps.monailabel start --studies DIR``) prepares an app folder
whose ``main.py`` imports :class:`LiverSegmentationApp` from here and whose ``model/<bundle name>``
entries are the bundles, then runs ``monailabel start_server`` on it.

Nothing here touches the network: bundles are read from ``<app>/model`` only (no model-zoo listing or
download, no SAM2 weights).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

import unet_monai
from unet_monai.apps.monailabel.app.lib.infers import LiverBundleInferTask
from unet_monai.apps.monailabel.app.lib.infers.bundle import has_weights
from unet_monai.apps.monailabel.app.lib.trainers import LiverBundleTrainTask

__all__ = ["LiverSegmentationApp", "find_bundles"]

logger = logging.getLogger(__name__)


def _is_bundle(folder: Path) -> bool:
    configs = folder / "configs"
    return (configs / "metadata.json").is_file() and any(
        (configs / name).is_file() for name in ("inference.json", "train.json")
    )


def find_bundles(model_dir: str | os.PathLike, names: str | None = None) -> dict[str, Path]:
    """The bundles to serve: ``{name: <model_dir>/<name>}``.

    Args:
        model_dir: the app's ``model`` folder, holding one bundle folder (or link to one) per model.
        names: comma-separated bundle names (``--conf models a,b``); ``None`` or empty for every bundle
            in ``model_dir`` (a folder with ``configs/metadata.json`` and an inference or train config).

    Raises:
        MONAILabelException: a named bundle is not in ``model_dir``, or ``model_dir`` holds none.
    """
    model_dir = Path(model_dir)
    available = sorted(p.name for p in model_dir.iterdir() if _is_bundle(p)) if model_dir.is_dir() else []
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else available
    missing = [n for n in wanted if n not in available]
    if missing:
        raise MONAILabelException(
            MONAILabelError.APP_INIT_ERROR,
            f"bundle(s) {missing} not found in {model_dir} (available: {available}); prepare the app folder with "
            "`python -m unet_monai.apps.monailabel start`, which links the project's bundles there.",
        )
    if not wanted:
        raise MONAILabelException(
            MONAILabelError.APP_INIT_ERROR,
            f"no bundle in {model_dir}; prepare the app folder with `python -m unet_monai.apps.monailabel start`.",
        )
    return {name: model_dir / name for name in wanted}


class LiverSegmentationApp(MONAILabelApp):
    """MONAI Label app for liver and liver-tumour segmentation in CT with the project's four LiTS bundles.

    Every bundle in ``<app_dir>/model`` (or those named by ``--conf models``) becomes one model for
    inference (:class:`~unet_monai.apps.monailabel.app.lib.infers.LiverBundleInferTask`: a 3D study in,
    a 3D label with labels ``liver`` = 1 and ``tumour`` = 2 from the bundle metadata out) and one
    trainer of the same name
    (:class:`~unet_monai.apps.monailabel.app.lib.trainers.LiverBundleTrainTask`: trains on the
    datastore's final labels and replaces ``<bundle>/models/model.pt``).

    A bundle without trained weights (``models/model.pt`` or ``models/model.ts``) is offered for
    training only; it is listed among the models, for inference, from the first ``/info/`` or
    inference request after a training run has written its weights, without restarting the server.

    Active learning strategies: ``random`` and ``first`` (the next unlabelled study).

    Args:
        app_dir: the app folder.
        studies: the studies folder of NIfTI volumes (MONAI Label's local datastore; final labels in
            ``<studies>/labels/final``), or a DICOMweb URL.
        conf: ``--conf`` settings: ``models`` (comma-separated bundle names, default all),
            ``preload`` (``true`` loads every network at start), ``skip_trainers`` (``true``: inference only).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.model_dir = Path(app_dir) / "model"
        self.bundles = find_bundles(self.model_dir, conf.get("models"))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="unet-monai: liver CT segmentation",
            description="UNet++ and UNet 3+ bundles (2D slice by slice, 3D sliding window): liver and tumour in CT",
            version=unet_monai.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.bundles.items():
            task = LiverBundleInferTask(str(path), self.conf)
            if task.is_valid():
                logger.info("+++ model %s: labels %s, network %dD", name, task.labels, task.network_dimension)
            elif not has_weights(path):
                logger.warning(
                    "+++ model %s has no trained weights (%s): offered for training only until a training run "
                    "writes them",
                    name,
                    path / "models" / "model.pt",
                )
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers: dict[str, TrainTask] = {}
        for name, path in self.bundles.items():
            task = LiverBundleTrainTask(str(path), self.conf)
            if task.is_valid():
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def _refresh_infers(self) -> None:
        """Replace the inference task of a bundle that was served without weights once training has written them."""
        for name, task in list(self._infers.items()):
            if task.is_valid() or not has_weights(self.bundles[name]):
                continue
            fresh = LiverBundleInferTask(str(self.bundles[name]), self.conf)
            if fresh.is_valid():
                logger.info("+++ model %s now has trained weights: served for inference", name)
                self._infers[name] = fresh

    def info(self) -> dict[str, Any]:
        self._refresh_infers()
        return super().info()

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """Run an inference; a model without trained weights answers HTTP 400 saying so."""
        self._refresh_infers()
        model = request.get("model")
        task = self._infers.get(model) if model else None
        if task is not None and not task.is_valid():
            # an HTTP error with this message, not MONAI Label's bare "Internal Server Error"
            raise HTTPException(
                status_code=400,
                detail=f"model {model!r} has no trained weights yet ({self.bundles[model] / 'models' / 'model.pt'}): "
                f"train it first (POST /train/{model}, or Train in the client).",
            )
        return super().infer(request, datastore)
