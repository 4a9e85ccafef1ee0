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
 *     the coder uses its top 15 bits;
 *   - coder: 32-bit range coder with a 33-bit low register and byte-wise carry
 *     propagation (cache byte + pending 0xFF run); the first byte, always 0, is
 *     not written; the flush writes the value with the most trailing zero bits
 *     in the final interval and drops up to 4 trailing zero bytes (the decoder
 *     reads missing bytes as zero).
 *
 *   - temporal mode (a reference: the co-located levels of the previous message
 *     of the same stream): sig, sign and gt flags use their own contexts, further
 *     selected by the reference level (zero, +-1, larger; for sign its class).
 *
 * Module functions:
 *   encode(levels[, ref]) -> bytes      levels, ref: C-contiguous buffers of 4-byte ints
 *   decode(data, out[, ref]) -> None    out: writable C-contiguous 4-byte int buffer
 * Errors: ValueError for bad or hostile input, MemoryError.
 * The GIL is released while coding.  Portable C99, no external libraries.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- format parameters (must match cabac.py) ---------------------------- */
#define CABAC_FORMAT_VERSION 1
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

#define PSTATE_BITS 28
#define PSTATE_ONE (1u << PSTATE_BITS)
#define PROB_BITS 15
#define TOP (1u << 24)

typedef struct {
    uint32_t p;     /* P(bin == 0) * 2^28 */
    uint32_t left;  /* bins until the shift grows */
    uint32_t shift; /* current adaptation shift */
    uint32_t maxshift;
} ctx_t;

enum { N_SIG = 9, N_SIGN = 3, N_GT = 2 * CABAC_G, N_EG = CABAC_EG_CTX,
       N_TSIG = 3 * N_SIG, N_TSIGN = 3 * N_SIGN, N_TGT = 3 * N_GT };

typedef struct {
    ctx_t sig[N_SIG];
    ctx_t sign[N_SIGN];
    ctx_t gt[N_GT];
    ctx_t eg[N_EG];
    ctx_t tsig[N_TSIG];   /* temporal: by reference magnitude class, then as sig */
    ctx_t tsign[N_TSIGN]; /* temporal: by reference sign class, then as sign */
    ctx_t tgt[N_TGT];     /* temporal: by reference magnitude class, then as gt */
} models_t;

static void ctx_init(ctx_t *c, uint32_t maxshift)
{
    c->p = PSTATE_ONE >> 1;
    c->shift = 1;
    c->left = 2;
    c->maxshift = maxshift;
}

static void models_init(models_t *m)
{
    int i;
    for (i = 0; i < N_SIG; i++) ctx_init(&m->sig[i], SHIFT_SIG);
    for (i = 0; i < N_SIGN; i++) ctx_init(&m->sign[i], SHIFT_SIGN);
    for (i = 0; i < N_GT; i++) ctx_init(&m->gt[i], SHIFT_GT);
    for (i = 0; i < N_EG; i++) ctx_init(&m->eg[i], SHIFT_EG);
    for (i = 0; i < N_TSIG; i++) ctx_init(&m->tsig[i], SHIFT_SIG);
    for (i = 0; i < N_TSIGN; i++) ctx_init(&m->tsign[i], SHIFT_SIGN);
    for (i = 0; i < N_TGT; i++) ctx_init(&m->tgt[i], SHIFT_GT);
}

static inline uint32_t ctx_prob(const ctx_t *c)
{
    uint32_t p = c->p >> (PSTATE_BITS - PROB_BITS);
    return p + (p == 0);
}

static inline void ctx_update(ctx_t *c, int bit)
{
    if (bit)
        c->p -= c->p >> c->shift;
    else
        c->p += (PSTATE_ONE - c->p) >> c->shift;
    if (c->shift < c->maxshift && --c->left == 0) {
        c->shift++;
        c->left = 1u << c->shift;
    }
}

static inline int level_class(int32_t v) { return (v > 0) ? 2 : (v < 0); }

/* Magnitude class of a reference level: 0 (zero), 1 (+-1), 2 (larger). */
static inline int ref_class(int32_t r) { return (r == 0) ? 0 : ((r == 1 || r == -1) ? 1 : 2); }

/* The contexts of one level: plain, or temporal given its reference level. */
typedef struct { ctx_t *sig, *sign, *gt; } pick_t;

static inline pick_t pick(models_t *m, const int32_t *ref, Py_ssize_t i, int c1, int c2)
{
    pick_t p;
    if (!ref) {
        p.sig = &m->sig[c1 * 3 + c2];
        p.sign = &m->sign[0];
        p.gt = &m->gt[0];
    } else {
        int t = ref_class(ref[i]);
        p.sig = &m->tsig[t * N_SIG + c1 * 3 + c2];
        p.sign = &m->tsign[level_class(ref[i]) * N_SIGN];
        p.gt = &m->tgt[t * N_GT];
    }
    return p;
}

