/*
 * p2pfl.algorithms._kernel: the gossip mix as one pass over memory.
 *
 *     out = w0 * x + w[0] * v[0] + ... + w[K-1] * v[K-1]      (float32)
 *
 * torch evaluates this as K + 1 separate passes (a multiply, then one add per
 * neighbour), each reading and writing a model-sized vector.  With models of
 * millions of parameters and many node processes on few cores, those passes
 * run from main memory.  Here the vectors are walked in blocks that stay in
 * L1: every input is read once and ``out`` written once.
 *
 * The sum is formed left to right in float32, with contraction into fused
 * multiply-adds disabled (-ffp-contract=off in setup.py), so every build and
 * every K gives the same bits for the same inputs and order.  The GIL is
 * released while summing.  ``out`` may be ``x`` itself, but must not overlap any
 * of the vectors (the caller, kernel.py, always passes a fresh ``out``).  Buffers
 * are native-order float32; unaligned ones are read correctly, only slower.
 *
 * It returns whether every value of ``out`` is finite, tested on each block while
 * it is still in L1: a NaN or infinity in any input reaches ``out`` (w * inf is
 * inf or NaN, even for w = 0), so a node learns that a neighbour's model is
 * unusable without a separate pass over it (kernel.py, dpsgd.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 2048
#define MAX_TERMS 256

static int get_f32(PyObject *obj, Py_buffer *view, int writable, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format;
    int native = f != NULL && (strcmp(f, "f") == 0 || strcmp(f, "@f") == 0 ||
                               strcmp(f, "=f") == 0 ||
                               (strcmp(f, "<f") == 0 && PY_LITTLE_ENDIAN) ||
                               (strcmp(f, ">f") == 0 && PY_BIG_ENDIAN));
    if (view->itemsize != 4 || !native) {
        PyErr_Format(PyExc_TypeError, "%s must be a native-order float32 buffer", what);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Whether the m values at o are all finite.  An exponent of all ones (NaN or
 * infinity) plus one carries into the sign bit; no finite exponent does.  An
 * AND, an ADD and an OR a value, which vectorise. */
static int block_finite(const float *o, Py_ssize_t m)
{
    uint32_t carry = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        uint32_t b;
        memcpy(&b, o + i, 4);
        carry |= (b & 0x7f800000u) + 0x00800000u;
    }
    return (carry & 0x80000000u) == 0;
}

/* The sum, block by block; returns whether every value of out is finite. */
static int mix(float *out, const float *x, float w0, const float **v, const float *w,
               int k, Py_ssize_t n)
{
    int finite = 1;
    for (Py_ssize_t a = 0; a < n; a += BLOCK) {
        Py_ssize_t m = n - a < BLOCK ? n - a : BLOCK;
        float *o = out + a;
        const float *xa = x + a;
        if (k == 2) { /* the ring: one fused loop */
            const float *p = v[0] + a, *q = v[1] + a;
            const float w1 = w[0], w2 = w[1];
            for (Py_ssize_t i = 0; i < m; i++)
                o[i] = w0 * xa[i] + w1 * p[i] + w2 * q[i];
            finite &= block_finite(o, m);
            continue;
        }
        for (Py_ssize_t i = 0; i < m; i++)
            o[i] = w0 * xa[i];
        for (int j = 0; j < k; j++) {
            const float *p = v[j] + a;
            const float wj = w[j];
            for (Py_ssize_t i = 0; i < m; i++)
                o[i] = o[i] + wj * p[i];
        }
        finite &= block_finite(o, m);
    }
    return finite;
}

static PyObject *weighted_sum(PyObject *self, PyObject *args)
{
    PyObject *out_obj, *x_obj, *vs, *ws;
    double w0;
    Py_buffer out, x, views[MAX_TERMS];
    const float *ptrs[MAX_TERMS];
    float weights[MAX_TERMS];
    Py_ssize_t k, got = 0;
    int finite;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OOdOO", &out_obj, &x_obj, &w0, &vs, &ws))
        return NULL;
    if (!PyTuple_Check(vs) || !PyTuple_Check(ws) || PyTuple_GET_SIZE(vs) != PyTuple_GET_SIZE(ws)) {
        PyErr_SetString(PyExc_TypeError, "vectors and weights must be tuples of one length");
        return NULL;
    }
    k = PyTuple_GET_SIZE(vs);
    if (k > MAX_TERMS) {
        PyErr_Format(PyExc_ValueError, "at most %d neighbours", MAX_TERMS);
        return NULL;
    }
    if (get_f32(out_obj, &out, 1, "out") < 0)
        return NULL;
    if (get_f32(x_obj, &x, 0, "x") < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    if (x.len != out.len) {
        PyErr_SetString(PyExc_ValueError, "x and out differ in size");
        goto done;
    }
    for (got = 0; got < k; got++) {
        double wj = PyFloat_AsDouble(PyTuple_GET_ITEM(ws, got));
        if (wj == -1.0 && PyErr_Occurred())
            goto done;
        if (get_f32(PyTuple_GET_ITEM(vs, got), &views[got], 0, "each vector") < 0)
            goto done;
        if (views[got].len != out.len) {
            PyErr_SetString(PyExc_ValueError, "a vector differs in size from x");
            got++;
            goto done;
        }
        ptrs[got] = (const float *)views[got].buf;
        weights[got] = (float)wj;
    }
    Py_BEGIN_ALLOW_THREADS
    finite = mix((float *)out.buf, (const float *)x.buf, (float)w0, ptrs, weights, (int)k,
                 out.len / 4);
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(finite);
done:
    for (Py_ssize_t j = 0; j < got; j++)
        PyBuffer_Release(&views[j]);
    PyBuffer_Release(&x);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"weighted_sum", weighted_sum, METH_VARARGS,
     "weighted_sum(out, x, w0, vectors, weights) -> bool: out = w0*x + sum_j "
     "weights[j]*vectors[j], float32, one pass over memory; whether out is all finite."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel",
                                    "The gossip mix in one pass over memory.", -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
