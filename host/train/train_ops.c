/* train_ops.c: the trainer's layer operations (train_ops.h): the choice of kernels per device type (GPU
 * shapes from cl/train_ops.cl, CPU shapes from cl/train_ops_cpu.cl: see dua_ops_create_with), scratch memory,
 * argument checks, host uploads of token/target ids, launches, and the elementwise and embedding ops. The
 * other ops are in train_ops_layers.c (layer norm, GELU, cross-entropy, sum of squares, AdamW) and
 * train_ops_gemm.c (the linear layer through CLBlast or dua's GEMM). */
#include "train/train_ops_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kernel_names[OPS_KERNEL_COUNT] = {
    [OPS_FILL] = "dua_ops_fill",
    [OPS_ACCUMULATE] = "dua_ops_accumulate",
    [OPS_ADD] = "dua_ops_add",
    [OPS_EMBED_FWD] = "dua_ops_embed_fwd",
    [OPS_EMBED_BWD_WTE] = "dua_ops_embed_bwd_wte",
    [OPS_EMBED_BWD_WPE] = "dua_ops_embed_bwd_wpe",
    [OPS_LN_FWD] = "dua_ops_ln_fwd",
    [OPS_LN_BWD] = "dua_ops_ln_bwd",
    [OPS_COLSUM] = "dua_ops_colsum",
    [OPS_GELU_FWD] = "dua_ops_gelu_fwd",
    [OPS_GELU_BWD] = "dua_ops_gelu_bwd",
    [OPS_BIAS_ROWS] = "dua_ops_bias_rows",
    [OPS_XENT] = "dua_ops_xent",
    [OPS_SUMSQ] = "dua_ops_sumsq",
    [OPS_ADAMW] = "dua_ops_adamw",
    [OPS_GEMM] = "dua_ops_gemm",
    [OPS_PACK] = "dua_ops_pack",
    [OPS_LN_FWD_ITEM] = "dua_ops_ln_fwd_item",
    [OPS_LN_BWD_ITEM] = "dua_ops_ln_bwd_item",
    [OPS_XENT_ITEM] = "dua_ops_xent_item",
    [OPS_SUMSQ_ITEM] = "dua_ops_sumsq_item",
    [OPS_GELU_FWD_ITEM] = "dua_ops_gelu_fwd_item",
    [OPS_GELU_BWD_ITEM] = "dua_ops_gelu_bwd_item",
    [OPS_COLSUM_ITEM] = "dua_ops_colsum_item",
    [OPS_EMBED_FWD_ITEM] = "dua_ops_embed_fwd_item",
    [OPS_EMBED_BWD_WTE_ITEM] = "dua_ops_embed_bwd_wte_item",
    [OPS_EMBED_BWD_WPE_ITEM] = "dua_ops_embed_bwd_wpe_item",
};

#define WG_CAP 256 /* work-group size cap (row reductions, elementwise) */

/* Defaults of the CPU path, measured with bench/train_ops_bench.c on PoCL 3.1 (2-core AVX-512 EPYC; see
 * bench/RESULTS.md, "Trainer ops on PoCL"). */
#define CPU_ITEM_WG 8 /* rows (work-items) per work-group of the row kernels */
#define CPU_VW 8      /* lanes of the row reductions */
#define CPU_GEMM_MR 8 /* dua_ops_gemm tile: 8 rows x 2 float8 */
#define CPU_GEMM_VW 8
#define CPU_GEMM_NV 2
#define CPU_GEMM_WG 4    /* column tiles per work-group */
#define CPU_STREAM_WG 64 /* work-group of the streaming kernels (GELU, GEMM packing) */

/* ---- creation ---------------------------------------------------------------------------------------- */

void dua_ops_options_init(dua_ops_options *o) {
  memset(o, 0, sizeof *o);
  o->row_kernels = DUA_OPS_ROW_AUTO;
  o->gemm = DUA_OPS_GEMM_AUTO;
  o->clblast_cpu_params = -1;
  o->pack_a = -1;
  o->pack_b_tn = -1;
}

