/* fastbp.backends._fastcall: a compiled backend's tiny linear_head calls checked and run
 * without Python in between (a plain CPython extension, built beside the C backend's cffi
 * module). The kernel is the caller's: any function with the C signature of csrc/fastbp.h's
 * linear_fused_f64 / _f32 -- the C backend's own, or the Numba backend's fused rows compiled
 * as a cfunc.
 *
 * A tiny call's Python path costs more than its arithmetic (docs/performance.md, "Tiny
 * calls"). linear_head(...) below takes the common
 * call -- default head options, one float dtype, C-ordered native arrays, labels in range,
 * out= buffers (if given) overlapping no other -- and returns its Grads' items; for anything
 * else it returns None before writing anything, and the Python path (which also words every
 * error) runs instead. Its conditions are those of _checks._fast_linear_head, except that overlap is
 * tested on the arrays' byte ranges (tests/test_linear_head.py, "fast entry"). */
#define PY_SSIZE_T_CLEAN
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <Python.h>
#include <numpy/arrayobject.h>
#include <math.h>
#include <stdint.h>

#include "fastbp.h"

typedef __typeof__(linear_fused_f64) fused_f64_t;
typedef __typeof__(linear_fused_f32) fused_f32_t;

/* the target kinds of a head's spec (fastbp/backends/_args.py, fast_entry) */
enum { KIND_LABELS = 1, KIND_PROBS = 2, KIND_FLOAT = 4 };

/* an exact ndarray of type tn, ndim dimensions (d0, d1), C-ordered, aligned, native byte order
 * (and writeable if out); d1 < 0: one dimension */
static PyArrayObject *array_like(PyObject *o, int tn, npy_intp d0, npy_intp d1, int out)
{
    if (!PyArray_CheckExact(o))
        return NULL;
    PyArrayObject *a = (PyArrayObject *)o;
    int nd = d1 < 0 ? 1 : 2;
    if (PyArray_TYPE(a) != tn || PyArray_NDIM(a) != nd || PyArray_DIM(a, 0) != d0
        || (nd == 2 && PyArray_DIM(a, 1) != d1) || !PyArray_ISNOTSWAPPED(a)
        || !(out ? PyArray_ISCARRAY(a) : PyArray_ISCARRAY_RO(a)))
        return NULL;
    return a;
}

static int overlap(PyArrayObject *a, PyArrayObject *b)
{
    if (!a || !b || a == b)
        return a && a == b;
    const char *pa = PyArray_BYTES(a), *pb = PyArray_BYTES(b);
    npy_intp na = PyArray_NBYTES(a), nb = PyArray_NBYTES(b);
    return na && nb && pa < pb + nb && pb < pa + na;
}

/* linear_head(X, W, b, target, spec, need_dX, out, max_weights, few_n, few_min_d, few_weights,
 * max_work, kernels) -> (loss, dW, db, dX), or None. out: Grads(None, dW, db, dX) to write, or
 * None for new arrays. spec: None or (kinds, the address of the head's fbp_head template for
 * labels, the same for probability/float rows, what keeps them alive); kernels: the (float64, float32) kernels'
 * addresses; runs them on one block when n d <= max_weights, or n <= few_n, d >= few_min_d and
 * n d <= few_weights, and B n d < max_work (the backend's FUSED_ANY_N_WEIGHTS, FUSED_FEW_N,
 * FUSED_FEW_MIN_D, FUSED_FEW_WEIGHTS and PARALLEL_MIN_WORK). */
