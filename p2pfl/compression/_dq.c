/*
 * _dq.c -- C core of p2pfl's dependent (trellis-coded) quantiser, dq:STEP.
 *
 * Written for p2pfl from the description in ALGORITHMS.md ("Entropy coding
 * extensions", dependent quantisation, as in NNC and VVC): two interleaved
 * quantisers, Q0 on the even multiples of the step and Q1 on the odd ones plus
 * zero, and a 4-state machine driven by the parity of each level that selects
 * the quantiser of the next one.  The encoder chooses the levels by a Viterbi
 * search over the states.  p2pfl/compression/dq.py has the pure-Python mirror
 * and the description; keep the two in step.
 *
 * In units of the step, level k reconstructs to 2k under Q0 (states 0, 1) and
 * to 2k - sgn(k) under Q1 (states 2, 3); the next state is NEXT[state][k & 1],
 * and the first level is read in state 0.
 *
 * Module functions:
 *   trellis(x, step, lam, rates, mmax, levels, cls) -> None
 *       x: float32 values; levels: int32 out; cls: uint8 out (0 for Q0, 1 for Q1);
 *       rates: float64, 2 * (mmax + 1) bits of a level of magnitude m under
 *       quantiser q at rates[q * (mmax + 1) + m] (used when lam > 0).
 *       Minimises sum (x/step - recon)^2 + lam * rate, block by block.
 *   dequant(levels, step, out) -> bool
 *       out: float32 values recon * step (float64 product, then rounded);
 *       False when some value is not finite in float32.
 * Errors: ValueError for bad buffers or levels that would not fit |k| < 2^30.
 * Portable C99; built with -ffp-contract=off so that every sum is rounded as
 * the pure-Python mirror rounds it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DQ_BLOCK 65536        /* values a Viterbi block: its survivors stay in cache */
#define DQ_UMAX 1073741820.0  /* |x / step| below this: every candidate |k| < 2^30 */

static const uint8_t NEXT[4][2] = {{0, 2}, {2, 0}, {1, 3}, {3, 1}}; /* exported as NEXT */

static inline int64_t recon(int64_t k, int q)
{
    return q ? 2 * k - (k > 0) + (k < 0) : 2 * k;
}

typedef struct {
    const double *rate;
    Py_ssize_t mmax;
    double lam;
} rates_t;

/* Bits of level k under quantiser q; past the table, an Exp-Golomb-like growth. */
static inline double rate_of(const rates_t *rt, int q, int64_t k)
{
    int64_t m = k < 0 ? -k : k;
    const double *row = rt->rate + q * (rt->mmax + 1);
    if (m <= rt->mmax) return row[m];
    return row[rt->mmax] + 2.0 * log2((double)m / (double)rt->mmax);
}

/* floor(y) for |y| < 2^52, exactly, without a libm call. */
static inline int64_t floor_i64(double y)
{
    int64_t t = (int64_t)y; /* truncates towards zero */
    return t - (y < (double)t);
}

/* The three candidates of quantiser q for u = x / step: the two levels whose
 * reconstructions bracket u, and zero; with their squared errors. */
static inline void candidates(double u, int q, int64_t *c, double *e2)
{
    int64_t a;
    int j;
    if (!q) {
        a = floor_i64(u / 2.0);
        c[0] = a;
        c[1] = a + 1;
    } else if (u >= 0) {
        a = floor_i64((u + 1.0) / 2.0);
        c[0] = a;
        c[1] = a + 1;
    } else {
        a = -floor_i64(-((u - 1.0) / 2.0)); /* ceil */
        c[0] = a;
        c[1] = a - 1;
    }
    c[2] = 0;
    for (j = 0; j < 3; j++) {
        double e = u - (double)recon(c[j], q);
        e2[j] = e * e;
    }
}

/* One block [lo, hi) from state s0; writes its levels and classes and returns
 * the state after it.  The candidates of both quantisers are found once a value. */