void dua_ops_describe(const dua_ops *ops, char *text, size_t size) {
  if (ops->row_item)
    snprintf(text, size, "row kernels: a work-item per row (work-group %zu, %d lanes)", ops->item_wg,
             ops->vw);
  else
    snprintf(text, size, "row kernels: a work-group of %zu per row", ops->wg);
  const size_t used = strlen(text);
  if (ops->gemm_dua)
    snprintf(text + used, size - used, "; GEMM: dua_ops_gemm, tile %d x %dx%d, %zu tiles per work-group",
             ops->tile.mr, ops->tile.nv, ops->tile.vw, ops->gemm_wg);
  else
    snprintf(text + used, size - used, "; GEMM: CLBlast (%s parameters)",
             ops->clblast_params ? "dua's CPU" : "CLBlast's own");
}

/* The device's paths, unless DUA_TRAIN_OPS (a comma-separated list) overrides them: "portable" =
 * "group,clblast" (the GPU paths, also the kill switch of the CPU kernels), "item" / "group" for the row
 * kernels, "dua" / "clblast" for the GEMM. */
dua_status dua_ops_create(dua_context *ctx, dua_ops **out) {
  dua_ops_options o;
  dua_ops_options_init(&o);
  const char *env = getenv("DUA_TRAIN_OPS");
  if (env && *env) {
    char list[128];
    snprintf(list, sizeof list, "%s", env);
    for (char *save = NULL, *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
      if (!strcmp(tok, "portable"))
        o.row_kernels = DUA_OPS_ROW_GROUP, o.gemm = DUA_OPS_GEMM_CLBLAST;
      else if (!strcmp(tok, "group") || !strcmp(tok, "item"))
        o.row_kernels = !strcmp(tok, "item") ? DUA_OPS_ROW_ITEM : DUA_OPS_ROW_GROUP;
      else if (!strcmp(tok, "clblast") || !strcmp(tok, "dua"))
        o.gemm = !strcmp(tok, "dua") ? DUA_OPS_GEMM_DUA : DUA_OPS_GEMM_CLBLAST;
      else
        dua_log(ctx, DUA_LOG_WARNING, "DUA_TRAIN_OPS: ignoring \"%s\" (portable, group, item, clblast, dua)",
                tok);
    }
  }
  dua_status st = dua_ops_create_with(ctx, &o, out);
  if (st == DUA_SUCCESS) {
    char desc[256];
    dua_ops_describe(*out, desc, sizeof desc);
    dua_log(ctx, DUA_LOG_INFO, "train ops: %s", desc);
  }
  return st;
}

/* Loads kernels [first, last) of program `sources` built with options; lowers *wg to what they allow. */
static dua_status load_kernels(dua_ops *ops, const char *sources, const char *options, int first, int last,
                               size_t *wg) {
  for (int i = first; i < last; i++) {
    dua_status st = dua_program_kernel(ops->ctx, sources, options, kernel_names[i], &ops->kernels[i]);
    if (st != DUA_SUCCESS)
      return st;
    size_t kmax = 0;
    if (wg &&
        clGetKernelWorkGroupInfo(ops->kernels[i], ops->ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kmax,
                                 &kmax, NULL) == CL_SUCCESS &&
        kmax && kmax < *wg)
      *wg = kmax;
  }
  return DUA_SUCCESS;
}

static size_t pow2_floor(size_t x) {
  size_t p = 1;
  while (p * 2 <= x)
    p *= 2;
  return p;
}

/* Paths per device type. GPUs (and accelerators) keep the work-group-per-row kernels and CLBlast. CPU
 * devices get the work-item-per-row kernels (a CPU runtime runs a work-group as a loop over its work-items
 * and pays for every barrier of a local-memory tree) and dua_ops_gemm, which on PoCL beat CLBlast's SGEMM by
 * a large factor at the trainer's shapes (CLBlast picks its "direct" GEMM kernel with 16x16 tiles there:
 * bench/RESULTS.md). */
