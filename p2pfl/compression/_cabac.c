/*
 * _cabac.c -- C core of p2pfl's DeepCABAC-style entropy coder for integer levels.
 *
 * Written for p2pfl from the description of DeepCABAC (Wiedemann et al., IEEE
 * JSTSP 2020) and CABAC (Marpe, Schwarz, Wiegand, IEEE TCSVT 2003).  The
 * bitstream is specified in p2pfl/compression/cabac.py, whose pure-Python
 * fallback produces byte-identical output; keep the two in step.
 *
 * Summary of the format (see cabac.py for the full description):
 *   - binarisation per level v: sig (v != 0), sign (v < 0), unary flags
 *     "|v| > i" for i = 1..G, then an order-0 Exp-Golomb remainder
 *     |v| - G - 1 whose prefix bins are context coded (first EG_CTX), the rest
 *     and the suffix bits bypass coded;
 *   - contexts: sig by the classes (zero/neg/pos) of the previous two levels,
 *     sign by the class of the previous level, gt flags by index and sign,
 *     Exp-Golomb prefix by index;
 *   - probability model: a 28-bit estimate of P(bin = 0) updated by an
 *     exponential moving average whose rate starts at 1/2 and is halved as the
 *     context sees more bins (a count-adaptive window that approximates the
 *     counting estimator early and a sliding window of 2^MAXSHIFT bins later);
 *     sign, gt and Exp-Golomb contexts keep a second, faster estimate (its
 *     shift capped at FAST_*) and code with the mean of the two (format 2);
 *     the coder uses the top 15 bits;
 *   - coder: 32-bit range coder with a 33-bit low register and byte-wise carry
 *     propagation (cache byte + pending 0xFF run); the first byte, always 0, is
 *     not written; the flush writes the value with the most trailing zero bits
 *     in the final interval and drops up to 4 trailing zero bytes (the decoder
 *     reads missing bytes as zero).
 *
 *   - temporal mode (a reference: the co-located levels of the previous message
 *     of the same stream): sig, sign and gt flags use their own contexts, further
 *     selected by the reference level (zero, +-1, larger; for sign its class).
 *   - dq mode (levels of the dq quantiser, no reference): the coder follows the
 *     dependent-quantisation state; in states 2 and 3 sig uses a context set of
 *     each state, and gt flags (Q1) a set of their own.
 *
 * Module functions:
 *   encode(levels[, ref[, dq]]) -> bytes   levels, ref (or None): C-contiguous buffers
 *                                         of 4-byte ints; dq: true for dq mode
 *   decode(data, out[, ref[, dq]]) -> None out: writable C-contiguous 4-byte int buffer
 *   quantise(x, step, out) -> bool      x: float32 vector; out: int32 levels (fast path
 *                                       of quant:STEP, see the quantiser section)
 * Errors: ValueError for bad or hostile input, MemoryError.
 * The GIL is released while coding.  Portable C99 (SSE2 where available), no
 * external libraries.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- format parameters (must match cabac.py) ---------------------------- */
#define CABAC_FORMAT_VERSION 2
#define CABAC_G 14            /* number of unary greater-than flags */
#define CABAC_EG_CTX 10       /* context-coded Exp-Golomb prefix bins */
#define CABAC_EG_MAXK 30      /* longest legal Exp-Golomb prefix */
#define CABAC_MAG_MAX (1L << 30)
#define CABAC_N_MAX (1L << 28)
#define CABAC_MAX_OVERRUN 4   /* zero bytes the decoder may read past the end */
#define SHIFT_SIG 11          /* max adaptation shift: window of 2^shift bins */
#define SHIFT_SIGN 9
#define SHIFT_GT 9
#define SHIFT_EG 8
#define FAST_SIGN 6           /* max shift of the fast estimate of dual-rate contexts */
#define FAST_GT 6
#define FAST_EG 5

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define NOINLINE __attribute__((noinline))
#else
#define ALWAYS_INLINE inline
#define NOINLINE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

#define PSTATE_BITS 28
#define PSTATE_ONE (1u << PSTATE_BITS)
#define PROB_BITS 15
#define TOP (1u << 24)

/* A context: a slow estimate p and, in dual-rate contexts (all but sig), a fast
 * one q, each of P(bin == 0) * 2^28; a dual-rate context codes with their mean.
 * Whether a context is dual is known at every call site (the `dual` arguments
 * below are constants there), so single-rate sig bins pay nothing for it. */
typedef struct {
    uint32_t p, q;
    uint32_t left;    /* bins until the shifts grow */
    uint8_t shift;    /* current adaptation shift of p */
    uint8_t fshift;   /* of q: min(shift, fastmax) */
    uint8_t maxshift;
    uint8_t fastmax;  /* 0 in single-rate contexts */
} ctx_t;

