"""Applications built on the project's bundles: the MONAI Label app (:mod:`unet_monai.apps.monailabel`)."""

__all__: list[str] = []
