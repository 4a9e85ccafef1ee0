"""The one table of codec stages, keyed by name, with unique wire ids.

Spec grammar (case-insensitive, spaces ignored)::

    spec  := stage ("+" stage)*
    stage := NAME (":" ARG)*

Stages must appear in role order — transform, quantiser, positions, lossless —
each at most once.  Further rules, checked when the codec is built:

* ``golomb`` needs a sparsifier before it;
* ``sbc`` and ``stc`` emit levels already, so no quantiser may follow them;
* ``cabac`` codes integer levels: it needs ``sbc``, ``stc`` or a level quantiser
  (quant, dq, uniform, qsgd, terngrad, sign) before it;
* ``dq`` quantises dense values: no sparsifier before it;
* ``rd=LAMBDA`` weighs CABAC's rate estimates: it needs ``cabac`` after it.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .codec import Codec
from .lossless import Bz2, Cabac, Deflate, Lzma
from .lowrank import PowerSGD
from .positions import GolombPositions
from .quantize import (FP16, QSGD, BF16Quant, DependentQuant, NoQuant, SignQuant, StepQuant,
                       TernGrad, UniformQuant)
from .sparsify import SBC, STC, RandK, Threshold, TopK

__all__ = ["STAGES", "ROLE_ORDER", "parse_spec", "build_codec"]

ROLE_ORDER = ("transform", "quantise", "positions", "lossless")


STAGES: dict[str, type] = {cls.name: cls for cls in (
    NoQuant, FP16, BF16Quant, StepQuant, DependentQuant, UniformQuant, QSGD, TernGrad, SignQuant,
    TopK, RandK, Threshold, SBC, STC, PowerSGD,
    GolombPositions,
    Deflate, Bz2, Lzma, Cabac,
)}


def _check_registry() -> None:
    ids = [cls.wire_id for cls in STAGES.values()]
    if len(set(ids)) != len(ids) or not all(0 < i < 256 for i in ids):
        raise RuntimeError(f"codec wire ids must be unique bytes: {sorted(ids)}")
    for cls in STAGES.values():
        if cls.role not in ROLE_ORDER:
            raise RuntimeError(f"stage {cls.name} has unknown role {cls.role!r}")


_check_registry()


def parse_spec(spec: str) -> list[tuple[str, list[str]]]:
    """``"topk:0.01+golomb"`` → ``[("topk", ["0.01"]), ("golomb", [])]``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty codec spec; valid stages: {', '.join(STAGES)}")
    items = []
    for part in spec.replace(" ", "").lower().split("+"):
        name, *args = part.split(":")
        if name not in STAGES:
            raise ConfigError(f"unknown codec stage {name!r} in {spec!r}; "
                              f"valid stages: {', '.join(STAGES)}")
        items.append((name, args))
    return items


def build_codec(spec: str, seed: int | None = None, **codec_kwargs) -> Codec:
    """Parse, validate and build a :class:`Codec` (raises ConfigError)."""
    rng = np.random.default_rng(seed)
    stages = [STAGES[name](args, rng) for name, args in parse_spec(spec)]
    roles = [s.role for s in stages]
    order = [ROLE_ORDER.index(r) for r in roles]
    if order != sorted(order) or len(set(roles)) != len(roles):
        raise ConfigError(f"codec {spec!r}: stages must come in the order "
                          f"{' + '.join(ROLE_ORDER)}, each at most once")
    by_role = dict(zip(roles, stages))
    transform, quantiser = by_role.get("transform"), by_role.get("quantise")
    if "positions" in by_role and not (transform and hasattr(transform, "select")):
        raise ConfigError(f"codec {spec!r}: {by_role['positions'].name} codes the support "
                          "of a sparsifier (topk, randk, threshold, sbc, stc)")
    if transform is not None and transform.levels and quantiser is not None:
        raise ConfigError(f"codec {spec!r}: {transform.name} already quantises; "
                          f"drop {quantiser.name}")
    if getattr(quantiser, "dependent", False) and hasattr(transform, "select"):
        raise ConfigError(f"codec {spec!r}: dq reconstructs each level from the parities of "
                          f"all levels before it, so it quantises dense tensors (or powersgd "
                          f"factors), not the values of {transform.name}")
    produces_levels = (quantiser or transform) is not None and (quantiser or transform).levels
    if getattr(by_role.get("lossless"), "codes_levels", False) and not produces_levels:
        raise ConfigError(f"codec {spec!r}: cabac codes integer levels; put a level quantiser "
                          "(quant:STEP, dq:STEP, uniform:BITS, qsgd, terngrad, sign) "
                          "or sbc/stc before it")
    if getattr(quantiser, "lam", 0) > 0 and not getattr(by_role.get("lossless"), "codes_levels",
                                                        False):
        raise ConfigError(f"codec {spec!r}: rd=LAMBDA trades error for CABAC's bits (its "
                          "rate estimates); without +cabac it only adds error: add +cabac "
                          "or drop rd=")
    if getattr(by_role.get("lossless"), "temporal", None) is not None and "positions" in by_role:
        raise ConfigError(f"codec {spec!r}: cabac:temporal conditions each level on the "
                          "co-located one of the last message, so it codes the support itself; "
                          f"drop {by_role['positions'].name}")
    return Codec(stages, **codec_kwargs)
