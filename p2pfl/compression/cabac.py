"""DeepCABAC-style context-adaptive binary arithmetic coding of integer levels.

Written for p2pfl from the description of DeepCABAC (Wiedemann et al.,
"DeepCABAC: A universal compression algorithm for deep neural networks",
IEEE JSTSP 2020) and of CABAC (Marpe, Schwarz, Wiegand, IEEE TCSVT 2003); see
``/work/shared/ALGORITHMS.md``, section DeepCABAC.  No code was taken from
another project.

API
---
``encode_levels(levels) -> bytes``
    ``levels``: 1-D array of integers (any integer dtype), ``|v| <= 2**30``.
``decode_levels(data, n) -> np.ndarray[int32]``
    Decodes exactly ``n`` levels.  The stream carries no length: the caller
    frames it.  Raises :class:`~p2pfl.compression.errors.CodecError` on bad,
    truncated, corrupted or hostile input (it never reads out of bounds, never
    hangs; cost is O(n) with n bounded by ``len(data)``, see below).
``empirical_entropy_bits(levels) -> float``
    ``n * H0`` in bits, the zeroth-order empirical entropy of the levels.
``HAVE_C``
    True when the C core ``p2pfl.compression._cabac`` is built (``python
    setup.py build_ext --inplace``).  Without it a pure-Python coder that
    writes the identical bitstream is used; it is about 200x slower.  Setting
    the environment variable ``P2PFL_CABAC_PURE=1`` forces the fallback.

Bitstream (format version 2)
----------------------------
**Binarisation** of each level ``v`` in scan order (DeepCABAC):

1. ``sig``: ``v != 0``.  Context: ``3*c(prev) + c(prevprev)`` where ``c`` maps
   a level to 0 (zero), 1 (negative), 2 (positive); levels before the start
   count as zero.  9 contexts.
2. ``sign``: ``v < 0``.  Context: ``c(prev)``.  3 contexts.
3. ``gt_i``: ``|v| > i`` for ``i = 1..G`` (``G = 14``), unary, stopping at the
   first 0.  Context: index ``i`` and the sign, ``2*G`` contexts.
4. If ``|v| > G``: ``x = |v| - G`` (>= 1) in order-0 Exp-Golomb: ``k =
   floor(log2 x)`` prefix 1-bins then a 0-bin (prefix bin ``j`` uses context
   ``j`` for ``j < EG_CTX = 10``, bypass beyond), then the ``k`` low bits of
   ``x``, most significant first, as bypass bins.  ``k <= 30``.

**Probability model.**  Each context keeps a 28-bit estimate ``p`` of
P(bin = 0) and an adaptation shift ``s``: after a 0-bin ``p += (2^28 - p) >>
s``, after a 1-bin ``p -= p >> s``.  ``s`` starts at 1 and grows by one after
``2^s`` bins until it reaches the context's maximum (11 for sig, 9 for sign and
gt, 8 for the Exp-Golomb prefix).  Early on this tracks a counting estimator
(rate ~ 1/(count+2)), so a context learns its probability in a few bins;
later it is an exponential window of ``2^smax`` bins, which costs about
``1/(4 * 2^smax * ln 2)`` bits per bin on stationary data (0.0002 bits for
sig).  The sign, gt and Exp-Golomb contexts are *dual-rate* (format version 2),
as NNC's and VVC's CABAC are (ALGORITHMS.md, "Entropy coding extensions",
probability estimation: two estimates at different rates, coded with their
mean): they keep a second estimate ``q``, updated in the same way with the shift
``min(s, f)``, where ``f`` is 6 for sign and gt and 5 for the Exp-Golomb prefix,
and code with ``p15 = max(1, (p + q) >> 14)``.  The fast half follows
statistics that change within a tensor (the rows of a trained fully connected
layer differ in scale and sign balance).  The sig flag stays single-rate,
``p15 = max(1, p >> 13)``: on the very skewed sig flag of a sparse update a
fast half only adds estimation noise.  Departure from the paper's fixed pair
(shifts 4 and 7): both halves start from the count-adaptive shift of 1, and the
rates were chosen by measurement (BENCHMARKS.md, issue 11).

**dq mode** (``encode_levels(..., dependent=True)``, the levels of the ``dq``
quantiser, :mod:`~p2pfl.compression.dq`; without a reference only, since temporal
mode takes precedence).  The coder follows the dependent-quantisation state,
starting in state 0 and moving to ``DQ_NEXT[state][|v| & 1]`` after each level.
In states 0 and 1 (quantiser Q0) the contexts are the plain ones; in states 2
and 3 (Q1) sig takes a set of 9 contexts of each state, and the gt flags a set of
``2*G`` of their own (Q1's level 1 is one step, Q0's two).  As in NNC, whose
significance contexts also depend on the state.

**Range coder.**  32-bit ``range`` (normalised to >= 2^24 by byte shifts),
33-bit ``low`` with carry propagation through a cached byte and a run of
pending 0xFF bytes.  A context bin splits ``bound = (range >> 15) * p15``: a
0-bin keeps ``[low, low+bound)``, a 1-bin takes ``[low+bound, low+range)``.  A
bypass bin halves ``range`` (1 takes the upper half).  The first output byte
is always 0 and is not written.  To finish, the value in ``[low, low+range)``
with the most trailing zero bits is written (4 bytes plus pending carries) and
up to 4 trailing zero bytes are dropped; the decoder reads missing bytes as
zero.  A valid stream is therefore consumed entirely, with at most 4 bytes
read past its end; anything else (trailing bytes, more than 4 missing bytes,
an Exp-Golomb prefix over 30, a level over 2^30, a bad first code word, a zero
last byte that should have been dropped) raises ``CodecError``.

Each bin shrinks the range by at least a factor ``1 - 2^-15``, so ``n`` levels
need at least ``n / 181000`` bytes; ``decode_levels`` rejects ``n > (len(data)
+ 8) * 2^18`` (and ``n > 2^28``) before allocating anything.
"""
from __future__ import annotations