enum { N_SIG = 9, N_SIGN = 3, N_GT = 2 * CABAC_G, N_EG = CABAC_EG_CTX,
       N_TSIG = 3 * N_SIG, N_TSIGN = 3 * N_SIGN, N_TGT = 3 * N_GT, N_DSIG = 2 * N_SIG };

/* dq mode: the state after a level of parity p in state s (ALGORITHMS.md, dependent
 * quantisation); states 2 and 3 read levels with Q1 */
static const uint8_t DQ_NEXT[4][2] = {{0, 2}, {2, 0}, {1, 3}, {3, 1}};

typedef struct {
    ctx_t sig[N_SIG];
    ctx_t sign[N_SIGN];
    ctx_t gt[N_GT];
    ctx_t eg[N_EG];
    ctx_t tsig[N_TSIG];   /* temporal: by reference magnitude class, then as sig */
    ctx_t tsign[N_TSIGN]; /* temporal: by reference sign class, then as sign */
    ctx_t tgt[N_TGT];     /* temporal: by reference magnitude class, then as gt */
    ctx_t dsig[N_DSIG];   /* dq mode: sig in states 2 and 3 (states 0 and 1 use sig) */
    ctx_t dgt[N_GT];      /* dq mode: gt under Q1 (Q0 uses gt) */
} models_t;

static void ctx_init(ctx_t *c, uint8_t maxshift, uint8_t fastmax)
{
    c->p = c->q = PSTATE_ONE >> 1;
    c->shift = c->fshift = 1;
    c->left = 2;
    c->maxshift = maxshift;
    c->fastmax = fastmax;
}

static void models_init(models_t *m)
{
    int i;
    for (i = 0; i < N_SIG; i++) ctx_init(&m->sig[i], SHIFT_SIG, 0);
    for (i = 0; i < N_SIGN; i++) ctx_init(&m->sign[i], SHIFT_SIGN, FAST_SIGN);
    for (i = 0; i < N_GT; i++) ctx_init(&m->gt[i], SHIFT_GT, FAST_GT);
    for (i = 0; i < N_EG; i++) ctx_init(&m->eg[i], SHIFT_EG, FAST_EG);
    for (i = 0; i < N_TSIG; i++) ctx_init(&m->tsig[i], SHIFT_SIG, 0);
    for (i = 0; i < N_TSIGN; i++) ctx_init(&m->tsign[i], SHIFT_SIGN, FAST_SIGN);
    for (i = 0; i < N_TGT; i++) ctx_init(&m->tgt[i], SHIFT_GT, FAST_GT);
    for (i = 0; i < N_DSIG; i++) ctx_init(&m->dsig[i], SHIFT_SIG, 0);
    for (i = 0; i < N_GT; i++) ctx_init(&m->dgt[i], SHIFT_GT, FAST_GT);
}

static ALWAYS_INLINE uint32_t ctx_prob(const ctx_t *c, int dual)
{
    uint32_t p = dual ? (c->p + c->q) >> (PSTATE_BITS - PROB_BITS + 1)
                      : c->p >> (PSTATE_BITS - PROB_BITS);
    return p + (p == 0);
}

/* After 2^shift bins the shift grows; at maxshift, left is set out of reach
 * (a context codes at most one bin per level, n <= 2^28). */
static ALWAYS_INLINE void ctx_adapt(ctx_t *c)
{
    if (UNLIKELY(--c->left == 0)) {
        c->shift++;
        c->fshift = (c->shift < c->fastmax) ? c->shift : c->fastmax;
        c->left = (c->shift < c->maxshift) ? 1u << c->shift : 0xFFFFFFFFu;
    }
}

static ALWAYS_INLINE void ctx_update0(ctx_t *c, int dual)
{
    c->p += (PSTATE_ONE - c->p) >> c->shift;
    if (dual) c->q += (PSTATE_ONE - c->q) >> c->fshift;
    ctx_adapt(c);
}

static ALWAYS_INLINE void ctx_update1(ctx_t *c, int dual)
{
    c->p -= c->p >> c->shift;
    if (dual) c->q -= c->q >> c->fshift;
    ctx_adapt(c);
}

/* Either update without a branch; mask: all ones after a 1-bin, 0 after a 0-bin. */
static ALWAYS_INLINE void ctx_update(ctx_t *c, uint32_t mask, int dual)
{
    uint32_t p = c->p, q = c->q;
    c->p = p + (((PSTATE_ONE - p) >> c->shift) & ~mask) - ((p >> c->shift) & mask);
    if (dual) c->q = q + (((PSTATE_ONE - q) >> c->fshift) & ~mask) - ((q >> c->fshift) & mask);
    ctx_adapt(c);
}

/* The contexts of one level: plain, or temporal given its reference level, whose
 * magnitude class (zero, +-1, larger) selects sig and gt, its sign class (zero,
 * negative, positive) the sign context. */
