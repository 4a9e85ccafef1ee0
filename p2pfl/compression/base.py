"""The stage base class and argument parsing shared by all stages.

A stage is built from the text of one spec item (``name:arg:arg``) and a
``numpy.random.Generator`` owned by its codec.  Class attributes describe it:

* ``name``, ``wire_id``: registry key and the byte that marks it in a blob header;
* ``role``: ``"transform"``, ``"quantise"``, ``"positions"`` or ``"lossless"``;
* ``biased``: E[C(x)] ≠ x for some x; ``stochastic``: C draws random numbers;
* ``levels``: whether the stage outputs integer levels (sbc, stc, quantisers).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .errors import CodecError

__all__ = ["Stage", "float_arg", "int_arg", "check_finite"]


class Stage:
    name = ""
    wire_id = 0
    role = ""
    biased = False
    stochastic = False
    levels = False
    max_args = 1
    min_args = 0

    def __init__(self, args: list[str], rng: np.random.Generator) -> None:
        if not self.min_args <= len(args) <= self.max_args:
            want = f"{self.min_args}" if self.min_args == self.max_args else \
                f"{self.min_args} to {self.max_args}"
            raise ConfigError(f"codec stage {self.name!r} takes {want} argument(s), "
                              f"got {len(args)}: {':'.join([self.name, *args])!r}")
        self.args = args
        self.rng = rng

    def received(self, values):
        """The decoded values as this stage reconstructs them (as they are, but
        for ``dq``, whose levels go through its state machine)."""
        return values

    @property
    def spec(self) -> str:
        return ":".join([self.name, *self.args])

    def __repr__(self) -> str:
        return f"<stage {self.spec}>"


def float_arg(stage: Stage, text: str, what: str, lo: float, hi: float,
              lo_open: bool = True) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    ok = (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        raise ConfigError(f"{stage.name}:{what} needs {lo} {'<' if lo_open else '<='} "
                          f"{what} <= {hi}, got {text!r}")
    return v


def int_arg(stage: Stage, text: str, what: str, lo: int, hi: int) -> int:
    try:
        v = int(text)
    except ValueError:
        v = lo - 1
    if not lo <= v <= hi:
        raise ConfigError(f"{stage.name}:{what} needs an integer {lo} <= {what} <= {hi}, "
                          f"got {text!r}")
    return v


def check_finite(x: np.ndarray, stage: Stage) -> None:
    if not np.isfinite(x).all():
        raise CodecError(f"{stage.name} cannot encode non-finite values")
