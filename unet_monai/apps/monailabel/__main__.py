"""``python -m unet_monai.apps.monailabel start --studies DIR``: see :mod:`unet_monai.apps.monailabel.launcher`."""

import sys

from .launcher import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