typedef struct { ctx_t *sig, *sign, *gt; } pick_t;

static ALWAYS_INLINE pick_t pick(models_t *m, const int32_t *ref, int st, Py_ssize_t i, int c1,
                                 int c2)
{
    pick_t p;
    if (!ref) {
        if (st >= 2) { /* dq mode, states 2 and 3 */
            p.sig = &m->dsig[(st - 2) * N_SIG + c1 * 3 + c2];
            p.gt = &m->dgt[0];
        } else {
            p.sig = &m->sig[c1 * 3 + c2];
            p.gt = &m->gt[0];
        }
        p.sign = &m->sign[0];
    } else {
        int32_t r = ref[i];
        int t = (r == 0) ? 0 : ((r == 1 || r == -1) ? 1 : 2);
        p.sig = &m->tsig[t * N_SIG + c1 * 3 + c2];
        p.sign = &m->tsign[((r > 0) ? 2 : (r < 0)) * N_SIGN];
        p.gt = &m->tgt[t * N_GT];
    }
    return p;
}

/* ---- encoder --------------------------------------------------------------- */
/* The coder state lives in locals of the coding loop (the helpers below are all
 * inlined, so it stays in registers).  A byte is written as soon as it leaves
 * the 32-bit window of low; a carry out of the window is added to the bytes
 * already written, through any run of 0xFF bytes.  This writes the same digits
 * as the cache byte + pending-0xFF scheme of the format description (whose
 * first, always-zero, byte is the one never written here).  The buffer keeps
 * ENC_SLACK free bytes at the start of every level, more than one level can
 * write (a context bin writes at most 2 bytes, a bypass bin 1), so the bins
 * need no bounds checks. */
typedef struct {
    uint64_t low;   /* 32-bit window plus a carry bit */
    uint32_t range;
    uint8_t *p;     /* next output byte */
} rc_t;

typedef struct { uint8_t *buf, *end; } obuf_t;

#define ENC_SLACK 128

static NOINLINE void enc_carry(uint8_t *buf, uint8_t *p)
{
    while (p > buf && ++*--p == 0) {}
}

static ALWAYS_INLINE void enc_shift(rc_t *r, uint8_t *buf)
{
    if (r->low >> 32) enc_carry(buf, r->p);
    *r->p++ = (uint8_t)(r->low >> 24);
    r->low = (r->low & 0x00FFFFFFu) << 8;
}

static ALWAYS_INLINE void enc_renorm(rc_t *r, uint8_t *buf)
{
    do {
        enc_shift(r, buf);
        r->range <<= 8;
    } while (r->range < TOP);
}

static ALWAYS_INLINE void enc_bin0(rc_t *r, ctx_t *c, uint8_t *buf, int dual)
{
    r->range = (r->range >> PROB_BITS) * ctx_prob(c, dual);
    ctx_update0(c, dual);
    if (UNLIKELY(r->range < TOP)) enc_renorm(r, buf);
}

static ALWAYS_INLINE void enc_bin1(rc_t *r, ctx_t *c, uint8_t *buf, int dual)
{
    uint32_t bound = (r->range >> PROB_BITS) * ctx_prob(c, dual);
    r->low += bound;
    r->range -= bound;
    ctx_update1(c, dual);
    if (UNLIKELY(r->range < TOP)) enc_renorm(r, buf);
}

/* An unpredictable bin, coded without branching on its value.  With b = range
 * >> 15, a 1-bin leaves range - b * p15 and a 0-bin b * p15, which is range
 * with its low 15 bits cleared, less b * (2^15 - p15): one product either way. */
static ALWAYS_INLINE void enc_bin(rc_t *r, ctx_t *c, uint32_t bit, uint8_t *buf, int dual)
{
    uint32_t p15 = ctx_prob(c, dual), mask = 0u - bit, q0 = (1u << PROB_BITS) - p15;
    uint32_t prod = (r->range >> PROB_BITS) * (q0 + ((p15 - q0) & mask));
    r->low += prod & mask;
    r->range = (r->range & (0xFFFF8000u | mask)) - prod;
    ctx_update(c, mask, dual);
    if (UNLIKELY(r->range < TOP)) enc_renorm(r, buf);
}

static ALWAYS_INLINE void enc_bypass(rc_t *r, uint32_t bit, uint8_t *buf)
{
    r->range >>= 1;
    r->low += r->range & (0u - bit);
    if (UNLIKELY(r->range < TOP)) enc_renorm(r, buf);
}

