"""Pure-Python CABAC coder: a bit-exact mirror of ``_cabac.c``.

Used by :mod:`p2pfl.compression.cabac` when the C extension is not built (no
compiler) or ``P2PFL_CABAC_PURE=1``; slow (about 0.2 M levels/s) but producing
the identical bitstream, which ``tests/test_cabac.py`` checks.  The format,
binarisation and probability model are described in ``cabac.py``.
"""

from __future__ import annotations

from ._cabac_model import (DQ_NEXT, EG_CTX, EG_MAXK, G, MAG_MAX, MAX_OVERRUN, _DGT0, _DSIG0, _EG0,
                           _FASTMAX, _GT0, _M32, _MAXSHIFT, _NCTX, _PONE, _PROB_SHIFT, _SIG0,
                           _SIGN0, _TGT0, _TOP, _TSIG0, _TSIGN0)
from .errors import CodecError

__all__ = ["encode_pure", "decode_pure"]


def _models():
    """(prob, update) over fresh contexts: ``prob(ci)`` is the 15-bit P(bin = 0) the
    coder uses, ``update(ci, bit)`` adapts context ``ci`` to a coded bin.  A dual-rate
    context (``_FASTMAX[ci] > 0``) keeps a slow estimate P and a fast one Q and codes
    with their mean; both shifts grow from 1 (cabac.py, "Probability model")."""
    P, Q = [_PONE >> 1] * _NCTX, [_PONE >> 1] * _NCTX
    SH, FS, LF = [1] * _NCTX, [1] * _NCTX, [2] * _NCTX
    MX, FM = _MAXSHIFT, _FASTMAX

    def prob(ci):
        p15 = ((P[ci] + Q[ci]) >> (_PROB_SHIFT + 1)) if FM[ci] else P[ci] >> _PROB_SHIFT
        return p15 or 1

    def update(ci, bit):
        p, s = P[ci], SH[ci]
        P[ci] = p - (p >> s) if bit else p + ((_PONE - p) >> s)
        if FM[ci]:
            q, f = Q[ci], FS[ci]
            Q[ci] = q - (q >> f) if bit else q + ((_PONE - q) >> f)
        if s < MX[ci]:
            LF[ci] -= 1
            if LF[ci] == 0:
                SH[ci] = s + 1
                FS[ci] = min(s + 1, FM[ci])
                LF[ci] = 1 << (s + 1)

    return prob, update


def _contexts(ref, st: int, i: int, c1: int, c2: int) -> tuple:
    """(sig context, first sign context, first gt context) of level ``i``: plain, dq
    mode in state ``st`` (2 or 3; plain contexts in 0 and 1), or temporal given the
    reference level ``ref[i]`` (same layout as ``_cabac.c``)."""
    if ref is None:
        if st >= 2:
            return _DSIG0 + (st - 2) * 9 + c1 * 3 + c2, _SIGN0, _DGT0
        return _SIG0 + c1 * 3 + c2, _SIGN0, _GT0
    r = ref[i]
    t = 0 if r == 0 else (1 if r in (1, -1) else 2)
    rc = 2 if r > 0 else (1 if r < 0 else 0)
    return _TSIG0 + t * 9 + c1 * 3 + c2, _TSIGN0 + rc * 3, _TGT0 + t * 2 * G


