"""Boolean config flags as they arrive from bundle configs and the ``monai.bundle`` command line."""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool"]

_WORDS = {"true": True, "false": False}


def as_bool(value: Any, name: str) -> bool:
    """``value`` as a bool: a bool, or the words ``true`` / ``false`` in any case.

    ``python -m monai.bundle run ... --compile false`` hands the config the *string* ``"false"`` (python-fire
    only converts ``False``), and ``bool("false")`` is True: a flag switched off on the command line would
    silently stay on. Flags read through this accept the lower-case words and refuse anything else.

    Args:
        value: the flag's value.
        name: the config id or argument, for the error message.

    Raises:
        ValueError: for anything other than a bool or those words (numbers included: a typo like
            ``--compile 0.5`` should not pass as "on").

    Example::

        as_bool("false", "cpu_bf16")  # False
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _WORDS:
        return _WORDS[value.strip().lower()]
    raise ValueError(f"{name} must be true or false, got {value!r}.")