/* The Exp-Golomb remainder x = |v| - G >= 1 (rare: out of the hot loop). */
static NOINLINE rc_t enc_eg(rc_t r, uint8_t *buf, ctx_t *eg, uint32_t x)
{
    int kk = 0, j;
    while ((x >> (kk + 1)) != 0) kk++;
    for (j = 0; j < kk && j < CABAC_EG_CTX; j++) enc_bin1(&r, &eg[j], buf, 1);
    for (; j < kk; j++) enc_bypass(&r, 1, buf);
    if (kk < CABAC_EG_CTX) enc_bin0(&r, &eg[kk], buf, 1);
    else enc_bypass(&r, 0, buf);
    for (j = kk - 1; j >= 0; j--) enc_bypass(&r, (x >> j) & 1, buf);
    return r;
}

/* Room for ENC_SLACK more bytes; buf NULL when out of memory (old buffer freed). */
static NOINLINE obuf_t enc_grow(obuf_t o, size_t pos)
{
    size_t cap = (size_t)(o.end - o.buf), need = pos + ENC_SLACK;
    uint8_t *nb;
    while (cap < need) cap += (cap >> 1) + 64;
    nb = (uint8_t *)realloc(o.buf, cap);
    if (!nb) { free(o.buf); o.buf = o.end = NULL; return o; }
    o.buf = nb;
    o.end = nb + cap;
    return o;
}

/* Writes the value in [low, low + range) with the most trailing zero bits, then
 * drops up to CABAC_MAX_OVERRUN trailing zero bytes; returns the stream length. */
static size_t enc_finish(rc_t r, uint8_t *buf)
{
    uint64_t hi = r.low + r.range;
    int k;
    for (k = 32; k >= 0; k--) {
        uint64_t m = (k == 0) ? 0 : ((1ull << k) - 1);
        uint64_t cand = (r.low + m) & ~m;
        if (cand < hi) { r.low = cand; break; }
    }
    for (k = 0; k < 4; k++) enc_shift(&r, buf);
    for (k = 0; k < CABAC_MAX_OVERRUN && r.p > buf && r.p[-1] == 0; k++) r.p--;
    return (size_t)(r.p - buf);
}

/* Zero levels in a row under one sig context (plain mode, after two zeros):
 * that context stays in registers for the run; returns the first level not coded. */
static ALWAYS_INLINE Py_ssize_t enc_zeros(rc_t *r, uint8_t *buf, ctx_t *c, const int32_t *lv,
                                          Py_ssize_t i, Py_ssize_t stop)
{
    ctx_t k = *c;
    for (; i < stop && lv[i] == 0; i++) enc_bin0(r, &k, buf, 0);
    *c = k;
    return i;
}

/* Codes the levels i.. before stop (the buffer has room for them) and returns
 * stop, or the index of a level out of range.  cls: the classes of the
 * previous level and the one before it (the sig context), and the dq state. */
static ALWAYS_INLINE Py_ssize_t enc_block(rc_t *r, uint8_t *buf, models_t *m, const int32_t *lv,
                                          const int32_t *ref, int dq, Py_ssize_t i,
                                          Py_ssize_t stop, int *cls)
{
    int c1 = cls[0], c2 = cls[1], st = cls[2];
    for (; i < stop; i++) {
        int32_t v = lv[i];
        uint32_t mag, s;
        ctx_t *g, *ge;
        pick_t pk;
        if (UNLIKELY((uint32_t)v + (uint32_t)CABAC_MAG_MAX > 2u * (uint32_t)CABAC_MAG_MAX)) break;
        pk = pick(m, ref, st, i, c1, c2);
        c2 = c1;
        if (v == 0) {
            enc_bin0(r, pk.sig, buf, 0);
            c1 = 0;
            if (dq) st = DQ_NEXT[st][0];
            else if (!ref && c2 == 0) i = enc_zeros(r, buf, m->sig, lv, i + 1, stop) - 1;
            continue;
        }
        enc_bin1(r, pk.sig, buf, 0);
        s = (uint32_t)v >> 31;
        enc_bin(r, &pk.sign[c2], s, buf, 1);
        c1 = 2 - (int)s;
        mag = s ? 0u - (uint32_t)v : (uint32_t)v;
        g = pk.gt + s * CABAC_G;
        ge = g + ((mag - 1 < CABAC_G) ? mag - 1 : CABAC_G);
        for (; g < ge; g++) enc_bin1(r, g, buf, 1);
        if (LIKELY(mag <= CABAC_G)) enc_bin0(r, g, buf, 1);
        else *r = enc_eg(*r, buf, m->eg, mag - CABAC_G);
        if (dq) st = DQ_NEXT[st][v & 1];
    }
    cls[0] = c1;
    cls[1] = c2;
    cls[2] = st;
    return i;
}

/* Codes n levels into *o (grown as needed); returns 0, 1 on a level out of
 * range (its index in *bad) or 2 on out of memory (o->buf then NULL). */