static PyObject *linear_head(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 13 || !PyTuple_CheckExact(args[12]) || PyTuple_GET_SIZE(args[12]) != 2) {
        PyErr_SetString(PyExc_TypeError, "_fastcall.linear_head takes 13 arguments, the last "
                                         "a pair of kernel addresses");
        return NULL;
    }
    PyObject *spec = args[4], *need = args[5], *out = args[6];
    PyObject *oX = args[0], *oW = args[1];
    if (spec == Py_None || !PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 4
        || (need != Py_True && need != Py_False)
        || (out != Py_None && (!PyTuple_Check(out) || PyTuple_GET_SIZE(out) != 4))
        || sizeof(npy_intp) != sizeof(int64_t) || !PyArray_CheckExact(oX) || !PyArray_CheckExact(oW)
        || PyArray_NDIM((PyArrayObject *)oX) != 2 || PyArray_NDIM((PyArrayObject *)oW) != 2)
        Py_RETURN_NONE;
    long long max_weights = PyLong_AsLongLong(args[7]), few_n = PyLong_AsLongLong(args[8]),
              few_min_d = PyLong_AsLongLong(args[9]), few_weights = PyLong_AsLongLong(args[10]),
              max_work = PyLong_AsLongLong(args[11]);
    if (PyErr_Occurred())
        return NULL;
    int tn = PyArray_TYPE((PyArrayObject *)oX);
    npy_intp B = PyArray_DIM((PyArrayObject *)oX, 0), d = PyArray_DIM((PyArrayObject *)oX, 1),
             n = PyArray_DIM((PyArrayObject *)oW, 0);
    PyArrayObject *X = array_like(oX, tn, B, d, 0), *W = array_like(oW, tn, n, d, 0), *b = NULL,
                  *T = NULL, *dW, *db = NULL, *dX = NULL;
    if ((tn != NPY_DOUBLE && tn != NPY_FLOAT) || !X || !W || n < 1 || B * n * d >= max_work
        || (n * d > max_weights && (n > few_n || d < few_min_d || n * d > few_weights)))
        Py_RETURN_NONE;
    if (args[2] != Py_None && !(b = array_like(args[2], tn, n, -1, 0)))
        Py_RETURN_NONE;
    /* the target: labels in range, or rows of the float dtype; the head struct: the spec's
     * template for that target (code and default options) with the target filled in */
    long kinds = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    const fbp_head *tmpl;
    fbp_head head;
    if ((kinds & KIND_LABELS) && (T = array_like(args[3], NPY_INTP, B, -1, 0))) {
        const int64_t *y = (const int64_t *)PyArray_DATA(T);
        for (npy_intp i = 0; i < B; i++)
            if (y[i] < 0 || y[i] >= n)
                Py_RETURN_NONE;      /* (ignore_index's -100 too: the Python path handles it) */
        tmpl = PyLong_AsVoidPtr(PyTuple_GET_ITEM(spec, 1));
        if (!tmpl)
            return NULL;
        head = *tmpl;
        head.y = y;
    } else if ((kinds & (KIND_PROBS | KIND_FLOAT)) && (T = array_like(args[3], tn, B, n, 0))) {
        tmpl = PyLong_AsVoidPtr(PyTuple_GET_ITEM(spec, 2));
        if (!tmpl)
            return NULL;
        head = *tmpl;
        head.Z = PyArray_DATA(T);
    } else
        Py_RETURN_NONE;
    fused_f64_t *fused_f64 = (fused_f64_t *)PyLong_AsVoidPtr(PyTuple_GET_ITEM(args[12], 0));
    fused_f32_t *fused_f32 = (fused_f32_t *)PyLong_AsVoidPtr(PyTuple_GET_ITEM(args[12], 1));
    if (PyErr_Occurred())
        return NULL;
    if (!fused_f64 || !fused_f32) {
        PyErr_SetString(PyExc_ValueError, "_fastcall.linear_head: a NULL kernel");
        return NULL;
    }
    if (out == Py_None) {       /* new arrays: C-ordered, aligned, writeable, apart */
        npy_intp wd[2] = {n, d}, xd[2] = {B, d};
        dW = (PyArrayObject *)PyArray_SimpleNew(2, wd, tn);
        db = b ? (PyArrayObject *)PyArray_SimpleNew(1, wd, tn) : NULL;
        dX = need == Py_True ? (PyArrayObject *)PyArray_SimpleNew(2, xd, tn) : NULL;
        if (!dW || (b && !db) || (need == Py_True && !dX)) {
            Py_XDECREF(dW);
            Py_XDECREF(db);
            Py_XDECREF(dX);
            return NULL;
        }
    } else {
        /* out: dW, db exactly when b, dX exactly when need_dX; no buffer overlaps another */
        PyObject *odb = PyTuple_GET_ITEM(out, 2), *odX = PyTuple_GET_ITEM(out, 3);
        if (!(dW = array_like(PyTuple_GET_ITEM(out, 1), tn, n, d, 1))
            || (b ? !(db = array_like(odb, tn, n, -1, 1)) : odb != Py_None)
            || (need == Py_True ? !(dX = array_like(odX, tn, B, d, 1)) : odX != Py_None))
            Py_RETURN_NONE;
        PyArrayObject *outs[3] = {dW, db, dX}, *ins[4] = {X, W, b, T};
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 4; j++)
                if (overlap(outs[i], ins[j]))
                    Py_RETURN_NONE;
            for (int j = i + 1; j < 3; j++)
                if (overlap(outs[i], outs[j]))
                    Py_RETURN_NONE;
        }
        Py_INCREF(dW);          /* the references the result tuple takes */
        Py_XINCREF(db);
        Py_XINCREF(dX);
    }
    double sums[2];
    int status;