dua_status dua_ops_create_with(dua_context *ctx, const dua_ops_options *o, dua_ops **out) {
  if (!ctx || !out || !o)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_ops_create: %s is NULL",
                    !ctx   ? "ctx"
                    : !out ? "out"
                           : "options");
  *out = NULL;
  const int vw = o->vw > 0 ? o->vw : CPU_VW;
  const dua_ops_gemm_tile tile = {o->gemm_mr > 0 ? o->gemm_mr : CPU_GEMM_MR,
                                  o->gemm_vw > 0 ? o->gemm_vw : CPU_GEMM_VW,
                                  o->gemm_nv > 0 ? o->gemm_nv : CPU_GEMM_NV};
  if ((vw != 4 && vw != 8 && vw != 16) || (tile.vw != 4 && tile.vw != 8 && tile.vw != 16) || tile.mr > 16 ||
      tile.nv > 4)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_ops_create: lanes %d / GEMM tile %d x %dx%d out of range (lanes and vector widths "
                    "4, 8 or 16, at most 16 rows and 4 vectors)",
                    vw, tile.mr, tile.nv, tile.vw);
  dua_ops *ops = calloc(1, sizeof *ops);
  if (!ops)
    return dua_fail(ctx, DUA_ERROR_OUT_OF_MEMORY, "dua_ops_create: out of host memory");
  ops->ctx = ctx;
  const int cpu = ctx->info.type == DUA_DEVICE_CPU;
  ops->row_item = o->row_kernels == DUA_OPS_ROW_AUTO ? cpu : o->row_kernels == DUA_OPS_ROW_ITEM;
  ops->gemm_dua = o->gemm == DUA_OPS_GEMM_AUTO ? cpu : o->gemm == DUA_OPS_GEMM_DUA;
  ops->item_wg = o->item_wg > 0 ? (size_t)o->item_wg : CPU_ITEM_WG;
  ops->vw = vw;
  ops->tile = tile;
  ops->gemm_wg = o->gemm_wg > 0 ? (size_t)o->gemm_wg : CPU_GEMM_WG;
  ops->pack_a = o->pack_a >= 0 ? o->pack_a : 1;
  ops->pack_b_tn = o->pack_b_tn >= 0 ? o->pack_b_tn : 1;
  size_t wg = WG_CAP;
  if (ctx->info.max_work_group_size && ctx->info.max_work_group_size < wg)
    wg = ctx->info.max_work_group_size;
  dua_status st = load_kernels(ops, "train_ops", "", 0, OPS_PORTABLE_COUNT, &wg);
  if (st == DUA_SUCCESS && (ops->row_item || ops->gemm_dua)) {
    char options[160];
    snprintf(options, sizeof options, "-DDUA_VW=%d -DDUA_GEMM_MR=%d -DDUA_GEMM_VW=%d -DDUA_GEMM_NV=%d",
             ops->vw, ops->tile.mr, ops->tile.vw, ops->tile.nv);
    size_t cpu_wg = ops->item_wg > ops->gemm_wg ? ops->item_wg : ops->gemm_wg;
    cpu_wg = cpu_wg > CPU_STREAM_WG ? cpu_wg : CPU_STREAM_WG;
    st = load_kernels(ops, "train_ops_cpu", options, OPS_PORTABLE_COUNT, OPS_KERNEL_COUNT, &cpu_wg);
    ops->item_wg = ops->item_wg < cpu_wg ? ops->item_wg : cpu_wg;
    ops->gemm_wg = ops->gemm_wg < cpu_wg ? ops->gemm_wg : cpu_wg;
    ops->stream_wg = CPU_STREAM_WG < cpu_wg ? CPU_STREAM_WG : cpu_wg;
  }
  if (st != DUA_SUCCESS) {
    free(ops);
    return st;
  }
  ops->wg = pow2_floor(wg);
  if (!ops->gemm_dua && (o->clblast_cpu_params == 1 || (o->clblast_cpu_params < 0 && cpu)))
    ops->clblast_params = dua_ops_clblast_cpu_params(ops);
  *out = ops;
  return DUA_SUCCESS;
}

static void upload_release(dua_ops_upload *u) {
  if (u->pending) {
    clWaitForEvents(1, &u->pending); /* the host array must outlive its transfer */
    clReleaseEvent(u->pending);
  }
  if (u->dev)
    clReleaseMemObject(u->dev);
  free(u->host);
}

void dua_ops_destroy(dua_ops *ops) {
  if (!ops)
    return;
  upload_release(&ops->tokens);
  upload_release(&ops->csr);
  upload_release(&ops->targets);
  if (ops->scratch)
    clReleaseMemObject(ops->scratch);
  free(ops->counts);
  free(ops);
}