static ALWAYS_INLINE int encode_loop(const int32_t *lv, const int32_t *ref, int dq, Py_ssize_t n,
                                     obuf_t *o, size_t *len, Py_ssize_t *bad)
{
    models_t m;
    obuf_t ob = *o;
    rc_t r;
    Py_ssize_t i = 0;
    int cls[3] = {0, 0, 0};
    models_init(&m);
    r.low = 0;
    r.range = 0xFFFFFFFFu;
    r.p = ob.buf;
    for (;;) {
        size_t room = (size_t)(ob.end - r.p), pos = (size_t)(r.p - ob.buf);
        Py_ssize_t stop;
        if (room < ENC_SLACK) {
            *o = ob = enc_grow(ob, pos);
            if (!ob.buf) return 2;
            r.p = ob.buf + pos;
            continue;
        }
        if (i == n) break;
        stop = (n - i > (Py_ssize_t)(room / ENC_SLACK)) ? i + (Py_ssize_t)(room / ENC_SLACK) : n;
        i = enc_block(&r, ob.buf, &m, lv, ref, dq, i, stop, cls);
        if (i < stop) { *bad = i; *o = ob; return 1; }
    }
    *o = ob;
    *len = enc_finish(r, ob.buf);
    return 0;
}

/* A reference selects temporal mode, which takes precedence over dq mode. */
static int encode_all(const int32_t *lv, const int32_t *ref, int dq, Py_ssize_t n, obuf_t *o,
                      size_t *len, Py_ssize_t *bad)
{
    if (ref) return encode_loop(lv, ref, 0, n, o, len, bad);
    return dq ? encode_loop(lv, NULL, 1, n, o, len, bad) : encode_loop(lv, NULL, 0, n, o, len, bad);
}

/* ---- decoder --------------------------------------------------------------- */
typedef struct {
    uint32_t range, code;
    const uint8_t *data;
    size_t len, pos; /* pos may exceed len: missing bytes read as zero */
} dec_t;

static inline void dec_byte(dec_t *d)
{
    uint32_t b = (d->pos < d->len) ? d->data[d->pos] : 0;
    d->pos++;
    d->code = (d->code << 8) | b;
    d->range <<= 8;
}

static ALWAYS_INLINE int dec_bin(dec_t *d, ctx_t *c, int dual)
{
    uint32_t bound = (d->range >> PROB_BITS) * ctx_prob(c, dual);
    int bit;
    if (d->code < bound) {
        d->range = bound;
        ctx_update0(c, dual);
        bit = 0;
    } else {
        d->code -= bound;
        d->range -= bound;
        ctx_update1(c, dual);
        bit = 1;
    }
    while (d->range < TOP) dec_byte(d);
    return bit;
}

/* An unpredictable bin whose value steers no branch (the sign): no branch on it. */
static ALWAYS_INLINE uint32_t dec_bin_flat(dec_t *d, ctx_t *c, int dual)
{
    uint32_t bound = (d->range >> PROB_BITS) * ctx_prob(c, dual);
    uint32_t bit = d->code >= bound, mask = 0u - bit;
    d->code -= bound & mask;
    d->range = bound + ((d->range - 2 * bound) & mask);
    ctx_update(c, mask, dual);
    while (d->range < TOP) dec_byte(d);
    return bit;
}

static inline int dec_bypass(dec_t *d)
{
    int bit;
    d->range >>= 1;
    bit = d->code >= d->range;
    if (bit) d->code -= d->range;
    if (d->range < TOP) dec_byte(d);
    return bit;
}

/* Zero levels in a row under one sig context (plain mode, after two zeros):
 * that context stays in registers for the run, which stops before a 1-bin;
 * returns the first level not decoded. */
static ALWAYS_INLINE Py_ssize_t dec_zeros(dec_t *d, ctx_t *c, int32_t *out, Py_ssize_t i,
                                          Py_ssize_t n)
{
    ctx_t k = *c;
    for (; i < n; i++) {
        uint32_t bound = (d->range >> PROB_BITS) * ctx_prob(&k, 0);
        if (d->code >= bound) break;
        d->range = bound;
        ctx_update0(&k, 0);
        while (d->range < TOP) dec_byte(d);
        out[i] = 0;
    }
    *c = k;
    return i;
}

