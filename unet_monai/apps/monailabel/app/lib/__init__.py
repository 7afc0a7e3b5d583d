"""Infer and train tasks of the MONAI Label app, one folder per kind as in MONAI Label's sample apps."""

__all__: list[str] = []
