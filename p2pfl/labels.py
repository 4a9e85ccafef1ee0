"""Node ids written as text: a profile's ``[nodes.K]``, a trace's node column, a key's
name.  Each names a node by its label, else by its id when it is a number."""

from __future__ import annotations

__all__ = ["node_number", "first_few"]


def node_number(text: str, canonical: bool = False) -> int | None:
    """The number ``text`` writes (ASCII digits, at most 18: ``'²'`` is a digit to
    ``str.isdigit`` and not to ``int``, and a 5,000-digit one is past ``int``'s limit),
    else None.  ``canonical``: only as ``str(id)`` writes it (``'7'``, not ``'07'``)."""
    if not (text.isascii() and text.isdecimal() and len(text) <= 18):
        return None
    number = int(text)
    return None if canonical and str(number) != text else number


def first_few(items, most: int = 5) -> str:
    """``items`` as text for a message: the first ``most``, then ``...`` if there are
    more (``0, 1, 2, 3, 4, ...``)."""
    items = list(items)
    return ", ".join(map(str, items[:most])) + (", ..." if len(items) > most else "")
