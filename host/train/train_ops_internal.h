/* train_ops_internal.h: the dua_ops struct and the helpers shared by train_ops.c, train_ops_layers.c and
 * train_ops_gemm.c: argument checks, kernel argument lists, launches, scratch memory, id uploads. */
#ifndef DUA_TRAIN_OPS_INTERNAL_H
#define DUA_TRAIN_OPS_INTERNAL_H

#include "train/train_ops.h"

enum {
  OPS_FILL,
  OPS_ACCUMULATE,
  OPS_ADD,
  OPS_EMBED_FWD,
  OPS_EMBED_BWD_WTE,
  OPS_EMBED_BWD_WPE,
  OPS_LN_FWD,
  OPS_LN_BWD,
  OPS_COLSUM,
  OPS_GELU_FWD,
  OPS_GELU_BWD,
  OPS_BIAS_ROWS,
  OPS_XENT,
  OPS_SUMSQ,
  OPS_ADAMW,
  OPS_KERNEL_COUNT
};
_Static_assert(OPS_KERNEL_COUNT <= DUA_MAX_KERNELS_PER_PROGRAM,
               "cl/train_ops.cl is one program: too many kernels");

/* Rows of a layer-norm backward work-group, and of a column-sum chunk (bias gradient): fixed, so the
 * reduction tree depends on the problem size only. */
#define DUA_OPS_LN_ROWS 16
#define DUA_OPS_COLSUM_ROWS 32

/* A host int32 staging array and its device copy. The write from host to device is not blocking; the
 * host array is reused only after the event of its previous write completed. */
typedef struct dua_ops_upload {
  int32_t *host;
  size_t host_count;
  cl_mem dev;
  size_t dev_bytes;
  cl_event pending;
} dua_ops_upload;

struct dua_ops {
  dua_context *ctx;
  cl_kernel kernels[OPS_KERNEL_COUNT]; /* owned by the context's program cache */
  size_t wg;                           /* work-group size of every launch: a power of two */
  cl_mem scratch;                      /* grow-only device scratch (reduction partials) */
  size_t scratch_bytes;
  dua_ops_upload tokens, csr, targets;
  int32_t *counts; /* host [V + 1]: per-token row counts for the embedding backward's CSR */
  size_t counts_count;
};

/* Sets kernel arguments in order; remembers the first failure. */
typedef struct dua_ops_args {
  cl_kernel kernel;
  cl_uint index;
  cl_int err;
} dua_ops_args;

static inline void dua_ops_arg(dua_ops_args *a, size_t size, const void *value) {
  if (a->err == CL_SUCCESS)
    a->err = clSetKernelArg(a->kernel, a->index, size, value);
  a->index++;
}

static inline dua_ops_args dua_ops_args_of(dua_ops *ops, int kernel) {
  dua_ops_args a = {ops->kernels[kernel], 0, CL_SUCCESS};
  return a;
}

/* Appends a span as (cl_mem, cl_ulong element offset). */
static inline void dua_ops_arg_span(dua_ops_args *a, dua_span s) {
  cl_ulong off = s.off;
  dua_ops_arg(a, sizeof(cl_mem), &s.buf->mem);
  dua_ops_arg(a, sizeof off, &off);
}

static inline void dua_ops_arg_ulong(dua_ops_args *a, size_t v) {
  cl_ulong x = v;
  dua_ops_arg(a, sizeof x, &x);
}

static inline void dua_ops_arg_int(dua_ops_args *a, int v) {
  cl_int x = v;
  dua_ops_arg(a, sizeof x, &x);
}

static inline void dua_ops_arg_float(dua_ops_args *a, float v) {
  cl_float x = v;
  dua_ops_arg(a, sizeof x, &x);
}

static inline void dua_ops_arg_local(dua_ops_args *a, size_t bytes) {
  dua_ops_arg(a, bytes, NULL);
}

/* Argument checks: each returns DUA_SUCCESS or fails the context with a message naming fn and the value.
 *   a span must hold n fp32 (or int32) elements from its offset on, in a buffer of the ops' context. */
dua_status dua_ops_check(dua_ops *ops, const char *fn);
dua_status dua_ops_check_span(dua_ops *ops, const char *fn, const char *name, dua_span s, size_t n);
dua_status dua_ops_check_dim(dua_ops *ops, const char *fn, const char *name, long long value);
/*   an element count must be >= 1 */
dua_status dua_ops_check_n(dua_ops *ops, const char *fn, size_t n);
/*   spans a [na] and b [nb] may not share an element (buf NULL: nothing to check) */
dua_status dua_ops_check_disjoint(dua_ops *ops, const char *fn, const char *an, dua_span a, size_t na,
                                  const char *bn, dua_span b, size_t nb);

/* Device scratch of at least bytes (grow-only; an in-order queue makes reuse across calls safe). */
dua_status dua_ops_scratch(dua_ops *ops, size_t bytes, cl_mem *out);

/* Host staging array of at least count ints (waits for its previous upload to finish), then the
 * non-blocking upload of its first count ints to u->dev (grown if needed). */
dua_status dua_ops_upload_reserve(dua_ops *ops, dua_ops_upload *u, size_t count);
dua_status dua_ops_upload_send(dua_ops *ops, dua_ops_upload *u, size_t count);

/* Enqueues kernel k over global[0..dims) (rounded up to the work-group size in dimension 0) once the
 * arguments in a were all set; names the kernel in the error. */
dua_status dua_ops_launch(dua_ops *ops, const dua_ops_args *a, cl_uint dims, const size_t *global,
                          const char *what);

/* dst [chunks, cols] (+)= column sums of src [rows, cols] (row stride ld) per chunk of `chunk` rows. */
dua_status dua_ops_colsum(dua_ops *ops, cl_mem dst, size_t dst_off, cl_mem src, size_t src_off, int rows,
                          int cols, int ld, int chunk, int accumulate);

#endif