/* Returns NULL on success or a static error message. */
static const char *decode_all(const uint8_t *data, size_t len, int32_t *out,
                              const int32_t *ref, int dq, Py_ssize_t n)
{
    models_t m;
    dec_t d;
    Py_ssize_t i;
    int c1 = 0, c2 = 0, k, st = 0;
    const size_t limit = len + CABAC_MAX_OVERRUN;
    dq = dq && !ref;
    models_init(&m);
    d.data = data;
    d.len = len;
    d.pos = 0;
    d.code = 0;
    d.range = 0xFFFFFFFFu;
    for (k = 0; k < 4; k++) {
        uint32_t b = (d.pos < len) ? data[d.pos] : 0;
        d.pos++;
        d.code = (d.code << 8) | b;
    }
    if (d.code >= d.range) return "corrupt stream: bad first code word";
    for (i = 0; i < n; i++) {
        int s, j;
        uint32_t mag;
        pick_t p = pick(&m, ref, st, i, c1, c2);
        if (!dec_bin(&d, p.sig, 0)) {
            out[i] = 0;
            c2 = c1;
            c1 = 0;
            if (!ref && c2 == 0 && !dq) i = dec_zeros(&d, m.sig, out, i + 1, n) - 1;
            else if (dq) st = DQ_NEXT[st][0];
            continue;
        }
        c2 = c1;
        /* plain signs are coin flips; temporal ones follow the reference */
        s = ref ? dec_bin(&d, &p.sign[c2], 1) : (int)dec_bin_flat(&d, &p.sign[c2], 1);
        c1 = 1 + !s;
        mag = 1;
        {
            ctx_t *g = &p.gt[s * CABAC_G];
            for (j = 0; j < CABAC_G; j++) {
                if (!dec_bin(&d, &g[j], 1)) break;
                mag++;
            }
        }
        if (mag > CABAC_G) {
            uint32_t x;
            int kk = 0;
            for (;;) {
                int b = (kk < CABAC_EG_CTX) ? dec_bin(&d, &m.eg[kk], 1) : dec_bypass(&d);
                if (!b) break;
                if (++kk > CABAC_EG_MAXK) return "corrupt stream: Exp-Golomb prefix too long";
            }
            x = 1;
            for (j = 0; j < kk; j++) x = (x << 1) | (uint32_t)dec_bypass(&d);
            if ((uint64_t)x + CABAC_G > (uint64_t)CABAC_MAG_MAX)
                return "corrupt stream: level out of range";
            mag = x + CABAC_G;
        }
        out[i] = s ? -(int32_t)mag : (int32_t)mag;
        if (dq) st = DQ_NEXT[st][mag & 1];
        if (d.pos > limit) return "truncated or corrupt stream: read past the end";
    }
    if (d.pos > limit) return "truncated or corrupt stream: read past the end";
    if (d.pos < len) return "corrupt stream: trailing bytes after the coded levels";
    if (d.pos < limit && len > 0 && data[len - 1] == 0)
        return "corrupt stream: non-canonical termination";
    return NULL;
}


/* ---- quantiser ------------------------------------------------------------ */
/* out[i] = rint(x[i] / step): the float64 quotient rounded half to even, as
 * numpy's divide + rint compute it (adding and subtracting 1.5 * 2^52 rounds
 * |y| < 2^51 to an integer in the default rounding mode); a power-of-two step
 * multiplies by its exact reciprocal, which gives the same quotient.  Returns 0
 * when some quotient is not finite or rounds to |level| >= 2^30 (out is then
 * partly written), or where float64 arithmetic is not plain IEEE double. */
#define QUANT_LIM 1073741823.5         /* rint(y) < 2^30 iff |y| < QUANT_LIM */
#define QUANT_MAGIC 6755399441055744.0 /* 1.5 * 2^52 */

#if defined(__SSE2__) && FLT_EVAL_METHOD == 0
/* Two quotients, checked into *ok and rounded to int32 (in the low half). */
static ALWAYS_INLINE __m128i quant2(__m128d y, __m128d *ok)
{
    const __m128d absmask = _mm_castsi128_pd(_mm_set1_epi64x(0x7FFFFFFFFFFFFFFFLL));
    const __m128d magic = _mm_set1_pd(QUANT_MAGIC);
    __m128d in = _mm_cmplt_pd(_mm_and_pd(y, absmask), _mm_set1_pd(QUANT_LIM));
    *ok = _mm_and_pd(*ok, in);
    y = _mm_and_pd(y, in); /* out-of-range lanes: 0, converted safely */
    return _mm_cvttpd_epi32(_mm_sub_pd(_mm_add_pd(y, magic), magic));
}
#endif

/* A power of two far from the exponent limits: its reciprocal is exact. */
static int exact_reciprocal(double step)
{
    uint64_t b;
    unsigned ex;
    memcpy(&b, &step, sizeof b);
    ex = (unsigned)(b >> 52) & 0x7FFu;
    return (b & 0xFFFFFFFFFFFFFull) == 0 && ex > 100 && ex < 1900;
}

