/* fastbp's kernels as XLA custom-call targets on the CPU (fastbp/jax.py registers them with
 * jax.ffi.register_ffi_target and calls them with jax.ffi.ffi_call; the FFI's types are
 * declared in xla_ffi.h). A jitted program then runs them without a host callback.
 *
 * Targets (fbp_xla_handler's codes, FBP_XLA_* in fastbp.h), operands in this order: X (B, d),
 * W (n, d), b (n,) if has_b, the target (labels (B,) int32/int64, or X's dtype), then the
 * array options present in `arrays` (FBP_ARR_* bits of fastbp.h: sample_weight (B,), weight
 * (n,), pos_weight (n,)), then for ROWS the upstream g (B,):
 *   FORWARD: loss (a scalar), then dX, dW, db for need's bits 1, 2, 4: linear_head's fused
 *            "mean"/"sum" call (linear_fused or linear_chunked as `blocks` says);
 *   LOSS:    the loss alone (a scalar, or (B,) for reduction 2 "none"): linear_loss;
 *   ROWS:    dX, dW, db (need's bits) of sum_i g_i L_i: the "sum" call with sample weights
 *            times g (the backward of "none").
 *   HEAD:    operands S (B, n), the target, the arrays; results loss, dS (if need): heads_*.
 * Attributes (int64 or float64 scalars, by name): the head's fbp_head fields, reduction
 * (FBP_REDUCE_*), the plan of tuning.plan (blocks, chunk, cols, own, team, by_rows), filter_eps, need,
 * has_b, arrays and labels (1: class labels in [0, n) or ignore_index where check_ignore; 2:
 * labels -1 / +1), which the handlers check: labels are data, not known when tracing. */
#ifndef REAL
#include "common.h"
#include "xla_ffi.h"

#include <stdio.h>

typedef struct {
    int64_t code, ignore_index, p, reduction, blocks, chunk, cols, own, team, by_rows, need, has_b,
            arrays, labels, check_ignore;
    double label_smoothing, z_loss, softcap, margin, delta, alpha, gamma, filter_eps;
} attrs_t;

#define INT_ATTR(f) {#f, offsetof(attrs_t, f), 1}
#define REAL_ATTR(f) {#f, offsetof(attrs_t, f), 0}
static const struct {
    const char *name;
    size_t offset;
    int is_int;
} ATTRS[] = {INT_ATTR(code),
             INT_ATTR(ignore_index),
             INT_ATTR(p),
             INT_ATTR(reduction),
             INT_ATTR(blocks),
             INT_ATTR(chunk),
             INT_ATTR(cols),
             INT_ATTR(own),
             INT_ATTR(team),
             INT_ATTR(by_rows),
             INT_ATTR(need),
             INT_ATTR(has_b),
             INT_ATTR(arrays),
             INT_ATTR(labels),
             INT_ATTR(check_ignore),
             REAL_ATTR(label_smoothing),
             REAL_ATTR(z_loss),
             REAL_ATTR(softcap),
             REAL_ATTR(margin),
             REAL_ATTR(delta),
             REAL_ATTR(alpha),
             REAL_ATTR(gamma),
             REAL_ATTR(filter_eps)};

/* One call's state: the API (for errors), its operands and results in order. */
typedef struct {
    const XLA_FFI_Api *api;
    attrs_t a;
    XLA_FFI_Buffer **in, **out;
    int64_t nin, nout;
} call_t;

/* a scratch array's element count for malloc (1 for an empty one: malloc(0) may be NULL) */
static size_t items(int64_t m) { return m > 0 ? (size_t)m : 1; }

static XLA_FFI_Error *error(const XLA_FFI_Api *api, XLA_FFI_Error_Code code, const char *msg)
{
    XLA_FFI_Error_Create_Args args = {sizeof args, NULL, msg, code};
    return api->XLA_FFI_Error_Create(&args);
}

/* The handler's answer to XLA's metadata query (at registration): the API version it was
 * written for, no traits. 1: answered. */
