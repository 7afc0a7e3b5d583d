"""MONAI Label training task for the LiTS bundles: train on the datastore's labelled studies, serve the result."""

from __future__ import annotations

import logging
import os
from typing import Any

import monai.bundle
from monailabel.tasks.train.bundle import BundleTrainTask

from unet_monai.apps.monailabel.app.lib.infers.bundle import TRAINING_CHECKPOINT

__all__ = ["LiverBundleTrainTask"]

logger = logging.getLogger(__name__)

_CHECKPOINT_LOADER = "CheckpointLoader"


def _as_bool(value: Any) -> bool:
    """``True``/``False`` from a JSON boolean or a string such as ``"false"`` (clients send either)."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none")
    return bool(value)


class LiverBundleTrainTask(BundleTrainTask):
    """Train one of the project's LiTS bundles on the studies labelled in MONAI Label's datastore.

    MONAI Label's ``BundleTrainTask`` runs the bundle's ``train.json`` in the server's training
    subprocess, with the datastore's ``{"image", "label"}`` records as ``train#dataset#data`` and
    ``validate#dataset#data``, the request's ``max_epochs`` as ``train#trainer#max_epochs`` and the
    served bundle folder as ``bundle_root``. The bundles' ``BestModelSaver`` then writes
    ``<bundle_root>/models/model.pt``, the file :class:`~..infers.LiverBundleInferTask` serves (it
    reloads the file on the next inference, its modification time having changed). Their
    ``PeriodicValidationHandler`` validates after the last epoch too, so a ``max_epochs=1`` request
    writes ``model.pt``.

    Differences from ``BundleTrainTask`` (0.8.5):

    - ``pretrained: false`` trains from the network's initialization; 0.8.5 crashes on it with a
      TypeError (``os.path.exists(None)``).
    - ``pretrained: true`` (the default) adds a ``CheckpointLoader`` for ``models/model.pt`` that
      loads strictly and with ``map_location="cpu"``, so weights saved on a GPU load on a CPU-only
      server; without ``model.pt`` training starts from the initialization.
    - validation studies: these bundles write ``model.pt`` only from a validation run, so an empty
      validation split would train without ever updating the served model. With two or more
      labelled studies at least one is held out (``val_split`` of them, rounded, at least 1 and at
      most all but one); with one labelled study, or ``val_split`` 0, the training studies are also
      validated (a warning says so). A negative ``val_split`` keeps the bundle's own validation data.
      No labelled study at all is an error naming where labels go.
    - the bundle's ``epochs`` (the length of its learning-rate schedule) follows ``max_epochs``.
    - ``models/checkpoint.pt`` (the resumable training checkpoint) is not offered as a model file.
    - the bundle's ``initialize`` expressions (seeding, determinism settings) run before training, as
      with ``python -m monai.bundle run``; 0.8.5 skips them.

    Args:
        path: the bundle folder, ``<app>/model/<bundle name>``.
        conf: the app's ``--conf`` settings.
        kwargs: passed on to ``BundleTrainTask`` (``load_strict`` defaults to ``True``).
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, **kwargs)

    def config(self) -> dict[str, Any]:
        """The options a client shows for training (``max_epochs``, ``val_split``, ``pretrained`` ...)."""
        options = super().config()
        files = [f for f in options.get("model_filename", []) if f != TRAINING_CHECKPOINT]
        options["model_filename"] = files or [self.const.model_pytorch()]
        return options

    def _partition_datalist(
        self, datalist: list[dict[str, Any]], request: dict[str, Any], shuffle: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        if not datalist:
            raise ValueError(
                "no labelled study in the datastore: training needs final labels (saved from the client, or "
                "files <studies>/labels/final/<image id>.nii.gz)."
            )
        val_split = float(request.get("val_split", 0.2))
        if val_split < 0:
            return list(datalist), None  # the bundle's own validate#dataset#data
        n = len(datalist)
        num_val = min(n - 1, max(1, round(n * val_split))) if n > 1 and val_split > 0 else 0
        if num_val == 0:
            logger.warning(
                "validating on the %d training studies (%s): the saved model is chosen on data it was trained on.",
                n,
                "only one labelled study" if n == 1 else "val_split is 0",
            )
            return list(datalist), list(datalist)
        train, val = list(datalist[: n - num_val]), list(datalist[n - num_val :])
        logger.info("labelled studies: %d for training, %d for validation", len(train), len(val))
        return train, val

    def _load_checkpoint(self, model_pytorch: str, pretrained: Any, train_handlers: list[dict[str, Any]]) -> None:
        # train_handlers is the config's own list (BundleTrainTask passes it on as an override): edit it in place
        ours = [
            h for h in train_handlers if h.get("_target_") == _CHECKPOINT_LOADER and h.get("load_path") == model_pytorch
        ]
        if not _as_bool(pretrained) or not os.path.isfile(model_pytorch):
            train_handlers[:] = [h for h in train_handlers if not any(h is o for o in ours)]
            logger.info(
                "training from the network's initialization (%s)",
                "pretrained is false" if not _as_bool(pretrained) else f"{model_pytorch} does not exist",
            )
            return
        if ours:
            return
        logger.info("training starts from %s", model_pytorch)
        train_handlers.insert(
            0,
            {
                "_target_": _CHECKPOINT_LOADER,
                "load_path": model_pytorch,
                "load_dict": {self.model_dict_key: f"@{self.const.key_network()}"},
                "strict": self.load_strict,
                "map_location": "cpu",
            },
        )

    def run_single_gpu(self, request: dict[str, Any], overrides: dict[str, Any]) -> None:
        """Run the bundle as ``monai.bundle run`` does: ``initialize`` (seeding), the run id, ``finalize``."""
        monai.bundle.run(
            run_id=request.get("run_id") or "run",
            init_id="initialize",
            final_id="finalize",
            meta_file=self.bundle_metadata_path,
            config_file=self.bundle_config_path,
            **overrides,
        )

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        key = self.const.key_train_trainer_max_epochs()
        if overrides.get(key) is not None:
            overrides[key] = int(overrides[key])  # a client may send it as a string
            if self.bundle_config.get("epochs") is not None:
                overrides["epochs"] = overrides[key]
        return overrides