/* ---- encoder --------------------------------------------------------------- */
typedef struct {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    int has_cache;
    size_t pending; /* 0xFF bytes waiting for a possible carry */
    uint8_t *buf;
    size_t pos, cap;
    int oom;
} enc_t;

static int enc_reserve(enc_t *e, size_t extra)
{
    size_t need, ncap;
    uint8_t *nb;
    if (e->oom) return 0;
    need = e->pos + extra;
    if (need <= e->cap) return 1;
    ncap = e->cap ? e->cap : 64;
    while (ncap < need) ncap += ncap >> 1;
    nb = (uint8_t *)realloc(e->buf, ncap);
    if (!nb) { e->oom = 1; return 0; }
    e->buf = nb;
    e->cap = ncap;
    return 1;
}

static void enc_shift_low(enc_t *e)
{
    if (e->low < 0xFF000000u || e->low >= 0x100000000ull) {
        uint8_t carry = (uint8_t)(e->low >> 32);
        if (enc_reserve(e, e->pending + 1)) {
            if (e->has_cache) e->buf[e->pos++] = (uint8_t)(e->cache + carry);
            while (e->pending) { e->buf[e->pos++] = (uint8_t)(0xFF + carry); e->pending--; }
        }
        e->pending = 0;
        e->cache = (uint8_t)(e->low >> 24);
        e->has_cache = 1;
    } else {
        e->pending++;
    }
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static inline void enc_bin(enc_t *e, ctx_t *c, int bit)
{
    uint32_t bound = (e->range >> PROB_BITS) * ctx_prob(c);
    if (bit) {
        e->low += bound;
        e->range -= bound;
    } else {
        e->range = bound;
    }
    ctx_update(c, bit);
    while (e->range < TOP) {
        e->range <<= 8;
        enc_shift_low(e);
    }
}

static inline void enc_bypass(enc_t *e, int bit)
{
    e->range >>= 1;
    if (bit) e->low += e->range;
    if (e->range < TOP) {
        e->range <<= 8;
        enc_shift_low(e);
    }
}

static void enc_finish(enc_t *e)
{
    /* pick the value in [low, low + range) with the most trailing zero bits */
    uint64_t hi = e->low + e->range, v = e->low;
    int k, i, trimmed;
    for (k = 32; k >= 0; k--) {
        uint64_t m = (k == 0) ? 0 : ((1ull << k) - 1);
        uint64_t cand = (e->low + m) & ~m;
        if (cand < hi) { v = cand; break; }
    }
    e->low = v;
    for (i = 0; i < 5; i++) enc_shift_low(e);
    if (e->oom) return;
    trimmed = 0;
    while (trimmed < CABAC_MAX_OVERRUN && e->pos > 0 && e->buf[e->pos - 1] == 0) {
        e->pos--;
        trimmed++;
    }
}

/* Returns 0 on success, 1 on a level out of range, 2 on out of memory. */
static int encode_all(const int32_t *lv, const int32_t *ref, Py_ssize_t n, enc_t *e,
                      Py_ssize_t *bad)
{
    models_t m;
    Py_ssize_t i;
    int c1 = 0, c2 = 0;
    models_init(&m);
    e->low = 0;
    e->range = 0xFFFFFFFFu;
    e->cache = 0;
    e->has_cache = 0;
    e->pending = 0;
    for (i = 0; i < n; i++) {
        int32_t v = lv[i];
        uint32_t mag;
        int s, j;
        pick_t p;
        if (v > CABAC_MAG_MAX || v < -CABAC_MAG_MAX) { *bad = i; return 1; }
        p = pick(&m, ref, i, c1, c2);
        enc_bin(e, p.sig, v != 0);
        c2 = c1;
        if (v == 0) { c1 = 0; continue; }
        s = v < 0;
        enc_bin(e, &p.sign[c2], s);
        c1 = 1 + !s;
        mag = s ? (uint32_t)(-(int64_t)v) : (uint32_t)v;
        {
            ctx_t *g = &p.gt[s * CABAC_G];
            for (j = 0; j < CABAC_G; j++) {
                int b = mag > (uint32_t)(j + 1);
                enc_bin(e, &g[j], b);
                if (!b) break;
            }
        }
        if (mag > CABAC_G) {
            uint32_t x = mag - CABAC_G; /* remainder + 1 >= 1 */
            int kk = 0;
            while ((x >> (kk + 1)) != 0) kk++;
            for (j = 0; j <= kk; j++) {
                int b = j < kk;
                if (j < CABAC_EG_CTX) enc_bin(e, &m.eg[j], b);
                else enc_bypass(e, b);
            }
            for (j = kk - 1; j >= 0; j--) enc_bypass(e, (x >> j) & 1);
        }
        if (e->oom) return 2;
    }
    enc_finish(e);
    return e->oom ? 2 : 0;
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

static inline int dec_bin(dec_t *d, ctx_t *c)
{
    uint32_t bound = (d->range >> PROB_BITS) * ctx_prob(c);
    int bit;
    if (d->code < bound) {
        d->range = bound;
        bit = 0;
    } else {
        d->code -= bound;
        d->range -= bound;
        bit = 1;
    }
    ctx_update(c, bit);
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

/* Returns NULL on success or a static error message. */
static const char *decode_all(const uint8_t *data, size_t len, int32_t *out,
                              const int32_t *ref, Py_ssize_t n)
{
    models_t m;
    dec_t d;
    Py_ssize_t i;
    int c1 = 0, c2 = 0, k;
    const size_t limit = len + CABAC_MAX_OVERRUN;
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
        pick_t p = pick(&m, ref, i, c1, c2);
        if (!dec_bin(&d, p.sig)) {
            out[i] = 0;
            c2 = c1;
            c1 = 0;
            continue;
        }
        c2 = c1;
        s = dec_bin(&d, &p.sign[c2]);
        c1 = 1 + !s;
        mag = 1;
        {
            ctx_t *g = &p.gt[s * CABAC_G];
            for (j = 0; j < CABAC_G; j++) {
                if (!dec_bin(&d, &g[j])) break;
                mag++;
            }
        }
        if (mag > CABAC_G) {
            uint32_t x;
            int kk = 0;
            for (;;) {
                int b = (kk < CABAC_EG_CTX) ? dec_bin(&d, &m.eg[kk]) : dec_bypass(&d);
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
        if (d.pos > limit) return "truncated or corrupt stream: read past the end";
    }
    if (d.pos > limit) return "truncated or corrupt stream: read past the end";
    if (d.pos < len) return "corrupt stream: trailing bytes after the coded levels";
    if (d.pos < limit && len > 0 && data[len - 1] == 0)
        return "corrupt stream: non-canonical termination";
    return NULL;
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
    enc_t e;
    Py_ssize_t n, bad = -1;
    int rc;
    PyObject *res;
    (void)self;
    PyObject *a_lv, *a_ref = NULL;
    memset(&ref, 0, sizeof ref);
    if (!PyArg_ParseTuple(args, "O|O:encode", &a_lv, &a_ref)) return NULL;
    if (PyObject_GetBuffer(a_lv, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (!check_int32_buffer(&view, "levels")) { PyBuffer_Release(&view); return NULL; }
    n = view.len / 4;
    if (n > CABAC_N_MAX) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "too many levels: %zd > %ld", n, (long)CABAC_N_MAX);
        return NULL;
    }
    if (!get_ref(a_ref, &ref, n)) { PyBuffer_Release(&view); return NULL; }
    memset(&e, 0, sizeof e);
    e.cap = (size_t)n / 2 + 64;
    e.buf = (uint8_t *)malloc(e.cap);
    if (!e.buf) {
        PyBuffer_Release(&view);
        if (ref.obj) PyBuffer_Release(&ref);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    rc = encode_all((const int32_t *)view.buf, ref.obj ? (const int32_t *)ref.buf : NULL, n,
                    &e, &bad);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (ref.obj) PyBuffer_Release(&ref);
    if (rc == 1) {
        free(e.buf);
        PyErr_Format(PyExc_ValueError, "level at index %zd is outside +-2**30", bad);
        return NULL;
    }
    if (rc == 2) { free(e.buf); return PyErr_NoMemory(); }
    res = PyBytes_FromStringAndSize((const char *)e.buf, (Py_ssize_t)e.pos);
    free(e.buf);
    return res;
}

static PyObject *py_decode(PyObject *self, PyObject *args)
{
    Py_buffer data, out, ref;
    const char *err;
    Py_ssize_t n;
    PyObject *a_data, *a_out, *a_ref = NULL;
    (void)self;
    memset(&ref, 0, sizeof ref);
    if (!PyArg_ParseTuple(args, "OO|O:decode", &a_data, &a_out, &a_ref)) return NULL;
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
                     ref.obj ? (const int32_t *)ref.buf : NULL, n);
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

static PyMethodDef cabac_methods[] = {
    {"encode", py_encode, METH_VARARGS,
     "encode(levels[, ref]) -> bytes\n\nCode a C-contiguous buffer of int32 levels (|v| <= 2**30);"
     " with ref (as many int32 levels), in temporal mode."},
    {"decode", py_decode, METH_VARARGS,
     "decode(data, out[, ref]) -> None\n\nDecode len(out) levels from data into the writable int32"
     " buffer out; with ref, in temporal mode."},
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
