"""MONAI Label integration: an app serving the project's LiTS bundles, and a launcher for it.

- :mod:`unet_monai.apps.monailabel.app`: the MONAI Label app folder (``main.py`` with
  :class:`~unet_monai.apps.monailabel.app.main.LiverSegmentationApp`, ``lib/infers``, ``lib/trainers``);
  importing it needs MONAI Label (``bash scripts/install_monailabel.sh``).
- :mod:`unet_monai.apps.monailabel.launcher`: ``python -m unet_monai.apps.monailabel start --studies DIR``
  prepares an app folder linking the bundles and starts ``monailabel start_server`` on 127.0.0.1.
  It imports nothing from MONAI Label, so it runs from the project's own environment too.

See ``docs/monailabel.md``.
"""

from .launcher import available_bundles, default_app_dir, find_monailabel_python, prepare_app_dir, server_command

__all__ = ["available_bundles", "default_app_dir", "find_monailabel_python", "prepare_app_dir", "server_command"]
