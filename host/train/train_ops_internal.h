/* train_ops_internal.h: the dua_ops struct and the helpers shared by train_ops.c, train_ops_layers.c and
 * train_ops_gemm.c: the per-device path options, argument checks, kernel argument lists, launches, scratch
 * memory, id uploads. */
#ifndef DUA_TRAIN_OPS_INTERNAL_H
#define DUA_TRAIN_OPS_INTERNAL_H

#include "train/train_ops.h"

/* Kernels: [0, OPS_PORTABLE_COUNT) from cl/train_ops.cl (every device), the rest from cl/train_ops_cpu.cl
 * (loaded only when a CPU-shaped path is on). */
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
  OPS_PORTABLE_COUNT,
  OPS_GEMM = OPS_PORTABLE_COUNT,
  OPS_PACK,
  OPS_LN_FWD_ITEM,
  OPS_LN_BWD_ITEM,
  OPS_XENT_ITEM,
  OPS_SUMSQ_ITEM,
  OPS_GELU_FWD_ITEM,
  OPS_GELU_BWD_ITEM,
  OPS_COLSUM_ITEM,
  OPS_EMBED_FWD_ITEM,
  OPS_EMBED_BWD_WTE_ITEM,
  OPS_EMBED_BWD_WPE_ITEM,
  OPS_KERNEL_COUNT
};
_Static_assert(OPS_PORTABLE_COUNT <= DUA_MAX_KERNELS_PER_PROGRAM,
               "cl/train_ops.cl is one program: too many kernels");
_Static_assert(OPS_KERNEL_COUNT - OPS_PORTABLE_COUNT <= DUA_MAX_KERNELS_PER_PROGRAM,
               "cl/train_ops_cpu.cl is one program: too many kernels");

/* Rows of a layer-norm backward work-group, and of a column-sum chunk (bias gradient): fixed, so the
 * reduction tree depends on the problem size only. */
#define DUA_OPS_LN_ROWS 16
#define DUA_OPS_COLSUM_ROWS 32

/* How the ops run on the device. dua_ops_create picks from the device type (see train_ops.c); the tests and
 * bench/train_ops_bench.c choose explicitly to compare the paths on one device. */
typedef enum dua_ops_row_kernels {
  DUA_OPS_ROW_AUTO = -1,
  DUA_OPS_ROW_GROUP = 0, /* a work-group per row, local-memory trees (GPUs) */
  DUA_OPS_ROW_ITEM = 1,  /* a work-item per row, no barriers (CPUs) */
} dua_ops_row_kernels;

typedef enum dua_ops_gemm {
  DUA_OPS_GEMM_AUTO = -1,
  DUA_OPS_GEMM_CLBLAST = 0, /* CLBlast SGEMM */
  DUA_OPS_GEMM_DUA = 1,     /* dua's register-tiled kernel without barriers (CPUs) */
} dua_ops_gemm;

typedef struct dua_ops_options {
  dua_ops_row_kernels row_kernels;
  dua_ops_gemm gemm;
  int clblast_cpu_params; /* -1 auto, 0 CLBlast's own parameters, 1 dua's override for CPU devices */
  /* tuning of the CPU kernels, 0 = the defaults (benchmark sweeps) */
  int item_wg, vw, gemm_mr, gemm_vw, gemm_nv, gemm_wg;
  int pack_a, pack_b_tn; /* -1 default, 0 or 1 */
} dua_ops_options;

void dua_ops_options_init(dua_ops_options *o);
dua_status dua_ops_create_with(dua_context *ctx, const dua_ops_options *o, dua_ops **out);
/* One line naming the chosen paths (benchmarks, logs). */
void dua_ops_describe(const dua_ops *ops, char *text, size_t size);

/* A host int32 staging array and its device copy. The write from host to device is not blocking; the
 * host array is reused only after the event of its previous write completed. */
typedef struct dua_ops_upload {
  int32_t *host;
  size_t host_count;
  cl_mem dev;
  size_t dev_bytes;
  cl_event pending;
} dua_ops_upload;

/* GEMM register tile of dua_ops_gemm (cl/train_ops_cpu.cl): rows x (vector width x vectors). */
typedef struct dua_ops_gemm_tile {
  int mr, vw, nv;
} dua_ops_gemm_tile;

struct dua_ops {
  dua_context *ctx;
  cl_kernel kernels[OPS_KERNEL_COUNT]; /* owned by the context's program cache; NULL when not loaded */
  size_t wg;                           /* work-group size of the portable kernels: a power of two */
  int row_item;                        /* row ops on the work-item-per-row kernels */
  int gemm_dua;                        /* linear layers on dua_ops_gemm instead of CLBlast */
  int clblast_params;                  /* 1: CLBlast runs with dua's CPU parameter override */
  size_t item_wg;                      /* work-group size of the work-item-per-row kernels */
  int vw;                              /* lanes of their row reductions */
  dua_ops_gemm_tile tile;
  size_t gemm_wg;   /* tiles per work-group of dua_ops_gemm (along N) */
  size_t stream_wg; /* work-group of the CPU streaming kernels (GELU, packing) */
  int pack_a;       /* dua_ops_gemm packs a transposed A too */
  int pack_b_tn;    /* ... and B also when A is transposed (weight gradients) */
  cl_mem scratch;   /* grow-only device scratch (reduction partials) */
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

/* Same with an explicit local size (local[0] divides the rounded global[0]; dims 2: local[1] = 1). */
dua_status dua_ops_launch_local(dua_ops *ops, const dua_ops_args *a, cl_uint dims, const size_t *global,
                                size_t local, const char *what);

/* Applies dua's CLBlast kernel parameters for CPU devices (train_ops_gemm.c); returns 1 when CLBlast took
 * them, 0 otherwise (never fatal: CLBlast then keeps its own). */
int dua_ops_clblast_cpu_params(dua_ops *ops);

/* dst [chunks, cols] (+)= column sums of src [rows, cols] (row stride ld) per chunk of `chunk` rows. */
dua_status dua_ops_colsum(dua_ops *ops, cl_mem dst, size_t dst_off, cl_mem src, size_t src_off, int rows,
                          int cols, int ld, int chunk, int accumulate);

#endif
