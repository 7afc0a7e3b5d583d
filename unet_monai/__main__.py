"""``python -m unet_monai``: the ``unet-monai`` command line (see :mod:`unet_monai.cli`)."""

from unet_monai.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