static int metadata(XLA_FFI_CallFrame *frame)
{
    for (XLA_FFI_Extension_Base *e = frame->extension_start; e; e = e->next) {
        if (e->type == XLA_FFI_Extension_Metadata) {
            XLA_FFI_Metadata *m = ((XLA_FFI_Metadata_Extension *)e)->metadata;
            m->api_version.major_version = FBP_XLA_FFI_API_MAJOR;
            m->api_version.minor_version = FBP_XLA_FFI_API_MINOR;
            m->traits = 0;
            return 1;
        }
    }
    return 0;
}

/* frame's attributes into c->a (all zero first); NULL or the error */
static const char *decode(call_t *c, XLA_FFI_CallFrame *frame)
{
    memset(&c->a, 0, sizeof c->a);
    for (int64_t i = 0; i < frame->attrs.size; i++) {
        const XLA_FFI_ByteSpan *name = frame->attrs.names[i];
        size_t k = 0, nattrs = sizeof ATTRS / sizeof ATTRS[0];
        while (k < nattrs
               && !(strlen(ATTRS[k].name) == name->len
                    && memcmp(ATTRS[k].name, name->ptr, name->len) == 0))
            k++;
        if (k == nattrs || frame->attrs.types[i] != XLA_FFI_AttrType_SCALAR)
            return "fastbp's XLA target got an attribute it does not know";
        const XLA_FFI_Scalar *s = frame->attrs.attrs[i];
        char *field = (char *)&c->a + ATTRS[k].offset;
        if (ATTRS[k].is_int && s->dtype == XLA_FFI_DataType_S64)
            memcpy(field, s->value, sizeof(int64_t));
        else if (!ATTRS[k].is_int && s->dtype == XLA_FFI_DataType_F64)
            memcpy(field, s->value, sizeof(double));
        else
            return "fastbp's XLA target got an attribute of the wrong type";
    }
    return NULL;
}

/* *y: the labels as int64 (int32 ones copied into *owned, which the caller frees), checked
 * against the head's range (FBP_EBADARG with msg set when one is outside) */
static int labels(const call_t *c, const XLA_FFI_Buffer *t, int64_t n, const int64_t **out,
                  int64_t **owned, char *msg, size_t msg_len)
{
    int64_t B = t->dims[0];
    const int64_t *y = t->data;
    *owned = NULL;
    if (t->rank != 1 || (t->dtype != XLA_FFI_DataType_S32 && t->dtype != XLA_FFI_DataType_S64)) {
        snprintf(msg, msg_len, "fastbp: labels must be a vector of int32 or int64");
        return FBP_EBADARG;
    }
    if (t->dtype == XLA_FFI_DataType_S32) {
        int64_t *y64 = malloc(items(B) * sizeof *y64);
        if (!y64)
            return FBP_ENOMEM;
        for (int64_t i = 0; i < B; i++)
            y64[i] = ((const int32_t *)t->data)[i];
        *owned = y64;
        y = y64;
    }
    for (int64_t i = 0; i < B; i++) {
        int ok = c->a.labels == 2 ? (y[i] == 1 || y[i] == -1)
                                  : ((y[i] >= 0 && y[i] < n)
                                     || (c->a.check_ignore && y[i] == c->a.ignore_index));
        if (!ok) {
            if (c->a.labels == 2)
                snprintf(msg, msg_len,
                         "target must hold labels in {-1, +1}, got %lld at index %lld",
                         (long long)y[i], (long long)i);
            else
                snprintf(msg, msg_len, "target has label %lld at row %lld, outside [0, %lld)",
                         (long long)y[i], (long long)i, (long long)n);
            return FBP_EBADARG;
        }
    }
    *out = y;
    return FBP_OK;
}

static int bits(int64_t v) { return (int)(v & 1) + (int)(v >> 1 & 1) + (int)(v >> 2 & 1); }

/* Whether the call has the operands and results its attributes say (the file's header), X a
 * matrix (a vector for a head on one score per row), every buffer read before it is indexed. */
static int counts_fit(const call_t *c, int target)
{
    int head = target == FBP_XLA_HEAD;
    int64_t nin =
            2 + (head ? 0 : 1 + (c->a.has_b != 0)) + bits(c->a.arrays) + (target == FBP_XLA_ROWS);
    int64_t nout = target == FBP_XLA_ROWS      ? bits(c->a.need)
                   : target == FBP_XLA_FORWARD ? 1 + bits(c->a.need)
                   : head                      ? 1 + (c->a.need != 0)
                                               : 1;
    if (c->nin != nin || c->nout != nout || c->in[0]->rank < 1 || c->in[0]->rank > 2
        || (!head && (c->in[0]->rank != 2 || c->in[1]->rank != 2)))
        return 0;
    for (int64_t i = 0; i < nin; i++)
        if (c->in[i]->rank >= 1 && c->in[i]->dims[0] < 0)
            return 0;
    return 1;
}