#define FBP_DATA(a) ((a) ? PyArray_DATA(a) : NULL)
    Py_BEGIN_ALLOW_THREADS
    if (tn == NPY_DOUBLE)
        status = fused_f64(FBP_DATA(dW), FBP_DATA(db), FBP_DATA(dX), sums, FBP_DATA(X), FBP_DATA(W),
                           FBP_DATA(b), &head, 1, 1, B, d, n);
    else
        status = fused_f32(FBP_DATA(dW), FBP_DATA(db), FBP_DATA(dX), sums, FBP_DATA(X), FBP_DATA(W),
                           FBP_DATA(b), &head, 1, 1, B, d, n);
    Py_END_ALLOW_THREADS
#undef FBP_DATA
    PyObject *loss =
            status ? NULL
                   : PyFloat_FromDouble(
                             sums[1] != 0 ? sums[0] / sums[1]
                                          : NAN);  /* reduced_loss's "mean": nan if no weight */
    if (!loss) {
        Py_DECREF(dW);
        Py_XDECREF(db);
        Py_XDECREF(dX);
        if (status)     /* the Python path runs the kernel again and raises its error */
            Py_RETURN_NONE;
        return NULL;
    }
    PyObject *res = PyTuple_New(4),
             *items[4] = {loss, (PyObject *)dW, (PyObject *)db, (PyObject *)dX};
    for (int i = 0; i < 4; i++) {
        PyObject *item = items[i] ? items[i] : Py_NewRef(Py_None);
        if (res)
            PyTuple_SET_ITEM(res, i, item);     /* steals the reference */
        else
            Py_DECREF(item);
    }
    return res;
}

static PyMethodDef methods[] = {
        {"linear_head", (PyCFunction)(void (*)(void))linear_head, METH_FASTCALL,
         "linear_head(X, W, b, target, spec, need_dX, out, max_weights, few_n, few_min_d, "
         "few_weights, max_work, kernels) -> (loss, dW, db, dX), or None when the call is not the "
         "common small one (nothing written then)."},
        {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
        PyModuleDef_HEAD_INIT, "_fastcall", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastcall(void)
{
    import_array();
    PyObject *m = PyModule_Create(&module);
    /* the target kinds, for the specs fastbp/backends/_args.py builds (one definition) */
    if (m
        && (PyModule_AddIntConstant(m, "KIND_LABELS", KIND_LABELS) < 0
            || PyModule_AddIntConstant(m, "KIND_PROBS", KIND_PROBS) < 0
            || PyModule_AddIntConstant(m, "KIND_FLOAT", KIND_FLOAT) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
