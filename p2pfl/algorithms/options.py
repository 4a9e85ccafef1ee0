"""The options of each gossip rule: small frozen dataclasses, resolved by the plan.

Every value here is final when a node receives it: the plan has chosen the
codec, the consensus step size γ and whether the error-feedback memory (the
residual x − x̂) is kept, and has checked them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .robust import parse_robust

__all__ = ["DPSGDOptions", "CHOCOOptions", "check_gamma"]


def check_gamma(gamma: float) -> None:
    """A consensus step size (CHOCO, DeepSqueeze) must be in (0, 1]."""
    if not 0 < gamma <= 1:
        raise ConfigError(f"gamma must be in (0, 1], got {gamma}")


@dataclass(frozen=True)
class DPSGDOptions:
    """D-PSGD: ``codec`` "none" exchanges fp32 models; any other exchanges compressed
    differences of public copies, keeping the residual when ``error_feedback``."""

    codec: str = "none"
    error_feedback: bool = True
    robust: str = "none"  # robust.parse_robust

    def __post_init__(self) -> None:
        parse_robust(self.robust)


@dataclass(frozen=True)
class CHOCOOptions:
    """CHOCO-SGD: the codec of the public-copy updates q, the consensus step ``gamma``
    and whether the residual x − x̂ is kept (``error_feedback``)."""

    codec: str = "none"
    gamma: float = 1.0
    error_feedback: bool = True
    robust: str = "none"  # robust.parse_robust

    def __post_init__(self) -> None:
        parse_robust(self.robust)
        check_gamma(self.gamma)