/* ---- shared helpers ---------------------------------------------------------------------------------- */

dua_status dua_ops_check(dua_ops *ops, const char *fn) {
  if (!ops)
    return dua_fail(NULL, DUA_ERROR_INVALID_ARGUMENT, "%s: ops is NULL", fn);
  return DUA_SUCCESS;
}

dua_status dua_ops_check_span(dua_ops *ops, const char *fn, const char *name, dua_span s, size_t n) {
  if (!s.buf)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s.buf is NULL", fn, name);
  if (s.buf->ctx != ops->ctx)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s.buf belongs to another context", fn, name);
  const size_t cap = s.buf->bytes / sizeof(float);
  if (s.off > cap || n > cap - s.off)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: %s spans elements [%zu, %zu + %zu) but its buffer holds %zu elements", fn, name,
                    s.off, s.off, n, cap);
  return DUA_SUCCESS;
}

dua_status dua_ops_check_dim(dua_ops *ops, const char *fn, const char *name, long long value) {
  if (value <= 0 || value > INT32_MAX)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s = %lld must be in [1, %d]", fn, name, value,
                    INT32_MAX);
  return DUA_SUCCESS;
}

dua_status dua_ops_check_disjoint(dua_ops *ops, const char *fn, const char *an, dua_span a, size_t na,
                                  const char *bn, dua_span b, size_t nb) {
  if (a.buf && a.buf == b.buf && a.off < b.off + nb && b.off < a.off + na)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s overlaps %s in one buffer", fn, an, bn);
  return DUA_SUCCESS;
}