static int viterbi_block(const float *x, double step, const rates_t *rt, Py_ssize_t lo,
                         Py_ssize_t hi, int s0, int32_t *bk, uint8_t *bs, int32_t *lv,
                         uint8_t *cls)
{
    double cost[4], nc[4];
    Py_ssize_t i;
    int s, best = 0;
    for (s = 0; s < 4; s++) cost[s] = (s == s0) ? 0.0 : HUGE_VAL;
    /* survivors start defined: were every cost to overflow, the backtrack reads zeros */
    memset(bk, 0, sizeof(int32_t) * 4 * (size_t)(hi - lo));
    memset(bs, 0, 4 * (size_t)(hi - lo));
    for (i = lo; i < hi; i++) {
        double u = (double)x[i] / step, e2[2][3], rate[2][3];
        int64_t c[2][3];
        int32_t *k_out = bk + 4 * (i - lo);
        uint8_t *s_out = bs + 4 * (i - lo);
        int q, j;
        for (q = 0; q < 2; q++) {
            candidates(u, q, c[q], e2[q]);
            for (j = 0; j < 3; j++)
                rate[q][j] = rt->lam > 0 ? rt->lam * rate_of(rt, q, c[q][j]) : 0.0;
        }
        for (s = 0; s < 4; s++) nc[s] = HUGE_VAL;
        for (s = 0; s < 4; s++) {
            q = s >> 1;
            if (cost[s] == HUGE_VAL) continue;
            for (j = 0; j < 3; j++) {
                double total = cost[s] + e2[q][j];
                int ns = NEXT[s][c[q][j] & 1];
                if (rt->lam > 0) total = total + rate[q][j];
                if (total < nc[ns]) {
                    nc[ns] = total;
                    k_out[ns] = (int32_t)c[q][j];
                    s_out[ns] = (uint8_t)s;
                }
            }
        }
        memcpy(cost, nc, sizeof cost);
    }
    for (s = 1; s < 4; s++)
        if (cost[s] < cost[best]) best = s;
    s = best;
    for (i = hi - 1; i >= lo; i--) {
        int prev = bs[4 * (i - lo) + s] & 3;
        lv[i] = bk[4 * (i - lo) + s];
        cls[i] = (uint8_t)(prev >> 1);
        s = prev;
    }
    return best;
}

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, int writable,
                      const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->itemsize != itemsize || view->len % itemsize) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: need a buffer of %zd-byte items", what, itemsize);
        return -1;
    }
    return 0;
}