static int quantise_all(const float *x, Py_ssize_t n, double step, int32_t *out)
{
    int mul = exact_reciprocal(step);
    double inv = 1.0 / step;
    Py_ssize_t i = 0;
#if defined(__SSE2__) && FLT_EVAL_METHOD == 0
    __m128d ok = _mm_castsi128_pd(_mm_set1_epi32(-1)), s = _mm_set1_pd(mul ? inv : step);
    for (; i + 4 <= n; i += 4) {
        __m128 f = _mm_loadu_ps(x + i);
        __m128d a = _mm_cvtps_pd(f), b = _mm_cvtps_pd(_mm_movehl_ps(f, f));
        a = mul ? _mm_mul_pd(a, s) : _mm_div_pd(a, s);
        b = mul ? _mm_mul_pd(b, s) : _mm_div_pd(b, s);
        _mm_storeu_si128((__m128i *)(out + i), _mm_unpacklo_epi64(quant2(a, &ok), quant2(b, &ok)));
    }
    if (_mm_movemask_pd(ok) != 3) return 0;
#endif
#if FLT_EVAL_METHOD == 0
    for (; i < n; i++) {
        double y = mul ? (double)x[i] * inv : (double)x[i] / step;
        if (!(fabs(y) < QUANT_LIM)) return 0;
        out[i] = (int32_t)((y + QUANT_MAGIC) - QUANT_MAGIC);
    }
    return 1;
#else
    (void)inv; (void)mul; (void)x; (void)out;
    return n == 0;
#endif
}

/* ---- Python bindings ---------------------------------------------------- */
static int check_int32_buffer(Py_buffer *b, const char *what)
{
    if (b->itemsize != 4 || b->ndim > 1) {
        PyErr_Format(PyExc_ValueError, "%s must be a 1-D buffer of 4-byte integers", what);
        return 0;
    }
    if (b->format && !(strcmp(b->format, "i") == 0 || strcmp(b->format, "=i") == 0 ||
                       strcmp(b->format, "<i") == 0 || strcmp(b->format, "l") == 0 ||
                       strcmp(b->format, "=l") == 0 || strcmp(b->format, "<l") == 0)) {
        PyErr_Format(PyExc_ValueError, "%s must hold int32 values (format '%s')", what, b->format);
        return 0;
    }
    return 1;
}

