"""Error feedback: the one wrapper that owns the residual.

ALGORITHMS.md § Error feedback (Stich et al. 2018; Karimireddy et al. 2019)::

    v = R + x;  frames = C(v);  sent = decode(frames);  R ← v − sent

Invariant (tested for every codec): old R + x == sent + new R, up to float32
rounding of the one addition.  ``sent`` is the codec's reconstruction at encode
time, which equals what the receiver decodes bit for bit (intermediate.py), so
no decode round trip is needed.

State (explicit): ``residual`` (None until the first call; its shape is fixed
by the first tensor), ``last_sent`` (the reconstruction of the last call, for
algorithms such as CHOCO that also apply their own message).
"""
from __future__ import annotations

import torch

__all__ = ["ErrorFeedback", "wants_error_feedback"]


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

    def decode(self, frames) -> torch.Tensor:
        return self.codec.decode(frames)
