"""Public copies x̂: what a node and its neighbours know of each other's models.

Compressed gossip (CHOCO-SGD, compressed D-PSGD) sends only the compressed
change q of a node's public copy; every neighbour applies q to its copy of
that node, so all copies of x̂_j agree bit for bit.  That holds only if no q
is lost.  Each message carries the round it belongs to; a receiver that sees
a gap (a message missed, a neighbour that was silent and came back, a new
neighbour) marks the copy *stale*, leaves it out of mixing, and asks the
sender for its full public copy.  The sender answers with one dense message
instead of its next q.  This is the resynchronisation the CHOCO paper asks
for when a node gains or loses a neighbour (ALGORITHMS.md, CHOCO-SGD).
"""

from __future__ import annotations

import torch

from .base import MAX_MAGNITUDE, Packet, dense_packet, dense_tensor, within_range
from .decoders import CODECS_PER_SENDER, Decoders

__all__ = ["PublicCopies", "Update", "contraction_scale", "advance", "CODECS_PER_SENDER"]


def contraction_scale(codec, numel: int) -> float:
    """1/τ that makes an unbiased stochastic codec a contraction, for public copies.

    CHOCO needs E‖Q(x) − x‖² ≤ (1 − δ)‖x‖² (ALGORITHMS.md); an unbiased Q with
    variance ω‖x‖² is not, but Q/τ with τ = 1 + ω is (Koloskova et al., 2019, who
    rescale QSGD this way).  ω: QSGD with s levels min(d/s², √d/s) (Alistarh et
    al. 2017), TernGrad √d, scaled random-k d/k − 1.  Biased codecs: 1.  With
    per-tensor codecs d is the largest tensor's size: each tensor's variance is at
    most ω(d_max)‖x_l‖², and so is their sum relative to ‖x‖².
    """
    numel = max(getattr(codec, "sizes", None) or [numel])
    omega = 0.0
    for stage in getattr(codec, "stages", ()):
        if stage.name == "qsgd":
            omega += min(numel / stage.s ** 2, numel ** 0.5 / stage.s)
        elif stage.name == "terngrad":
            omega += numel ** 0.5
        elif stage.name == "randk" and getattr(stage, "scaled", False):
            omega += 1.0 / stage.p - 1.0
    return 1.0 / (1.0 + omega)


def advance(copy: torch.Tensor, q: torch.Tensor, scale: float) -> None:
    """x̂_j ← x̂_j + q_j/τ, in place: the one way every copy of x̂_j is moved.

    CHOCO's copy update (ALGORITHMS.md, CHOCO-SGD, line 3: x̂_j ← x̂_j + q_j),
    with q_j the decoded message times the contraction scale 1/τ.  The owner
    and every neighbour call this same function, so they perform the same two
    float32 roundings (q·(1/τ), then the sum) and their copies stay equal bit
    for bit; a fused ``add_(q, alpha=scale)`` rounds once and would not.
    """
    copy.add_(q if scale == 1.0 else q * scale)


class Update:
    """A decoded neighbour message: a change ``q`` of its copy, or its ``full`` copy.

    ``q`` is kept as decoded; :func:`advance` applies it with ``scale`` (1/τ).
    """

    __slots__ = ("full", "tensor", "round", "scale")

    def __init__(self, full: bool, tensor: torch.Tensor, round: int, scale: float = 1.0) -> None:
        self.full, self.tensor, self.round, self.scale = full, tensor, round, scale


class PublicCopies:
    """Own public copy x̂_i, neighbours' copies x̂_j, and their resynchronisation.

    All copies start from the common initial model ``x0`` (every node builds
    the same initial model from the run's seed), so no dense exchange is needed
    to start.
    """

    def __init__(self, x0: torch.Tensor, neighbours, codec, allowed=None) -> None:
        # configuration
        self.codec = codec
        self.numel = x0.numel()
        # state
        self.own = x0.detach().clone().float()
        self.copies = {j: self.own.clone() for j in neighbours}
        self.known = {j: 0 for j in neighbours}  # last round applied to each copy
        self.stale: set = set()  # copies that missed an update
        self.requested: dict = {}  # stale copy -> round we last asked its owner to resend
        self.asked_by: set = set()  # neighbours that asked us for our full copy
        self._decoders = Decoders(codec, self.numel, allowed)  # for peers' packets
        self.scale = contraction_scale(codec, self.numel)

    # ---------------------------------------------------------------- sending
    def publish(self, delta: torch.Tensor, meta: dict | None = None) -> Packet:
        """Encode ``delta`` (the change to publish), apply it to x̂_i, return the packet."""
        frames, q = self.codec.encode_with_reconstruction(delta)
        advance(self.own, q.reshape(-1), self.scale)
        return Packet(self.codec.name, frames, meta=dict(meta or {}))

    def full_copies(self) -> dict:
        """Dense x̂_i for each neighbour that asked for it (sent instead of q).

        A copy of x̂_i, not a view: frames go to ZeroMQ without copying, and a
        message held by an emulated link could otherwise leave after the next
        :meth:`publish` moved x̂_i, and arrive as a later copy than its round says."""
        own = self.own.clone() if self.asked_by else None
        out = {j: dense_packet(own) for j in self.asked_by}
        for p in out.values():
            p.meta["full"] = True
        if self.asked_by:  # cabac:temporal: they lost our chain; restart it for all
            self.codec.restart()
        self.asked_by.clear()
        return out

    # -------------------------------------------------------------- receiving
    def decode(self, packet: Packet) -> Update:
        """A neighbour's q, or its full copy.  Values beyond :data:`MAX_MAGNITUDE` (or
        not finite) are refused: they would overflow its copy or the consensus step."""
        if packet.meta.get("full"):
            full = dense_tensor(packet, self.numel, check=False)
            if not within_range(full):
                raise ValueError(f"full copy holds values beyond {MAX_MAGNITUDE:.3g}")
            return Update(True, full, packet.round)
        q = self._decoders.read(packet, "update")
        codec = self._decoder(packet.codec, packet.sender)
        return Update(False, q, packet.round, contraction_scale(codec, self.numel))

    def _decoder(self, spec: str, sender=None):
        """The codec for a neighbour's spec (:class:`~.decoders.Decoders`)."""
        return self._decoders.get(spec, sender)

    def apply(self, received: dict, every_round: bool = True) -> None:
        """Apply neighbours' updates; copies that missed one become stale.

        ``every_round``: each neighbour sent exactly one update for this round, so
        a copy without one missed it (lock-step rounds).  Without a barrier
        (asynchronous gossip) a gap in a neighbour's rounds is the only sign.
        """
        for j, upd in received.items():
            if upd.full:
                self.copies[j] = upd.tensor
                self.known[j] = upd.round
                self.stale.discard(j)
                self.requested.pop(j, None)
            elif j not in self.stale and self.known[j] == upd.round - 1:
                advance(self.copies[j], upd.tensor, upd.scale)
                self.known[j] = upd.round
            else:
                self.stale.add(j)
        for j in self.copies if every_round else ():
            if j not in received and j not in self.stale:
                self.stale.add(j)  # missed this round's q: the copy is behind

    def resync_requests(self, rnd: int, retry_after: int = 3) -> list:
        """Stale copies to ask their owners for in round ``rnd``.

        A request is repeated every ``retry_after`` rounds while the copy stays
        stale, since the request or its answer may be lost too.
        """
        due = sorted(j for j in self.stale if rnd - self.requested.get(j, -retry_after)
                     >= retry_after)
        self.requested.update({j: rnd for j in due})
        return due

    def fresh(self) -> list:
        return [j for j in self.copies if j not in self.stale]
