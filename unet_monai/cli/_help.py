"""Help text for the sub-commands, from their module docstrings."""

from __future__ import annotations

import re

__all__ = ["epilog"]


def epilog(doc: str | None) -> str:
    """The docstring after its first paragraph, with reST markup (roles, double back-quotes) made plain."""
    text = "\n\n".join((doc or "").split("\n\n")[1:])
    text = re.sub(r":(mod|func|class|data|meth):`~?([^`]+)`", r"\2", text)
    return text.replace("``", "'")