#define TEMPLATE_FILE "xla_ffi.c"
#include "template.h"

static XLA_FFI_Error *handle(XLA_FFI_CallFrame *frame, int target)
{
    if (metadata(frame))
        return NULL;
    call_t c = {frame->api,
                {0},
                (XLA_FFI_Buffer **)frame->args.args,
                (XLA_FFI_Buffer **)frame->rets.rets,
                frame->args.size,
                frame->rets.size};
    const char *bad = decode(&c, frame);
    if (bad)
        return error(c.api, XLA_FFI_Error_Code_INVALID_ARGUMENT, bad);
    if (!counts_fit(&c, target))
        return error(c.api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "fastbp's XLA target got operands or results its attributes do not name");
    char msg[160] = "";
    int status;
    if (c.in[0]->dtype == XLA_FFI_DataType_F64)
        status = call_f64(&c, target, msg, sizeof msg);
    else if (c.in[0]->dtype == XLA_FFI_DataType_F32)
        status = call_f32(&c, target, msg, sizeof msg);
    else
        return error(c.api, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                     "fastbp: X must be float32 or float64");
    if (status == FBP_OK)
        return NULL;
    if (!msg[0])
        snprintf(msg, sizeof msg, "fastbp kernel status %d", status);
    return error(c.api,
                 status == FBP_ENOMEM ? XLA_FFI_Error_Code_RESOURCE_EXHAUSTED
                                      : XLA_FFI_Error_Code_INVALID_ARGUMENT,
                 msg);
}

static XLA_FFI_Error *xla_forward(XLA_FFI_CallFrame *f) { return handle(f, FBP_XLA_FORWARD); }
static XLA_FFI_Error *xla_loss(XLA_FFI_CallFrame *f) { return handle(f, FBP_XLA_LOSS); }
static XLA_FFI_Error *xla_rows(XLA_FFI_CallFrame *f) { return handle(f, FBP_XLA_ROWS); }
static XLA_FFI_Error *xla_head(XLA_FFI_CallFrame *f) { return handle(f, FBP_XLA_HEAD); }

void *fbp_xla_handler(int target)
{
    switch (target) {
    case FBP_XLA_FORWARD: return (void *)xla_forward;
    case FBP_XLA_LOSS: return (void *)xla_loss;
    case FBP_XLA_ROWS: return (void *)xla_rows;
    case FBP_XLA_HEAD: return (void *)xla_head;
    default: return NULL;
    }
}

void fbp_xla_api_version(int *major, int *minor)
{
    *major = FBP_XLA_FFI_API_MAJOR;
    *minor = FBP_XLA_FFI_API_MINOR;
}
#else