def encode_pure(levels, ref=None, dq=False) -> bytes:
    prob, update = _models()
    dq, qs = dq and ref is None, 0
    out = bytearray()
    st = [0, 0xFFFFFFFF, 0, False, 0]  # low, range, cache, has_cache, pending

    def shift_low():
        low = st[0]
        if low < 0xFF000000 or low >= 0x100000000:
            carry = low >> 32
            if st[3]:
                out.append((st[2] + carry) & 0xFF)
            if st[4]:
                out.extend(bytes([(0xFF + carry) & 0xFF]) * st[4])
            st[4] = 0
            st[2] = (low >> 24) & 0xFF
            st[3] = True
        else:
            st[4] += 1
        st[0] = (low & 0x00FFFFFF) << 8

    def enc_bin(ci, bit):
        rng = st[1]
        bound = (rng >> 15) * prob(ci)
        if bit:
            st[0] += bound
            rng -= bound
        else:
            rng = bound
        update(ci, bit)
        while rng < _TOP:
            rng <<= 8
            shift_low()
        st[1] = rng

    def enc_bypass(bit):
        rng = st[1] >> 1
        if bit:
            st[0] += rng
        if rng < _TOP:
            rng <<= 8
            shift_low()
        st[1] = rng

    c1 = c2 = 0
    for i, v in enumerate(levels):
        v = int(v)
        if v > MAG_MAX or v < -MAG_MAX:
            raise CodecError("levels must lie within +-2**30")
        c_sig, c_sign, c_gt = _contexts(ref, qs, i, c1, c2)
        if dq:
            qs = DQ_NEXT[qs][v & 1]
        enc_bin(c_sig, v != 0)
        c2 = c1
        if v == 0:
            c1 = 0
            continue
        s = 1 if v < 0 else 0
        enc_bin(c_sign + c2, s)
        c1 = 1 if s else 2
        mag = -v if s else v
        g0 = c_gt + s * G
        for j in range(G):
            b = mag > j + 1
            enc_bin(g0 + j, b)
            if not b:
                break
        if mag > G:
            x = mag - G
            kk = x.bit_length() - 1
            for j in range(kk + 1):
                b = j < kk
                if j < EG_CTX:
                    enc_bin(_EG0 + j, b)
                else:
                    enc_bypass(b)
            for j in range(kk - 1, -1, -1):
                enc_bypass((x >> j) & 1)

    # finish: the value with the most trailing zero bits in [low, low + range)
    low = st[0]
    hi = low + st[1]
    v = low
    for k in range(32, -1, -1):
        m = (1 << k) - 1
        cand = (low + m) & ~m
        if cand < hi:
            v = cand
            break
    st[0] = v
    for _ in range(5):
        shift_low()
    trimmed = 0
    while trimmed < MAX_OVERRUN and out and out[-1] == 0:
        del out[-1]
        trimmed += 1
    return bytes(out)


def decode_pure(data: bytes, n: int, ref=None, dq=False) -> list:
    prob, update = _models()
    dq, qs = dq and ref is None, 0
    ln = len(data)
    limit = ln + MAX_OVERRUN
    code = 0
    for k in range(4):
        code = (code << 8) | (data[k] if k < ln else 0)
    st = [0xFFFFFFFF, code, 4]  # range, code, pos
    if code >= 0xFFFFFFFF:
        raise CodecError("corrupt stream: bad first code word")

    def dec_bin(ci):
        rng, code = st[0], st[1]
        bound = (rng >> 15) * prob(ci)
        if code < bound:
            rng = bound
            bit = 0
        else:
            code -= bound
            rng -= bound
            bit = 1
        update(ci, bit)
        if rng < _TOP:
            pos = st[2]
            while rng < _TOP:
                code = ((code << 8) | (data[pos] if pos < ln else 0)) & _M32
                rng <<= 8
                pos += 1
            st[2] = pos
        st[0], st[1] = rng, code
        return bit

    def dec_bypass():
        rng = st[0] >> 1
        code = st[1]
        bit = 0
        if code >= rng:
            code -= rng
            bit = 1
        if rng < _TOP:
            pos = st[2]
            code = ((code << 8) | (data[pos] if pos < ln else 0)) & _M32
            rng <<= 8
            st[2] = pos + 1
        st[0], st[1] = rng, code
        return bit

    out = [0] * n
    c1 = c2 = 0
    for i in range(n):
        c_sig, c_sign, c_gt = _contexts(ref, qs, i, c1, c2)
        if not dec_bin(c_sig):
            c2 = c1
            c1 = 0
            if dq:
                qs = DQ_NEXT[qs][0]
            continue
        c2 = c1
        s = dec_bin(c_sign + c2)
        c1 = 1 if s else 2
        mag = 1
        g0 = c_gt + s * G
        for j in range(G):
            if not dec_bin(g0 + j):
                break
            mag += 1
        if mag > G:
            kk = 0
            while True:
                b = dec_bin(_EG0 + kk) if kk < EG_CTX else dec_bypass()
                if not b:
                    break
                kk += 1
                if kk > EG_MAXK:
                    raise CodecError("corrupt stream: Exp-Golomb prefix too long")
            x = 1
            for _ in range(kk):
                x = (x << 1) | dec_bypass()
            if x + G > MAG_MAX:
                raise CodecError("corrupt stream: level out of range")
            mag = x + G
        out[i] = -mag if s else mag
        if dq:
            qs = DQ_NEXT[qs][mag & 1]
        if st[2] > limit:
            raise CodecError("truncated or corrupt stream: read past the end")
    pos = st[2]
    if pos > limit:
        raise CodecError("truncated or corrupt stream: read past the end")
    if pos < ln:
        raise CodecError("corrupt stream: trailing bytes after the coded levels")
    if pos < limit and ln > 0 and data[-1] == 0:
        raise CodecError("corrupt stream: non-canonical termination")
    return out
