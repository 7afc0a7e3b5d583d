"""Helpers shared by the bundle tests."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]


def cpu_parser(bundle: str, *configs: str, **overrides: object) -> ConfigParser:
    """A bundle's configs read in order (names under its ``configs/``; an absolute path stays as it is), the
    device set to the CPU, then ``overrides`` set as the ``monai.bundle`` command line sets them."""
    folder = REPO / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(folder / name) for name in configs])
    parser["device"] = "$torch.device('cpu')"
    for key, value in overrides.items():
        parser[key] = value
    return parser