/* An optional reference buffer of exactly n int32 levels; 0 and a Python error if bad. */
static int get_ref(PyObject *a_ref, Py_buffer *ref, Py_ssize_t n)
{
    if (a_ref == NULL || a_ref == Py_None) return 1;
    if (PyObject_GetBuffer(a_ref, ref, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return 0;
    if (!check_int32_buffer(ref, "ref")) { PyBuffer_Release(ref); ref->obj = NULL; return 0; }
    if (ref->len / 4 != n) {
        PyErr_Format(PyExc_ValueError, "ref holds %zd levels, expected %zd", ref->len / 4, n);
        PyBuffer_Release(ref);
        ref->obj = NULL;
        return 0;
    }
    return 1;
}

static PyObject *py_encode(PyObject *self, PyObject *args)
{
    Py_buffer view, ref;
    obuf_t o;
    size_t len = 0, cap;
    Py_ssize_t n, bad = -1;
    int rc;
    PyObject *res, *a_lv, *a_ref = NULL;
    int dq = 0;
    (void)self;
    memset(&ref, 0, sizeof ref);
    if (!PyArg_ParseTuple(args, "O|Op:encode", &a_lv, &a_ref, &dq)) return NULL;
    if (PyObject_GetBuffer(a_lv, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (!check_int32_buffer(&view, "levels")) { PyBuffer_Release(&view); return NULL; }
    n = view.len / 4;
    if (n > CABAC_N_MAX) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "too many levels: %zd > %ld", n, (long)CABAC_N_MAX);
        return NULL;
    }
    if (!get_ref(a_ref, &ref, n)) { PyBuffer_Release(&view); return NULL; }
    cap = (size_t)n / 2 + 64 + ENC_SLACK;
    o.buf = (uint8_t *)malloc(cap);
    o.end = o.buf ? o.buf + cap : NULL;
    rc = o.buf ? 0 : 2;
    if (o.buf) {
        Py_BEGIN_ALLOW_THREADS
        rc = encode_all((const int32_t *)view.buf, ref.obj ? (const int32_t *)ref.buf : NULL,
                        dq, n, &o, &len, &bad);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    if (ref.obj) PyBuffer_Release(&ref);
    if (rc == 0) res = PyBytes_FromStringAndSize((const char *)o.buf, (Py_ssize_t)len);
    else if (rc == 1)
        res = PyErr_Format(PyExc_ValueError, "level at index %zd is outside +-2**30", bad);
    else res = PyErr_NoMemory();
    free(o.buf);
    return res;
}

static PyObject *py_decode(PyObject *self, PyObject *args)
{
    Py_buffer data, out, ref;
    const char *err;
    Py_ssize_t n;
    PyObject *a_data, *a_out, *a_ref = NULL;
    int dq = 0;
    (void)self;
    memset(&ref, 0, sizeof ref);
    if (!PyArg_ParseTuple(args, "OO|Op:decode", &a_data, &a_out, &a_ref, &dq)) return NULL;
    if (PyObject_GetBuffer(a_data, &data, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(a_out, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (!check_int32_buffer(&out, "out")) goto fail;
    n = out.len / 4;
    if (n > CABAC_N_MAX) {
        PyErr_Format(PyExc_ValueError, "too many levels: %zd > %ld", n, (long)CABAC_N_MAX);
        goto fail;
    }
    if ((uint64_t)n > (((uint64_t)data.len + 8) << 18)) {
        PyErr_Format(PyExc_ValueError, "%zd levels cannot be coded in %zd bytes", n, data.len);
        goto fail;
    }
    if (!get_ref(a_ref, &ref, n)) goto fail;
    Py_BEGIN_ALLOW_THREADS
    err = decode_all((const uint8_t *)data.buf, (size_t)data.len, (int32_t *)out.buf,
                     ref.obj ? (const int32_t *)ref.buf : NULL, dq, n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (ref.obj) PyBuffer_Release(&ref);
    if (err) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return NULL;
}

static PyObject *py_quantise(PyObject *self, PyObject *args)
{
    Py_buffer x, out;
    PyObject *a_x, *a_out;
    double step;
    int ok = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OdO:quantise", &a_x, &step, &a_out)) return NULL;
    if (!(step > 0.0 && step < HUGE_VAL)) {
        PyErr_SetString(PyExc_ValueError, "step must be positive and finite");
        return NULL;
    }
    if (PyObject_GetBuffer(a_x, &x, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(a_out, &out, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (x.itemsize != 4 || x.ndim > 1 || !x.format || strcmp(x.format, "f") != 0 ||
        !check_int32_buffer(&out, "out") || x.len != out.len) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "x must be a float32 vector as long as out");
    } else {
        Py_BEGIN_ALLOW_THREADS
        ok = quantise_all((const float *)x.buf, x.len / 4, step, (int32_t *)out.buf);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    if (PyErr_Occurred()) return NULL;
    return PyBool_FromLong(ok);
}

static PyMethodDef cabac_methods[] = {
    {"encode", py_encode, METH_VARARGS,
     "encode(levels[, ref]) -> bytes\n\nCode a C-contiguous buffer of int32 levels (|v| <= 2**30);"
     " with ref (as many int32 levels), in temporal mode."},
    {"decode", py_decode, METH_VARARGS,
     "decode(data, out[, ref]) -> None\n\nDecode len(out) levels from data into the writable int32"
     " buffer out; with ref, in temporal mode."},
    {"quantise", py_quantise, METH_VARARGS,
     "quantise(x, step, out) -> bool\n\nout[i] = rint(x[i] / step) (float64 quotient, ties to even)"
     " for a float32 vector x; False if some level is not finite or not below 2**30 in magnitude."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef cabac_module = {
    PyModuleDef_HEAD_INIT, "_cabac",
    "C core of p2pfl's DeepCABAC-style level coder (see p2pfl.compression.cabac).", -1,
    cabac_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__cabac(void)
{
    PyObject *mod = PyModule_Create(&cabac_module);
    if (!mod) return NULL;
    if (PyModule_AddIntConstant(mod, "G", CABAC_G) < 0 ||
        PyModule_AddIntConstant(mod, "EG_CTX", CABAC_EG_CTX) < 0 ||
        PyModule_AddIntConstant(mod, "SHIFT_SIG", SHIFT_SIG) < 0 ||
        PyModule_AddIntConstant(mod, "FAST_SIGN", FAST_SIGN) < 0 ||
        PyModule_AddIntConstant(mod, "DQ_CONTEXTS", 1) < 0 ||
        PyModule_AddObject(mod, "DQ_NEXT", Py_BuildValue(
            "((ii)(ii)(ii)(ii))", DQ_NEXT[0][0], DQ_NEXT[0][1], DQ_NEXT[1][0], DQ_NEXT[1][1],
            DQ_NEXT[2][0], DQ_NEXT[2][1], DQ_NEXT[3][0], DQ_NEXT[3][1])) < 0 ||
        PyModule_AddIntConstant(mod, "FAST_GT", FAST_GT) < 0 ||
        PyModule_AddIntConstant(mod, "FAST_EG", FAST_EG) < 0 ||
        PyModule_AddIntConstant(mod, "SHIFT_SIGN", SHIFT_SIGN) < 0 ||
        PyModule_AddIntConstant(mod, "SHIFT_GT", SHIFT_GT) < 0 ||
        PyModule_AddIntConstant(mod, "SHIFT_EG", SHIFT_EG) < 0 ||
        PyModule_AddIntConstant(mod, "FORMAT_VERSION", CABAC_FORMAT_VERSION) < 0 ||
        PyModule_AddIntConstant(mod, "TEMPORAL", 1) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