import operator

import numpy as np

from p2pfl.compression.errors import CodecError
from p2pfl.native import load_extension

__all__ = [
    "encode_levels",
    "decode_levels",
    "empirical_entropy_bits",
    "HAVE_C",
    "CodecError",
    "N_MAX",
    "MAG_MAX",
]

from p2pfl.compression._cabac_model import (  # noqa: E402  (the one home of the model)
    _EG0, _GT0, _M32, _MAXSHIFT, _NCTX, _PONE, _PROB_SHIFT, _PSTATE_BITS, _SIG0, _SIGN0, _TOP,
    DQ_NEXT, EG_CTX, EG_MAXK, FAST_EG, FAST_GT, FAST_SIGN, FORMAT_VERSION, G, MAG_MAX, MAX_OVERRUN,
    N_MAX, SHIFT_EG, SHIFT_GT, SHIFT_SIG, SHIFT_SIGN)


# a stale build of another format version is never used: never mix bitstreams
_c = load_extension("p2pfl.compression._cabac", "P2PFL_CABAC_PURE", {
    "FORMAT_VERSION": FORMAT_VERSION, "G": G, "EG_CTX": EG_CTX, "SHIFT_SIG": SHIFT_SIG,
    "SHIFT_SIGN": SHIFT_SIGN, "SHIFT_GT": SHIFT_GT, "SHIFT_EG": SHIFT_EG,
    "FAST_SIGN": FAST_SIGN, "FAST_GT": FAST_GT, "FAST_EG": FAST_EG,
    "TEMPORAL": 1,  # knows temporal contexts
    "DQ_CONTEXTS": 1,  # and dq mode, with the state machine of _cabac_model
    "DQ_NEXT": DQ_NEXT,
})
HAVE_C: bool = _c is not None


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def _as_levels(levels) -> np.ndarray:
    try:
        a = np.asarray(levels)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise CodecError(f"levels are not an array: {exc}") from None
    if a.ndim != 1:
        raise CodecError(f"levels must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int32)
    if a.dtype.kind not in "iu":
        raise CodecError(f"levels must have an integer dtype, got {a.dtype}")
    if a.size > N_MAX:
        raise CodecError(f"too many levels: {a.size} > {N_MAX}")
    if a.dtype.itemsize >= 4 and a.dtype != np.int32:  # both coders check int32 levels
        lo, hi = int(a.min()), int(a.max())
        if lo < -MAG_MAX or hi > MAG_MAX:
            raise CodecError("levels must lie within +-2**30")
    return np.ascontiguousarray(a, dtype=np.int32)


def _as_reference(reference, n: int):
    """None, or the temporal reference as int32 levels, exactly ``n`` of them."""
    if reference is None:
        return None
    r = _as_levels(reference)
    if r.size != n:
        raise CodecError(f"temporal reference of {r.size} levels for {n} levels")
    return r


def encode_levels(levels, reference=None, dependent: bool = False) -> bytes:
    """Code a 1-D integer array (``|v| <= 2**30``) into a self-terminating stream;
    with ``reference`` (the co-located levels of the previous message of the same
    stream, as many), in temporal mode; else with ``dependent`` (levels of the
    ``dq`` quantiser), in dq mode."""
    a = _as_levels(levels)
    ref = _as_reference(reference, a.size)
    if _c is not None:
        try:
            return _c.encode(a, ref, bool(dependent))
        except ValueError as exc:  # an int32 level outside +-2**30
            raise CodecError(str(exc)) from None
    from ._cabac_pure import encode_pure

    return encode_pure(a.tolist(), None if ref is None else ref.tolist(), bool(dependent))


def step_levels(x: np.ndarray, step: float):
    """``rint(x / step)`` (float64 quotient, ties to even) as int32 levels by the C
    core, or None: without it, for an ``x`` that is not a float32 vector, or when a
    level is not finite or not below 2**30 in magnitude (the caller's general path
    then decides)."""
    if _c is None or x.dtype != np.float32 or x.ndim != 1:
        return None
    out = np.empty(x.size, dtype=np.int32)
    return out if _c.quantise(np.ascontiguousarray(x), float(step), out) else None


def _as_bytes(data):
    try:
        mv = memoryview(data)
    except TypeError:
        raise CodecError(f"data must be bytes-like, got {type(data).__name__}") from None
    if mv.itemsize != 1 or mv.ndim != 1 or not mv.c_contiguous:
        mv = memoryview(mv.tobytes())
    return mv


def max_levels_for(nbytes: int) -> int:
    """Most levels a stream of ``nbytes`` bytes can possibly hold (a safe bound)."""
    return min(N_MAX, (nbytes + 8) << 18)


def decode_levels(data, n: int, reference=None, dependent: bool = False) -> np.ndarray:
    """Decode exactly ``n`` levels from ``data``; returns a new writable int32 array.
    ``reference``: the one the stream was coded with (temporal mode); ``dependent``:
    as it was coded (dq mode, when there is no reference)."""
    try:
        n = operator.index(n)
    except TypeError:
        raise CodecError(f"n must be an integer, got {type(n).__name__}") from None
    mv = _as_bytes(data)
    if n < 0:
        raise CodecError(f"n must be >= 0, got {n}")
    if n > N_MAX:
        raise CodecError(f"too many levels: {n} > {N_MAX}")
    if n > max_levels_for(len(mv)):
        raise CodecError(f"{n} levels cannot be coded in {len(mv)} bytes")
    ref = _as_reference(reference, n)
    if _c is not None:
        out = np.empty(n, dtype=np.int32)
        try:
            _c.decode(mv, out, ref, bool(dependent))
        except ValueError as exc:
            raise CodecError(str(exc)) from None
        return out
    from ._cabac_pure import decode_pure

    return np.array(decode_pure(bytes(mv), n, None if ref is None else ref.tolist(),
                                bool(dependent)), dtype=np.int32)


def empirical_entropy_bits(levels) -> float:
    """Zeroth-order empirical entropy of ``levels`` times their number, in bits."""
    a = np.asarray(levels).ravel()
    if a.size == 0:
        return 0.0
    _, counts = np.unique(a, return_counts=True)
    c = counts.astype(np.float64)
    return float(-(c * np.log2(c / a.size)).sum())