dua_status dua_ops_scratch(dua_ops *ops, size_t bytes, cl_mem *out) {
  if (ops->scratch && bytes <= ops->scratch_bytes) {
    *out = ops->scratch;
    return DUA_SUCCESS;
  }
  bytes += bytes / 2; /* grow geometrically */
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(ops->ctx->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  if (err != CL_SUCCESS)
    return dua_fail(ops->ctx, (dua_status)err, "train ops: allocating %zu bytes of scratch failed: %s", bytes,
                    dua_status_string((dua_status)err));
  if (ops->scratch) /* queued commands keep the old buffer alive until they finish */
    clReleaseMemObject(ops->scratch);
  ops->scratch = mem;
  ops->scratch_bytes = bytes;
  *out = mem;
  return DUA_SUCCESS;
}

/* Host staging array of at least count ints, once its previous transfer finished. */
dua_status dua_ops_upload_reserve(dua_ops *ops, dua_ops_upload *u, size_t count) {
  if (u->pending) {
    cl_int err = clWaitForEvents(1, &u->pending);
    clReleaseEvent(u->pending);
    u->pending = NULL;
    if (err != CL_SUCCESS)
      return dua_fail(ops->ctx, (dua_status)err, "train ops: an earlier id upload failed: %s",
                      dua_status_string((dua_status)err));
  }
  if (count > u->host_count) {
    int32_t *h = realloc(u->host, count * sizeof *h);
    if (!h)
      return dua_fail(ops->ctx, DUA_ERROR_OUT_OF_MEMORY, "train ops: out of host memory (%zu ids)", count);
    u->host = h;
    u->host_count = count;
  }
  return DUA_SUCCESS;
}

/* Enqueues the (non-blocking) write of host[0..count) to the device copy, grown if needed. */
dua_status dua_ops_upload_send(dua_ops *ops, dua_ops_upload *u, size_t count) {
  const size_t bytes = count * sizeof(int32_t);
  cl_int err = CL_SUCCESS;
  if (!u->dev || bytes > u->dev_bytes) {
    const size_t want = bytes + bytes / 2;
    cl_mem mem = clCreateBuffer(ops->ctx->cl_ctx, CL_MEM_READ_ONLY, want, NULL, &err);
    if (err != CL_SUCCESS)
      return dua_fail(ops->ctx, (dua_status)err, "train ops: allocating %zu bytes for ids failed: %s", want,
                      dua_status_string((dua_status)err));
    if (u->dev)
      clReleaseMemObject(u->dev);
    u->dev = mem;
    u->dev_bytes = want;
  }
  err = clEnqueueWriteBuffer(ops->ctx->queue, u->dev, CL_FALSE, 0, bytes, u->host, 0, NULL, &u->pending);
  if (err != CL_SUCCESS) {
    u->pending = NULL;
    return dua_fail(ops->ctx, (dua_status)err, "train ops: uploading %zu ids failed: %s", count,
                    dua_status_string((dua_status)err));
  }
  return DUA_SUCCESS;
}

dua_status dua_ops_launch(dua_ops *ops, const dua_ops_args *a, cl_uint dims, const size_t *global,
                          const char *what) {
  return dua_ops_launch_local(ops, a, dims, global, ops->wg, what);
}

dua_status dua_ops_launch_local(dua_ops *ops, const dua_ops_args *a, cl_uint dims, const size_t *global,
                                size_t local, const char *what) {
  if (a->err != CL_SUCCESS)
    return dua_fail(ops->ctx, (dua_status)a->err, "%s: setting kernel argument %u failed: %s", what,
                    a->index - 1, dua_status_string((dua_status)a->err));
  size_t g[2] = {(global[0] + local - 1) / local * local, dims > 1 ? global[1] : 1};
  size_t l[2] = {local, 1};
  cl_int err = clEnqueueNDRangeKernel(ops->ctx->queue, a->kernel, dims, NULL, g, l, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return dua_fail(ops->ctx, (dua_status)err, "%s: launching the kernel failed: %s", what,
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

dua_status dua_ops_colsum(dua_ops *ops, cl_mem dst, size_t dst_off, cl_mem src, size_t src_off, int rows,
                          int cols, int ld, int chunk, int accumulate) {
  dua_ops_args a = dua_ops_args_of(ops, ops->row_item ? OPS_COLSUM_ITEM : OPS_COLSUM);
  cl_ulong doff = dst_off, soff = src_off;
  dua_ops_arg(&a, sizeof dst, &dst);
  dua_ops_arg(&a, sizeof doff, &doff);
  dua_ops_arg(&a, sizeof src, &src);
  dua_ops_arg(&a, sizeof soff, &soff);
  dua_ops_arg_int(&a, rows);
  dua_ops_arg_int(&a, cols);
  dua_ops_arg_int(&a, ld);
  dua_ops_arg_int(&a, chunk);
  dua_ops_arg_int(&a, accumulate);
  const size_t chunks = (size_t)((rows + chunk - 1) / chunk);
  if (ops->row_item) { /* ops->vw columns per work-item */
    const size_t global[2] = {((size_t)cols + (size_t)ops->vw - 1) / (size_t)ops->vw, chunks};
    return dua_ops_launch_local(ops, &a, 2, global, global[0] < ops->item_wg ? global[0] : ops->item_wg,
                                "dua_ops_colsum");
  }
  const size_t global[2] = {(size_t)cols, chunks};
  return dua_ops_launch(ops, &a, 2, global, "dua_ops_colsum");
}

/* ---- elementwise ------------------------------------------------------------------------------------- */

dua_status dua_ops_check_n(dua_ops *ops, const char *fn, size_t n) {
  if (n == 0)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: n = 0 (must be >= 1)", fn);
  return DUA_SUCCESS;
}

dua_status dua_op_fill(dua_ops *ops, dua_span x, size_t n, float value) {
  static const char fn[] = "dua_op_fill";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "x", x, n)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, OPS_FILL);
  dua_ops_arg_span(&a, x);
  dua_ops_arg_ulong(&a, n);
  dua_ops_arg_float(&a, value);
  return dua_ops_launch(ops, &a, 1, &n, fn);
}

dua_status dua_op_accumulate(dua_ops *ops, dua_span dst, dua_span src, size_t n) {
  static const char fn[] = "dua_op_accumulate";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "dst", dst, n)) || (st = dua_ops_check_span(ops, fn, "src", src, n)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, OPS_ACCUMULATE);
  dua_ops_arg_span(&a, dst);
  dua_ops_arg_span(&a, src);
  dua_ops_arg_ulong(&a, n);
  return dua_ops_launch(ops, &a, 1, &n, fn);
}