static PyObject *py_trellis(PyObject *self, PyObject *args)
{
    PyObject *xo, *ro, *lo, *co;
    double step, lam;
    Py_ssize_t mmax, n, i, a;
    Py_buffer xb, rb, lb, cb;
    int32_t *bk;
    uint8_t *bs;
    int s = 0, bad = 0;
    rates_t rt;
    (void)self;
    if (!PyArg_ParseTuple(args, "OddOnOO", &xo, &step, &lam, &ro, &mmax, &lo, &co)) return NULL;
    if (!(step > 0) || !isfinite(step) || !(lam >= 0) || !isfinite(lam) || mmax < 1 ||
        mmax > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "trellis: bad step, lambda or table size");
        return NULL;
    }
    if (get_buffer(xo, &xb, 4, 0, "x") < 0) return NULL;
    if (get_buffer(ro, &rb, 8, 0, "rates") < 0) { PyBuffer_Release(&xb); return NULL; }
    if (get_buffer(lo, &lb, 4, 1, "levels") < 0) {
        PyBuffer_Release(&xb); PyBuffer_Release(&rb); return NULL;
    }
    if (get_buffer(co, &cb, 1, 1, "cls") < 0) {
        PyBuffer_Release(&xb); PyBuffer_Release(&rb); PyBuffer_Release(&lb); return NULL;
    }
    n = xb.len / 4;
    if (lb.len / 4 != n || cb.len != n || rb.len / 8 != 2 * (mmax + 1)) {
        PyErr_SetString(PyExc_ValueError, "trellis: buffer sizes disagree");
        goto fail;
    }
    for (i = 0; i < 2 * (mmax + 1); i++) {
        if (!isfinite(((const double *)rb.buf)[i])) {
            PyErr_SetString(PyExc_ValueError, "trellis: rates must be finite");
            goto fail;
        }
    }
    for (i = 0; i < n; i++) {
        double u = (double)((const float *)xb.buf)[i] / step;
        if (!(fabs(u) < DQ_UMAX)) { bad = 1; break; }
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "trellis: a value is not finite or its level "
                        "would not fit in 2^30");
        goto fail;
    }
    a = (n < DQ_BLOCK) ? (n > 0 ? n : 1) : DQ_BLOCK; /* survivors of one block */
    bk = (int32_t *)malloc(sizeof(int32_t) * 4 * (size_t)a);
    bs = (uint8_t *)malloc(4 * (size_t)a);
    if (!bk || !bs) { free(bk); free(bs); PyErr_NoMemory(); goto fail; }
    rt.rate = (const double *)rb.buf;
    rt.mmax = mmax;
    rt.lam = lam;
    Py_BEGIN_ALLOW_THREADS
    for (a = 0; a < n; a += DQ_BLOCK) {
        Py_ssize_t b = (n - a > DQ_BLOCK) ? a + DQ_BLOCK : n;
        s = viterbi_block((const float *)xb.buf, step, &rt, a, b, s, bk, bs,
                          (int32_t *)lb.buf, (uint8_t *)cb.buf);
    }
    Py_END_ALLOW_THREADS
    free(bk);
    free(bs);
    PyBuffer_Release(&xb); PyBuffer_Release(&rb); PyBuffer_Release(&lb); PyBuffer_Release(&cb);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&xb); PyBuffer_Release(&rb); PyBuffer_Release(&lb); PyBuffer_Release(&cb);
    return NULL;
}

static PyObject *py_dequant(PyObject *self, PyObject *args)
{
    PyObject *lo, *oo;
    double step;
    Py_buffer lb, ob;
    Py_ssize_t n, i;
    int s = 0, finite = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "OdO", &lo, &step, &oo)) return NULL;
    if (get_buffer(lo, &lb, 4, 0, "levels") < 0) return NULL;
    if (get_buffer(oo, &ob, 4, 1, "out") < 0) { PyBuffer_Release(&lb); return NULL; }
    n = lb.len / 4;
    if (ob.len / 4 != n) {
        PyBuffer_Release(&lb); PyBuffer_Release(&ob);
        PyErr_SetString(PyExc_ValueError, "dequant: buffer sizes disagree");
        return NULL;
    }
    {
        const int32_t *lv = (const int32_t *)lb.buf;
        float *out = (float *)ob.buf;
        Py_BEGIN_ALLOW_THREADS
        for (i = 0; i < n; i++) {
            int64_t k = lv[i];
            float v = (float)((double)recon(k, s >> 1) * step);
            finite &= isfinite(v) != 0;
            out[i] = v;
            s = NEXT[s][k & 1];
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&lb);
    PyBuffer_Release(&ob);
    return PyBool_FromLong(finite);
}

static PyMethodDef methods[] = {
    {"trellis", py_trellis, METH_VARARGS, "Viterbi choice of dependent-quantisation levels."},
    {"dequant", py_dequant, METH_VARARGS, "Reconstruction of dependent-quantisation levels."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dq", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__dq(void)
{
    PyObject *mod = PyModule_Create(&module);
    if (mod && (PyModule_AddIntConstant(mod, "BLOCK", DQ_BLOCK) < 0 ||
                PyModule_AddObject(mod, "NEXT", Py_BuildValue(
                    "((ii)(ii)(ii)(ii))", NEXT[0][0], NEXT[0][1], NEXT[1][0], NEXT[1][1],
                    NEXT[2][0], NEXT[2][1], NEXT[3][0], NEXT[3][1])) < 0)) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
