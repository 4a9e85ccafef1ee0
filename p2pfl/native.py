"""The optional C extensions (``_kernel``, ``_cabac``, ``_dq``), loaded in one way.

Each is built at install when a compiler is there (setup.py, ``optional=True``)
and has a pure-Python or torch fallback that computes the same result.  The
environment variable that names a module's fallback (``P2PFL_KERNEL_PURE``,
``P2PFL_CABAC_PURE``, ``P2PFL_DQ_PURE``) set to anything but "" or "0" forces
it, and a build whose constants differ from what the Python side expects (a
stale build of another format) is never used.
"""
from __future__ import annotations

import importlib
import os

__all__ = ["load_extension"]


def load_extension(module: str, pure_env: str, expected: dict | None = None):
    """The extension ``module`` (a dotted name), or None: when ``pure_env`` is set,
    when the module was not built, or when one of its ``expected`` attributes has
    another value."""
    if os.environ.get(pure_env, "") not in ("", "0"):
        return None
    try:
        ext = importlib.import_module(module)
    except ImportError:
        return None
    if any(getattr(ext, name, None) != value for name, value in (expected or {}).items()):
        return None
    return ext
