"""Compressed worker updates, as FedAvg and STC send them: the two ends of the uplink.

The worker's :class:`UpEncoder` codes its update ΔW with the run's codec (one per
parameter tensor, error feedback as the run says), and with ``--filter-scaling on``
adds the filter scales (:mod:`.filter_scaling`).  The server's :class:`UpDecoder`
reads it back, the worker naming the stream.

Temporal contexts (``cabac:temporal``): the server decodes each worker's update
against that worker's previous one (:mod:`p2pfl.compression.temporal`).  Every
instruction says, in ``meta["ack"]``, the round of the last update the server
decoded from that worker (0: none).  A worker whose last reply is not the one
acknowledged -- it was late, lost or undecodable, or the coordinator restarted
from a checkpoint, which does not keep the references -- codes its next update
with plain contexts, which restarts the chain.
"""

from __future__ import annotations

import torch

from ..algorithms.base import Packet
from ..compression import make_codec, uses_temporal
from .filter_scaling import (SCALE_STEPS, apply_scales, filter_layout, quantise_scales,
                             read_scales, scaled_parameters, scales_frame)

__all__ = ["UpEncoder", "UpDecoder"]


class UpEncoder:
    """The worker's end: ``instruction`` on every instruction, ``packet`` to reply."""

    def __init__(self, spec: str, error_feedback: bool, shapes, filter_scaling: bool) -> None:
        self.codec = make_codec(spec, error_feedback=error_feedback, shapes=shapes)
        self.filter_scaling = filter_scaling
        self.temporal = uses_temporal(spec)
        self.replied = 0  # the round of our last update (0: none yet)

    def instruction(self, packet: Packet) -> None:
        """The server's acknowledgement: restart the temporal chain if it lacks our
        last update (a hostile or missing ``ack`` only restarts it)."""
        if self.temporal and self.replied and packet.meta.get("ack") != self.replied:
            self.codec.restart()

    def packet(self, rnd: int, delta: torch.Tensor, learner, base: torch.Tensor) -> Packet:
        """The update packet of round ``rnd``.  With error feedback the codec sends
        ũ = C(A + ΔW) and keeps A ← A + ΔW − ũ.  With filter scaling the scales are
        then trained on W + ũ with the weights frozen, and sent after the update's
        frames; ``learner`` is left at ``base``."""
        self.replied = rnd
        meta = {"n": learner.num_samples}
        if not self.filter_scaling:
            return Packet(self.codec.name, self.codec.encode(delta), meta=meta)
        frames, sent = self.codec.encode_with_reconstruction(delta)
        learner.set_flat(base + sent)
        scales = quantise_scales(learner.train_scales(
            scaled_parameters(learner.shapes), SCALE_STEPS, learner.spec.lr))
        learner.set_flat(base)
        return Packet(self.codec.name, [*frames, scales_frame(scales)],
                      meta=dict(meta, fs=True))


class UpDecoder:
    """The server's end: ``decode`` each reply, ``acknowledge`` each instruction."""

    def __init__(self, spec: str, shapes, filter_scaling: bool) -> None:
        self.codec = make_codec(spec, shapes=shapes)  # decodes; its residuals are unused
        self.layout = filter_layout(shapes) if filter_scaling else None
        self.temporal = uses_temporal(spec)
        self.heard: dict = {}  # worker -> round of its last update decoded

    def acknowledge(self, worker: int, packet: Packet) -> Packet:
        """``packet`` for ``worker``, with ``meta["ack"]`` when chains are temporal."""
        if self.temporal:
            packet.meta["ack"] = self.heard.get(worker, 0)
        return packet

    def decode(self, worker: int, packet: Packet, model: torch.Tensor) -> torch.Tensor:
        """The update a reply carries, as the server applies it to ``model``;
        ValueError (CodecError, TemporalGap) if it is unreadable."""
        out, scales = self.decode_parts(worker, packet, model)
        return out if scales is None else apply_scales(model, out, scales, self.layout)

    def decode_parts(self, worker: int, packet: Packet, model: torch.Tensor) -> tuple:
        """``(ũ, scales)``: the sparse update and the worker's filter scales (None
        without ``--filter-scaling``), each checked as :meth:`decode` says."""
        if packet.codec != self.codec.name:
            raise ValueError(f"expected codec {self.codec.name!r}, got {packet.codec!r}")
        scaled = packet.meta.get("fs") is True  # --filter-scaling: the last frame
        if scaled != (self.layout is not None) or (scaled and not packet.frames):
            raise ValueError("filter scales missing, or sent to a server without them")
        out = self.codec.decode(packet.frames[:-1] if scaled else packet.frames,
                                worker).reshape(-1)
        if out.numel() != model.numel():
            raise ValueError(f"update of {out.numel()} entries, expected {model.numel()}")
        scales = read_scales(packet.frames[-1], self.layout) if scaled else None
        if self.temporal:
            self.heard[worker] = packet.round  # its next update may refer to this one
        return out, scales
