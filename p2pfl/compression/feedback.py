"""Error feedback: the one wrapper that owns the residual.

ALGORITHMS.md § Error feedback (Stich et al. 2018; Karimireddy et al. 2019)::

    v = R + x;  frames = C(v);  sent = decode(frames);  R ← v − sent

Invariant (tested for every codec): old R + x == sent + new R, up to float32
rounding of its two steps (v = R + x, then R = v − sent, which is inexact where
``sent`` is far from ``v``: about one ulp of max(|v|, |sent|)).  It is exact for
the codecs that send entries of v unchanged (top-k, rand-k) and for the
quantisers whose reconstruction is close to v.  ``sent`` is the codec's
reconstruction at encode time, which equals what the receiver decodes bit for
bit (intermediate.py), so no decode round trip is needed.

State (explicit): ``residual`` (None until the first call; its shape is fixed
by the first tensor), ``last_sent`` (the reconstruction of the last call, for
algorithms such as CHOCO that also apply their own message).

Checkpoints: :func:`codec_state` / :func:`restore_codec` capture a codec's
mutable state -- the residual and last reconstruction of an ErrorFeedback,
and, of the codec itself, its stages' shared generator
(``rng.bit_generator.state``) and PowerSGD's warm starts -- as plain values,
tensors and arrays.  Restored into a codec built from the same spec, it
encodes bit for bit like the original from then on.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["ErrorFeedback", "wants_error_feedback", "codec_state", "restore_codec"]


def wants_error_feedback(codec) -> bool:
    """Whether error feedback is on by default: for biased codecs."""
    return bool(codec.biased)


class ErrorFeedback:
    """Wraps a codec; ``encode`` compensates with the accumulated residual."""

    def __init__(self, codec) -> None:
        # configuration
        self.codec = codec
        # internal state
        self.residual: torch.Tensor | None = None
        self.last_sent: torch.Tensor | None = None

    name = property(lambda self: self.codec.name)
    biased = property(lambda self: self.codec.biased)
    stochastic = property(lambda self: self.codec.stochastic)

    def __repr__(self) -> str:
        return f"ErrorFeedback({self.codec!r})"

    def reset(self) -> None:
        self.residual = None
        self.last_sent = None
        self.codec.reset()

    def encode_with_reconstruction(self, tensor: torch.Tensor):
        """Frames for residual + tensor, and the float32 tensor they decode to."""
        x = tensor.detach().to("cpu", torch.float32)
        if self.residual is None:
            self.residual = torch.zeros_like(x)
        elif self.residual.shape != x.shape:
            raise ValueError(f"error feedback residual has shape {tuple(self.residual.shape)}, "
                             f"got a tensor of shape {tuple(x.shape)}; reset() first")
        v = self.residual + x
        frames, sent = self.codec.encode_with_reconstruction(v)
        self.residual = v - sent
        self.last_sent = sent
        return frames, sent

    def encode(self, tensor: torch.Tensor) -> list:
        return self.encode_with_reconstruction(tensor)[0]

    def state(self) -> dict:
        """The residual, the last reconstruction and the wrapped codec's state (copies)."""
        return {"residual": _clone(self.residual), "last_sent": _clone(self.last_sent),
                "codec": codec_state(self.codec)}

    def restore(self, state: dict) -> None:
        """Inverse of :meth:`state`."""
        for key in ("residual", "last_sent"):
            value = state[key]
            if value is not None and not isinstance(value, torch.Tensor):
                raise ValueError(f"error feedback {key} should be a tensor or None")
        restore_codec(self.codec, state["codec"])
        self.residual = _clone(state["residual"])
        self.last_sent = _clone(state["last_sent"])

    def decode(self, frames, sender=None) -> torch.Tensor:
        return self.codec.decode(frames, sender)

    def restart(self) -> None:
        self.codec.restart()


# ---------------------------------------------------------------- checkpoints
def _clone(t):
    return None if t is None else t.detach().clone()


def codec_state(codec) -> dict:
    """A codec's (or an ErrorFeedback's) mutable state, as copies."""
    if isinstance(codec, ErrorFeedback):
        return {"kind": "error_feedback", **codec.state()}
    if hasattr(codec, "codecs"):  # per tensor
        return {"kind": "tensorwise", **codec.state()}
    rng = codec.stages[0].rng if codec.stages else None  # one generator for all stages
    warm = {i: [[r, c, q.copy()] for (r, c), q in s.warm_start.items()]
            for i, s in enumerate(codec.stages) if hasattr(s, "warm_start")}
    return {"kind": "codec", "name": codec.name,
            "rng": None if rng is None else rng.bit_generator.state, "warm_start": warm}


def restore_codec(codec, state: dict) -> None:
    """Put :func:`codec_state`'s ``state`` into ``codec`` (built from the same spec)."""
    kind = ("error_feedback" if isinstance(codec, ErrorFeedback) else
            "tensorwise" if hasattr(codec, "codecs") else "codec")
    got = state.get("kind") if isinstance(state, dict) else None
    if got != kind:
        raise ValueError(f"codec state of kind {got!r}, expected {kind!r} "
                         "(error feedback on one side only?)")
    if kind in ("error_feedback", "tensorwise"):
        codec.restore(state)
        return
    if state["name"] != codec.name:
        raise ValueError(f"codec state of {state['name']!r}, this codec is {codec.name!r}")
    if state["rng"] is not None:
        codec.stages[0].rng.bit_generator.state = state["rng"]
    for s in codec.stages:
        if hasattr(s, "warm_start"):
            s.warm_start.clear()
    for i, entries in state["warm_start"].items():
        codec.stages[i].warm_start.update({(int(r), int(c)): np.array(q, dtype=np.float32)
                                           for r, c, q in entries})