dua_status dua_op_add(dua_ops *ops, dua_span out, dua_span a_in, dua_span b_in, size_t n) {
  static const char fn[] = "dua_op_add";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = dua_ops_check_n(ops, fn, n)) ||
      (st = dua_ops_check_span(ops, fn, "out", out, n)) || (st = dua_ops_check_span(ops, fn, "a", a_in, n)) ||
      (st = dua_ops_check_span(ops, fn, "b", b_in, n)))
    return st;
  dua_ops_args a = dua_ops_args_of(ops, OPS_ADD);
  dua_ops_arg_span(&a, out);
  dua_ops_arg_span(&a, a_in);
  dua_ops_arg_span(&a, b_in);
  dua_ops_arg_ulong(&a, n);
  return dua_ops_launch(ops, &a, 1, &n, fn);
}

/* ---- embedding --------------------------------------------------------------------------------------- */

/* Shapes and token ids of the embedding ops; R = B * T. */
static dua_status check_embed(dua_ops *ops, const char *fn, const int32_t *tokens, int B, int T, int C,
                              int V) {
  dua_status st;
  if ((st = dua_ops_check_dim(ops, fn, "B", B)) || (st = dua_ops_check_dim(ops, fn, "T", T)) ||
      (st = dua_ops_check_dim(ops, fn, "C", C)) || (st = dua_ops_check_dim(ops, fn, "V", V)) ||
      (st = dua_ops_check_dim(ops, fn, "B * T", (long long)B * T)))
    return st;
  if (!tokens)
    return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: tokens is NULL", fn);
  const size_t R = (size_t)B * (size_t)T;
  for (size_t r = 0; r < R; r++)
    if (tokens[r] < 0 || tokens[r] >= V)
      return dua_fail(ops->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: tokens[%zu] = %d is outside [0, %d)", fn, r,
                      (int)tokens[r], V);
  return DUA_SUCCESS;
}

dua_status dua_op_embed_forward(dua_ops *ops, dua_span out, const int32_t *tokens, dua_span wte, dua_span wpe,
                                int B, int T, int C, int V) {
  static const char fn[] = "dua_op_embed_forward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = check_embed(ops, fn, tokens, B, T, C, V)))
    return st;
  const size_t R = (size_t)B * (size_t)T, RC = R * (size_t)C;
  if ((st = dua_ops_check_span(ops, fn, "out", out, RC)) ||
      (st = dua_ops_check_span(ops, fn, "wte", wte, (size_t)V * (size_t)C)) ||
      (st = dua_ops_check_span(ops, fn, "wpe", wpe, (size_t)T * (size_t)C)) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, RC, "wte", wte, (size_t)V * (size_t)C)) ||
      (st = dua_ops_check_disjoint(ops, fn, "out", out, RC, "wpe", wpe, (size_t)T * (size_t)C)))
    return st;
  if ((st = dua_ops_upload_reserve(ops, &ops->tokens, R)) != DUA_SUCCESS)
    return st;
  memcpy(ops->tokens.host, tokens, R * sizeof(int32_t));
  if ((st = dua_ops_upload_send(ops, &ops->tokens, R)) != DUA_SUCCESS)
    return st;
  dua_ops_args a = dua_ops_args_of(ops, ops->row_item ? OPS_EMBED_FWD_ITEM : OPS_EMBED_FWD);
  dua_ops_arg_span(&a, out);
  dua_ops_arg(&a, sizeof(cl_mem), &ops->tokens.dev);
  dua_ops_arg_span(&a, wte);
  dua_ops_arg_span(&a, wpe);
  if (ops->row_item) { /* a work-item a row */
    dua_ops_arg_int(&a, (int)R);
    dua_ops_arg_int(&a, T);
    dua_ops_arg_int(&a, C);
    return dua_ops_launch_local(ops, &a, 1, &R, ops->item_wg, fn);
  }
  dua_ops_arg_ulong(&a, R);
  dua_ops_arg_int(&a, T);
  dua_ops_arg_int(&a, C);
  return dua_ops_launch(ops, &a, 1, &RC, fn);
}

