"""The CABAC format's constants and context layout, shared by the C and Python coders.

``cabac.py`` (the public entry points) and ``_cabac_pure.py`` (the pure-Python
coder) both read them from here, so neither imports the other's internals.
The C extension checks its own copies against these at load time.
"""

FORMAT_VERSION = 2
G = 14
EG_CTX = 10
EG_MAXK = 30
SHIFT_SIG, SHIFT_SIGN, SHIFT_GT, SHIFT_EG = 11, 9, 9, 8
# the fast half of the dual-rate contexts (sign, gt, Exp-Golomb); sig is single-rate
FAST_SIGN, FAST_GT, FAST_EG = 6, 6, 5
MAG_MAX = 1 << 30
N_MAX = 1 << 28
MAX_OVERRUN = 4

_PSTATE_BITS = 28
_PONE = 1 << _PSTATE_BITS
_PROB_SHIFT = _PSTATE_BITS - 15
_TOP = 1 << 24
_M32 = 0xFFFFFFFF

# context layout in the flat model arrays
_SIG0 = 0
_SIGN0 = 9
_GT0 = 12
_EG0 = _GT0 + 2 * G
# temporal mode: sig, sign and gt contexts again, once per class of the reference level
_TSIG0 = _EG0 + EG_CTX  # + 9 * ref magnitude class (0, +-1, larger) + sig context
_TSIGN0 = _TSIG0 + 27  # + 3 * ref sign class (zero, negative, positive) + sign context
_TGT0 = _TSIGN0 + 9  # + 2G * ref magnitude class + gt context
# dq mode: sig again for dependent-quantisation states 2 and 3, gt again for Q1
_DSIG0 = _TGT0 + 6 * G  # + 9 * (state - 2) + sig context
_DGT0 = _DSIG0 + 18  # + gt context
_NCTX = _DGT0 + 2 * G
DQ_NEXT = ((0, 2), (2, 0), (1, 3), (3, 1))  # the state after a level of parity p
_MAXSHIFT = ([SHIFT_SIG] * 9 + [SHIFT_SIGN] * 3 + [SHIFT_GT] * (2 * G) + [SHIFT_EG] * EG_CTX
             + [SHIFT_SIG] * 27 + [SHIFT_SIGN] * 9 + [SHIFT_GT] * (6 * G)
             + [SHIFT_SIG] * 18 + [SHIFT_GT] * (2 * G))
# the fast estimate's largest shift, 0 for a single-rate context
_FASTMAX = ([0] * 9 + [FAST_SIGN] * 3 + [FAST_GT] * (2 * G) + [FAST_EG] * EG_CTX
            + [0] * 27 + [FAST_SIGN] * 9 + [FAST_GT] * (6 * G)
            + [0] * 18 + [FAST_GT] * (2 * G))
