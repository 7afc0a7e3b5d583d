"""The MONAI Label app folder: ``main.py`` (the app class) and ``lib/`` (its infer and train tasks).

Importing anything below this package needs MONAI Label installed (``scripts/install_monailabel.sh``).
"""

__all__: list[str] = []