dua_status dua_op_embed_backward(dua_ops *ops, dua_span dwte, dua_span dwpe, dua_span dout,
                                 const int32_t *tokens, int B, int T, int C, int V) {
  static const char fn[] = "dua_op_embed_backward";
  dua_status st;
  if ((st = dua_ops_check(ops, fn)) || (st = check_embed(ops, fn, tokens, B, T, C, V)))
    return st;
  const size_t R = (size_t)B * (size_t)T, RC = R * (size_t)C, VC = (size_t)V * (size_t)C,
               TC = (size_t)T * (size_t)C;
  if ((st = dua_ops_check_span(ops, fn, "dwte", dwte, VC)) ||
      (st = dua_ops_check_span(ops, fn, "dwpe", dwpe, TC)) ||
      (st = dua_ops_check_span(ops, fn, "dout", dout, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dwte", dwte, VC, "dout", dout, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dwpe", dwpe, TC, "dout", dout, RC)) ||
      (st = dua_ops_check_disjoint(ops, fn, "dwte", dwte, VC, "dwpe", dwpe, TC)))
    return st;
  /* CSR on the host: counts per token, then the distinct tokens in ascending order, their row ranges and
   * the rows of each token in ascending order (a counting sort; counts[v] becomes v's next free slot) */
  if ((size_t)V + 1 > ops->counts_count) {
    int32_t *c = realloc(ops->counts, ((size_t)V + 1) * sizeof *c);
    if (!c)
      return dua_fail(ops->ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    ops->counts = c;
    ops->counts_count = (size_t)V + 1;
  }
  int32_t *counts = ops->counts;
  memset(counts, 0, (size_t)V * sizeof *counts);
  for (size_t r = 0; r < R; r++)
    counts[tokens[r]]++;
  int U = 0;
  for (int v = 0; v < V; v++)
    U += counts[v] > 0;
  const size_t total = 2 * (size_t)U + 1 + R;
  if ((st = dua_ops_upload_reserve(ops, &ops->csr, total)) != DUA_SUCCESS)
    return st;
  int32_t *tok = ops->csr.host, *start = tok + U, *rows = start + U + 1;
  int u = 0, pos = 0;
  for (int v = 0; v < V; v++)
    if (counts[v] > 0) {
      tok[u] = v;
      start[u++] = pos;
      const int n = counts[v];
      counts[v] = pos;
      pos += n;
    }
  start[U] = pos;
  for (size_t r = 0; r < R; r++)
    rows[counts[tokens[r]]++] = (int32_t)r;
  if ((st = dua_ops_upload_send(ops, &ops->csr, total)) != DUA_SUCCESS)
    return st;

  const int item = ops->row_item;
  dua_ops_args a = dua_ops_args_of(ops, item ? OPS_EMBED_BWD_WTE_ITEM : OPS_EMBED_BWD_WTE);
  dua_ops_arg_span(&a, dwte);
  dua_ops_arg_span(&a, dout);
  dua_ops_arg(&a, sizeof(cl_mem), &ops->csr.dev);
  dua_ops_arg_int(&a, U);
  dua_ops_arg_int(&a, C);
  /* CPU kernels: work-item (column vector, token or position) */
  const size_t cvecs = ((size_t)C + (size_t)ops->vw - 1) / (size_t)ops->vw;
  const size_t local = cvecs < ops->item_wg ? cvecs : ops->item_wg;
  const size_t uc = (size_t)U * (size_t)C, uc_item[2] = {cvecs, (size_t)U}, tc_item[2] = {cvecs, (size_t)T};
  if ((st = item ? dua_ops_launch_local(ops, &a, 2, uc_item, local, "dua_op_embed_backward (dwte)")
                 : dua_ops_launch(ops, &a, 1, &uc, "dua_op_embed_backward (dwte)")) != DUA_SUCCESS)
    return st;
  a = dua_ops_args_of(ops, item ? OPS_EMBED_BWD_WPE_ITEM : OPS_EMBED_BWD_WPE);
  dua_ops_arg_span(&a, dwpe);
  dua_ops_arg_span(&a, dout);
  dua_ops_arg_int(&a, B);
  dua_ops_arg_int(&a, T);
  dua_ops_arg_int(&a, C);
  return item ? dua_ops_launch_local(ops, &a, 2, tc_item, local, "dua_op_embed_backward (dwpe)")
              : dua_ops_launch(ops, &a, 1, &TC, "dua_op_embed_backward (dwpe)");
}