/* The call on REAL data (X's dtype): FBP_OK, or a status with msg set where it says more. */
static int F(call)(const call_t *c, int target, char *msg, size_t msg_len)
{
    const attrs_t *a = &c->a;
    int64_t k = 0;
    const XLA_FFI_Buffer *X = c->in[k++];
    int64_t B = X->dims[0], d = X->rank > 1 ? X->dims[1] : 0, n;
    const REAL *W = NULL, *b = NULL;
    if (target == FBP_XLA_HEAD) {
        n = X->rank > 1 ? X->dims[1] : 1;
    } else {
        W = c->in[k++]->data;
        n = c->in[k - 1]->dims[0];
        if (a->has_b)
            b = c->in[k++]->data;
    }
    const XLA_FFI_Buffer *t = c->in[k++];
    fbp_head h = {.code = a->code,
                  .ignore_index = a->ignore_index,
                  .label_smoothing = a->label_smoothing,
                  .z_loss = a->z_loss,
                  .softcap = a->softcap,
                  .margin = a->margin,
                  .p = a->p,
                  .delta = a->delta,
                  .alpha = a->alpha,
                  .gamma = a->gamma};
    const REAL *sw = NULL;
    if (a->arrays & FBP_ARR_SAMPLE_WEIGHT)
        sw = c->in[k++]->data;
    if (a->arrays & FBP_ARR_WEIGHT)
        h.weight = c->in[k++]->data;
    if (a->arrays & FBP_ARR_POS_WEIGHT)
        h.pos_weight = c->in[k++]->data;
    int64_t *owned = NULL;
    if (a->labels) {
        int status = labels(c, t, n, &h.y, &owned, msg, msg_len);
        if (status) {
            free(owned);
            return status;
        }
    } else {
        h.Z = t->data;
    }
    REAL *scaled = NULL;
    if (target == FBP_XLA_ROWS) { /* sum_i g_i L_i: the "sum" call with weights sw_i g_i */
        const REAL *g = c->in[k]->data;
        scaled = malloc(items(B) * sizeof(REAL));
        if (!scaled) {
            free(owned);
            return FBP_ENOMEM;
        }
        for (int64_t i = 0; i < B; i++)
            scaled[i] = sw ? sw[i] * g[i] : g[i];
        sw = scaled;
    }
    h.sample_weight = sw;
    double sums[2] = {0, 0};
    int status = FBP_OK;
    int64_t r = 0;
    if (target == FBP_XLA_LOSS) {
        double *rows = a->reduction == FBP_REDUCE_NONE ? malloc(items(B) * sizeof *rows) : NULL;
        if (a->reduction == FBP_REDUCE_NONE && !rows)
            status = FBP_ENOMEM;
        else
            status = F(linear_loss)(rows, sums, X->data, W, b, &h, a->chunk, (int)a->own,
                                    (int)a->team, (int)a->by_rows, B, d, n);
        REAL *loss = c->out[0]->data;
        if (status == FBP_OK && rows)
            for (int64_t i = 0; i < B; i++)
                loss[i] = (REAL)rows[i];
        free(rows);
    } else if (target == FBP_XLA_HEAD) {
        REAL *dS = a->need ? c->out[1]->data : NULL;
        double *rows = a->reduction == FBP_REDUCE_NONE ? malloc(items(B) * sizeof *rows) : NULL;
        REAL *tmp = dS ? NULL : malloc(items(B * n) * sizeof(REAL));
        if ((a->reduction == FBP_REDUCE_NONE && !rows) || (!dS && !tmp))
            status = FBP_ENOMEM;
        else
            status = F(heads)(dS ? dS : tmp, rows, sums, X->data, &h,
                              a->reduction == FBP_REDUCE_MEAN, B, n);
        REAL *loss = c->out[0]->data;
        if (status == FBP_OK && rows)
            for (int64_t i = 0; i < B; i++)
                loss[i] = (REAL)rows[i];
        free(rows);
        free(tmp);
    } else {
        if (target == FBP_XLA_FORWARD)
            r++; /* the loss comes first */
        REAL *dX = a->need & 1 ? c->out[r++]->data : NULL;
        REAL *dW = a->need & 2 ? c->out[r++]->data : NULL;
        REAL *db = a->need & 4 ? c->out[r++]->data : NULL;
        REAL *dW_tmp = dW ? NULL : malloc(items(n * d) * sizeof(REAL));
        int mean = target == FBP_XLA_FORWARD && a->reduction == FBP_REDUCE_MEAN;
        if (!dW && !dW_tmp)
            status = FBP_ENOMEM;
        else if (a->blocks)
            status = F(linear_fused)(dW ? dW : dW_tmp, db, dX, sums, X->data, W, b, &h, mean,
                                     (int)a->blocks, B, d, n);
        else
            status = F(linear_chunked)(dW ? dW : dW_tmp, db, dX, sums, X->data, W, b, &h, mean,
                                       a->chunk, a->cols, a->filter_eps, (int)a->own, (int)a->team,
                                       (int)a->by_rows, B, d, n);
        free(dW_tmp);
    }
    if (status == FBP_OK && target != FBP_XLA_ROWS && a->reduction != FBP_REDUCE_NONE)
        *(REAL *)c->out[0]->data = (REAL)(a->reduction == FBP_REDUCE_SUM ? sums[0]
                                          : sums[1] != 0                 ? sums[0] / sums[1]
                                                                         : NAN);
    free(scaled);
    free(owned);
    return status;
}
#endif
