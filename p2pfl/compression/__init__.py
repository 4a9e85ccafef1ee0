"""Codecs for tensors on the wire: sparsify or quantise, code positions, code losslessly.

>>> import torch
>>> from p2pfl.compression import make_codec, wire_size
>>> codec = make_codec("stc:0.01+golomb", error_feedback=False)
>>> frames = codec.encode(torch.randn(1000))
>>> codec.decode(frames).shape
torch.Size([1000])

``make_codec(spec)`` builds a codec from a spec such as ``topk:0.01+quant:0.001+cabac``
(grammar and rules: ``registry.py``; wire format: ``codec.py``; the intermediate
between stages: ``intermediate.py``).  It adds no error feedback unless asked
(``error_feedback=True`` wraps it in :class:`ErrorFeedback`); whether a run
uses it is decided once, by the plan.
"""
from __future__ import annotations

from .codec import Codec, wire_size
from .errors import CodecError
from .feedback import ErrorFeedback, wants_error_feedback
from .positions import golomb_b, golomb_expected_bits
from .registry import STAGES, build_codec, parse_spec
from .wire import MAX_NUMEL

__all__ = ["make_codec", "uses_temporal", "without_temporal", "is_unbiased", "Codec",
           "CodecError", "ErrorFeedback", "wants_error_feedback", "wire_size", "encode_many",
           "decode_many", "STAGES", "parse_spec", "golomb_b", "golomb_expected_bits",
           "MAX_NUMEL", "codec_names"]


def make_codec(spec: str, error_feedback: bool = False, seed: int | None = None,
               max_numel: int = MAX_NUMEL, shapes=None):
    """Build the codec for ``spec``.

    shapes: the parameter shapes of the model whose flat vector it codes: one codec
    per tensor (:class:`~p2pfl.compression.tensorwise.TensorwiseCodec`); None codes
    the vector as one tensor.

    error_feedback: wrap it in :class:`ErrorFeedback` (the one residual).
    seed: for the stochastic stages' generator (randk, qsgd, terngrad,
    PowerSGD's first Q).  max_numel: the largest tensor a blob may declare.
    Raises ``p2pfl.errors.ConfigError`` for a bad spec.
    """
    if shapes is None:
        codec = build_codec(spec, seed=seed, max_numel=max_numel)
    else:
        from .tensorwise import TensorwiseCodec

        def make(i):  # each tensor its own generator and state
            return build_codec(spec, seed=None if seed is None else seed * 1009 + i,
                               max_numel=max_numel)

        codec = TensorwiseCodec(make, shapes)
    return ErrorFeedback(codec) if error_feedback else codec


def codec_names() -> list[str]:
    """The registered stage names."""
    return list(STAGES)


def encode_many(codecs, tensors) -> list[list]:
    """Encode a list of tensors (e.g. a model's parameters), one blob each.

    ``codecs`` is one stateless codec for all, or a sequence with one codec per
    tensor: stateful ones (ErrorFeedback, powersgd) need their own object per tensor.
    """
    if not isinstance(codecs, (list, tuple)):
        codecs = [codecs] * len(tensors)
    if len(codecs) != len(tensors):
        raise ValueError(f"{len(codecs)} codecs for {len(tensors)} tensors")
    return [c.encode(t) for c, t in zip(codecs, tensors)]


def decode_many(codecs, blobs) -> list:
    """Inverse of :func:`encode_many`."""
    if not isinstance(codecs, (list, tuple)):
        codecs = [codecs] * len(blobs)
    if len(codecs) != len(blobs):
        raise ValueError(f"{len(codecs)} codecs for {len(blobs)} blobs")
    return [c.decode(b) for c, b in zip(codecs, blobs)]


def _chained(name: str, args: list) -> bool:
    return (name, args[-1:]) in (("cabac", ["temporal"]), ("powersgd", ["alternate"]))


def uses_temporal(spec: str) -> bool:
    """Whether ``spec`` codes a message against the previous one of its stream
    (``cabac:temporal``, ``powersgd:R:alternate``): a receiver must hold that one."""
    return any(_chained(name, args) for name, args in parse_spec(spec))


def is_unbiased(spec: str) -> bool:
    """Whether ``spec`` has an unbiased stochastic stage, E[C(x)] = x, that is not
    contractive: ``qsgd``, ``terngrad``, ``randk:P:scaled``, first or after a sparsifier
    or PowerSGD.  Error feedback assumes a contractive compressor, E‖C(x) − x‖² ≤
    (1 − δ)‖x‖² (Karimireddy et al., ICML 2019); with these its residual grows round
    after round."""
    return any(name in ("qsgd", "terngrad") or (name == "randk" and args[-1:] == ["scaled"])
               for name, args in parse_spec(spec))


def without_temporal(spec: str) -> str:
    """``spec`` (as :func:`parse_spec` reads it) with its chains dropped:
    ``cabac:temporal`` made plain ``cabac``, ``powersgd:R:alternate`` plain ``powersgd:R``."""
    return "+".join(":".join([name] + (args[:-1] if _chained(name, args) else args))
                    for name, args in parse_spec(spec))
