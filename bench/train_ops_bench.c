/* train_ops_bench.c: times the trainer's layer ops (host/train/train_ops.h) at the trainer's shapes on one
 * OpenCL device: every op is run `reps` times between two dua_context_finish calls (wall clock, so launch
 * and host work count too), the per-call time is the median over `samples` such batches, and each line
 * gives ms per call and GFLOP/s (GEMMs) or GB/s (memory-bound ops, bytes each call must move at least).
 *
 *   train_ops_bench [--device SEL] [--rows 2048,8192] [--width 128,256] [--vocab 8,256] [--op SUBSTR]
 *                   [--min-time S] [--samples N] [--quick]
 *
 * Shapes: R = batch * tokens rows, C = width, the four linear layers of a GPT block (qkv C -> 3C, attproj
 * C -> C, fc C -> 4C, fcproj 4C -> C) and the tied head C -> V; layer norm and GELU on [R, C] and [R, 4C];
 * softmax cross-entropy on [R, V]; AdamW and the sum of squares over a 2-layer model's parameters. Not
 * installed: a development tool (bench/RESULTS.md, "Trainer ops on PoCL"). */
#include "train/train_ops_internal.h"

#include <clblast_c.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXV 8

typedef struct bench_opts {
  const char *device, *op;
  int rows[MAXV], nrows, width[MAXV], nwidth, vocab[MAXV], nvocab;
  double min_time;
  int samples;
  dua_ops_options ops;
  const char *clblast_set[MAXV]; /* "Kernel:NAME=V,NAME=V,..." for CLBlastOverrideParameters */
  int nclblast_set;
} bench_opts;

/* --clblast-set: the investigation of CLBlast's parameters on a device (bench/RESULTS.md). */
static void clblast_set(dua_context *ctx, const char *spec) {
  char kernel[64], buf[512];
  const char *colon = strchr(spec, ':');
  if (!colon || (size_t)(colon - spec) >= sizeof kernel || strlen(colon + 1) >= sizeof buf) {
    fprintf(stderr, "train_ops_bench: --clblast-set wants Kernel:NAME=V,...\n");
    exit(2);
  }
  memcpy(kernel, spec, (size_t)(colon - spec));
  kernel[colon - spec] = 0;
  strcpy(buf, colon + 1);
  const char *names[32];
  size_t values[32], n = 0;
  for (char *tok = strtok(buf, ","); tok && n < 32; tok = strtok(NULL, ",")) {
    char *eq = strchr(tok, '=');
    if (!eq) {
      fprintf(stderr, "train_ops_bench: --clblast-set: %s is not NAME=V\n", tok);
      exit(2);
    }
    *eq = 0;
    names[n] = tok;
    values[n++] = (size_t)strtoul(eq + 1, NULL, 10);
  }
  const CLBlastStatusCode code =
      CLBlastOverrideParameters(ctx->device, kernel, CLBlastPrecisionSingle, n, names, values);
  printf("CLBlastOverrideParameters(%s, %zu parameters): %d\n", kernel, n, (int)code);
  if (code != CLBlastSuccess)
    exit(1);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(dua_context *ctx, dua_status st, const char *what) {
  fprintf(stderr, "train_ops_bench: %s: %s: %s\n", what, dua_status_string(st),
          ctx ? dua_context_last_error(ctx) : "");
  exit(1);
}

#define TRY(ctx, call)                                                                                       \
  do {                                                                                                       \
    dua_status st_ = (call);                                                                                 \
    if (st_ != DUA_SUCCESS)                                                                                  \
      die(ctx, st_, #call);                                                                                  \
  } while (0)

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double g_min_s; /* the fastest batch of the case being reported */

/* One benchmark case: fn(b) enqueues one call of the op. */
typedef struct bench bench;
typedef void (*bench_fn)(bench *b);

struct bench {
  dua_context *ctx;
  dua_ops *ops;
  dua_buffer *buf; /* every operand in one buffer, at the offsets below */
  int R, C, OC, V, B, T;
  dua_span x, y, z, w, bias, dx, dw, dbias, mean, rstd, tmp;
  int32_t *tokens, *targets;
  size_t n;
};

/* Median seconds per call of fn: reps calls between two finishes, reps grown until a batch takes
 * min_time (at least one call), then `samples` batches. */
static double time_op(bench *b, bench_fn fn, const bench_opts *o) {
  fn(b); /* warm-up: program builds, CLBlast compiles, scratch growth */
  TRY(b->ctx, dua_context_finish(b->ctx));
  int reps = 1;
  for (;;) {
    const double t0 = now_s();
    for (int i = 0; i < reps; i++)
      fn(b);
    TRY(b->ctx, dua_context_finish(b->ctx));
    const double t = now_s() - t0;
    if (t >= o->min_time || reps >= 1 << 20)
      break;
    const double want = t > 0 ? o->min_time / t * reps * 1.2 : reps * 10.0;
    reps = want > reps * 10.0 ? reps * 10 : (int)want + 1;
  }
  double s[64];
  const int n = o->samples < 64 ? o->samples : 64;
  for (int k = 0; k < n; k++) {
    const double t0 = now_s();
    for (int i = 0; i < reps; i++)
      fn(b);
    TRY(b->ctx, dua_context_finish(b->ctx));
    s[k] = (now_s() - t0) / reps;
  }
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  g_min_s = s[0];
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* ---- the ops ----------------------------------------------------------------------------------------- */

static void mm_fwd(bench *b) {
  TRY(b->ctx, dua_op_matmul_forward(b->ops, b->y, b->x, b->w, b->bias, b->R, b->C, b->OC));
}
static void mm_fwd_nobias(bench *b) {
  const dua_span none = {NULL, 0};
  TRY(b->ctx, dua_op_matmul_forward(b->ops, b->y, b->x, b->w, none, b->R, b->C, b->OC));
}
static void mm_bwd(bench *b) {
  TRY(b->ctx, dua_op_matmul_backward(b->ops, b->dx, b->dw, b->dbias, b->y, b->x, b->w, b->R, b->C, b->OC));
}
static void mm_bwd_nobias(bench *b) {
  const dua_span none = {NULL, 0};
  TRY(b->ctx, dua_op_matmul_backward(b->ops, b->dx, b->dw, none, b->y, b->x, b->w, b->R, b->C, b->OC));
}
static void mm_bwd_dw(bench *b) { /* the weight gradient alone (the first layer's backward) */
  const dua_span none = {NULL, 0};
  TRY(b->ctx, dua_op_matmul_backward(b->ops, none, b->dw, none, b->y, b->x, b->w, b->R, b->C, b->OC));
}
static void ln_fwd(bench *b) {
  TRY(b->ctx, dua_op_layernorm_forward(b->ops, b->y, b->mean, b->rstd, b->x, b->w, b->bias, b->R, b->C));
}
static void ln_bwd(bench *b) {
  TRY(b->ctx, dua_op_layernorm_backward(b->ops, b->dx, b->dw, b->dbias, b->z, b->x, b->w, b->mean, b->rstd,
                                        b->R, b->C));
}
static void gelu_fwd(bench *b) {
  TRY(b->ctx, dua_op_gelu_forward(b->ops, b->y, b->x, b->n));
}
static void gelu_bwd(bench *b) {
  TRY(b->ctx, dua_op_gelu_backward(b->ops, b->dx, b->x, b->z, b->n));
}
static void xent(bench *b) {
  const dua_span none = {NULL, 0};
  TRY(b->ctx,
      dua_op_crossentropy(b->ops, b->mean, b->y, none, b->x, b->targets, -1, 1.0f / b->R, b->R, b->V));
}
static void embed_fwd(bench *b) {
  TRY(b->ctx, dua_op_embed_forward(b->ops, b->y, b->tokens, b->w, b->z, b->B, b->T, b->C, b->V));
}
static void embed_bwd(bench *b) {
  TRY(b->ctx, dua_op_embed_backward(b->ops, b->dw, b->dbias, b->x, b->tokens, b->B, b->T, b->C, b->V));
}
static void add(bench *b) {
  TRY(b->ctx, dua_op_add(b->ops, b->y, b->x, b->z, b->n));
}
static void fill(bench *b) {
  TRY(b->ctx, dua_op_fill(b->ops, b->y, b->n, 0.0f));
}
static void adamw(bench *b) {
  TRY(b->ctx, dua_op_adamw(b->ops, b->x, b->y, b->z, b->tmp, b->n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, 0.5f));
}
static void sumsq(bench *b) {
  float r;
  TRY(b->ctx, dua_op_sumsq(b->ops, b->x, b->n, &r));
}

/* ---- cases ------------------------------------------------------------------------------------------- */

/* Lays out n_i elements for each of the k spans in one buffer, filled with small random values. */
static void alloc_spans(bench *b, dua_span **spans, const size_t *sizes, int k) {
  size_t total = 0;
  for (int i = 0; i < k; i++)
    total += (sizes[i] + 63) / 64 * 64;
  float *host = malloc(total * sizeof *host);
  if (!host) {
    fprintf(stderr, "train_ops_bench: out of host memory\n");
    exit(1);
  }
  uint64_t s = 0x1234567ull;
  for (size_t i = 0; i < total; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    host[i] = ((float)(s >> 40) / 16777216.0f - 0.5f) * 0.5f;
  }
  dua_buffer_destroy(b->buf);
  b->buf = NULL;
  TRY(b->ctx, dua_buffer_create(b->ctx, total * sizeof *host, &b->buf));
  TRY(b->ctx, dua_buffer_write(b->buf, 0, total * sizeof *host, host));
  free(host);
  size_t at = 0;
  for (int i = 0; i < k; i++) {
    spans[i]->buf = b->buf;
    spans[i]->off = at;
    at += (sizes[i] + 63) / 64 * 64;
  }
}

static int wanted(const bench_opts *o, const char *name) {
  return !o->op || strstr(name, o->op) != NULL;
}

/* One line: median ms per call and its rate, then the fastest batch's (other processes only slow a batch
 * down, so the minimum is the steadier figure for comparisons on a shared machine). */
static void report(const char *name, const char *shape, double s, double flops, double bytes) {
  printf("%-14s %-30s %9.3f ms", name, shape, s * 1e3);
  const double work = flops > 0 ? flops : bytes;
  const char *unit = flops > 0 ? "GFLOP/s" : "GB/s";
  if (work > 0)
    printf(" %8.2f %-7s  (min %8.3f ms %8.2f)", work / s * 1e-9, unit, g_min_s * 1e3, work / g_min_s * 1e-9);
  printf("\n");
  fflush(stdout);
}

static void run_linear(bench *b, const bench_opts *o, const char *layer, int R, int C, int OC, int has_bias) {
  char name[32], shape[64];
  snprintf(shape, sizeof shape, "%s R=%d C=%d OC=%d", layer, R, C, OC);
  const size_t RC = (size_t)R * C, ROC = (size_t)R * OC, WN = (size_t)OC * C;
  b->R = R, b->C = C, b->OC = OC;
  dua_span *sp[] = {&b->x, &b->y, &b->w, &b->bias, &b->dx, &b->dw, &b->dbias};
  const size_t sz[] = {RC, ROC, WN, (size_t)OC, RC, WN, (size_t)OC};
  snprintf(name, sizeof name, "matmul_fwd");
  const double flops = 2.0 * (double)R * C * OC;
  if (wanted(o, name) || wanted(o, shape)) {
    alloc_spans(b, sp, sz, 7);
    report(name, shape, time_op(b, has_bias ? mm_fwd : mm_fwd_nobias, o), flops, 0);
  }
  snprintf(name, sizeof name, "matmul_bwd");
  if (wanted(o, name) || wanted(o, shape)) {
    alloc_spans(b, sp, sz, 7);
    report(name, shape, time_op(b, has_bias ? mm_bwd : mm_bwd_nobias, o), 2 * flops, 0);
  }
  snprintf(name, sizeof name, "matmul_bwd_dw");
  if (wanted(o, name)) {
    alloc_spans(b, sp, sz, 7);
    report(name, shape, time_op(b, mm_bwd_dw, o), flops, 0);
  }
}

static void run_rows(bench *b, const bench_opts *o, int R, int C) {
  char shape[64];
  const size_t RC = (size_t)R * C;
  b->R = R, b->C = C;
  snprintf(shape, sizeof shape, "R=%d C=%d", R, C);
  dua_span *sp[] = {&b->x, &b->y, &b->z, &b->w, &b->bias, &b->mean, &b->rstd, &b->dx, &b->dw, &b->dbias};
  const size_t sz[] = {RC, RC, RC, (size_t)C, (size_t)C, (size_t)R, (size_t)R, RC, (size_t)C, (size_t)C};
  if (wanted(o, "layernorm_fwd")) {
    alloc_spans(b, sp, sz, 10);
    report("layernorm_fwd", shape, time_op(b, ln_fwd, o), 0, 2.0 * RC * 4);
  }
  if (wanted(o, "layernorm_bwd")) {
    alloc_spans(b, sp, sz, 10);
    ln_fwd(b); /* sane mean and rstd */
    report("layernorm_bwd", shape, time_op(b, ln_bwd, o), 0, 4.0 * RC * 4);
  }
  b->n = RC * 4; /* GELU on the MLP's hidden [R, 4C] */
  snprintf(shape, sizeof shape, "n=R*4C=%zu", b->n);
  dua_span *gp[] = {&b->x, &b->y, &b->z, &b->dx};
  const size_t gs[] = {b->n, b->n, b->n, b->n};
  if (wanted(o, "gelu_fwd")) {
    alloc_spans(b, gp, gs, 4);
    report("gelu_fwd", shape, time_op(b, gelu_fwd, o), 0, 2.0 * (double)b->n * 4);
  }
  if (wanted(o, "gelu_bwd")) {
    alloc_spans(b, gp, gs, 4);
    report("gelu_bwd", shape, time_op(b, gelu_bwd, o), 0, 4.0 * (double)b->n * 4);
  }
  b->n = RC;
  snprintf(shape, sizeof shape, "n=R*C=%zu", b->n);
  if (wanted(o, "add")) {
    alloc_spans(b, gp, gs, 3);
    report("add", shape, time_op(b, add, o), 0, 3.0 * (double)b->n * 4);
  }
  if (wanted(o, "fill")) {
    alloc_spans(b, gp, gs, 3);
    report("fill", shape, time_op(b, fill, o), 0, (double)b->n * 4);
  }
}

static void run_vocab(bench *b, const bench_opts *o, int R, int C, int V) {
  char shape[64];
  b->R = R, b->C = C, b->V = V, b->T = 32, b->B = R / 32;
  for (int r = 0; r < R; r++) {
    b->tokens[r] = (int32_t)((r * 7919u + 13u) % (unsigned)V);
    b->targets[r] = r % 32 == 0 ? -1 : (int32_t)((r * 104729u + 7u) % (unsigned)V);
  }
  run_linear(b, o, "head", R, C, V, 0);
  snprintf(shape, sizeof shape, "R=%d V=%d", R, V);
  const size_t RV = (size_t)R * V;
  dua_span *xp[] = {&b->x, &b->y, &b->mean};
  const size_t xs[] = {RV, RV, (size_t)R};
  if (wanted(o, "crossentropy")) {
    alloc_spans(b, xp, xs, 3);
    report("crossentropy", shape, time_op(b, xent, o), 0, 2.0 * RV * 4);
  }
  snprintf(shape, sizeof shape, "R=%d C=%d V=%d", R, C, V);
  const size_t RC = (size_t)R * C;
  dua_span *ep[] = {&b->x, &b->y, &b->w, &b->z, &b->dw, &b->dbias};
  const size_t es[] = {RC, RC, (size_t)V * C, (size_t)b->T * C, (size_t)V * C, (size_t)b->T * C};
  if (wanted(o, "embed_fwd")) {
    alloc_spans(b, ep, es, 6);
    report("embed_fwd", shape, time_op(b, embed_fwd, o), 0, 2.0 * RC * 4);
  }
  if (wanted(o, "embed_bwd")) {
    alloc_spans(b, ep, es, 6);
    report("embed_bwd", shape, time_op(b, embed_bwd, o), 0, 1.0 * RC * 4);
  }
}

/* AdamW and the sum of squares over the parameters of a 2-layer width-C model (12 C^2 per layer). */
static void run_params(bench *b, const bench_opts *o, int C) {
  char shape[64];
  b->n = (size_t)2 * 12 * C * C + (size_t)40 * C;
  snprintf(shape, sizeof shape, "n=%zu", b->n);
  dua_span *ap[] = {&b->x, &b->y, &b->z, &b->tmp};
  const size_t as[] = {b->n, b->n, b->n, b->n};
  if (wanted(o, "adamw")) {
    alloc_spans(b, ap, as, 4);
    report("adamw", shape, time_op(b, adamw, o), 0, 7.0 * (double)b->n * 4);
  }
  if (wanted(o, "sumsq")) {
    alloc_spans(b, ap, as, 4);
    report("sumsq", shape, time_op(b, sumsq, o), 0, (double)b->n * 4);
  }
}

/* ---- main -------------------------------------------------------------------------------------------- */

static int parse_list(const char *s, int *out) {
  int n = 0;
  while (*s && n < MAXV) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || v <= 0 || v > 1 << 20)
      return 0;
    out[n++] = (int)v;
    s = *end == ',' ? end + 1 : end;
    if (*end && *end != ',')
      return 0;
  }
  return n;
}

static void usage(void) {
  fprintf(stderr, "usage: train_ops_bench [--device SEL] [--rows 2048,8192] [--width 128,256] "
                  "[--vocab 8,256] [--op SUBSTR] [--min-time S] [--samples N] [--quick]\n"
                  "  --rows-kernels group|item   work-group per row (GPU shape) or work-item per row (CPU)\n"
                  "  --gemm clblast|dua          linear layers through CLBlast or dua's kernel\n"
                  "  --clblast-params default|cpu  CLBlast's parameters or dua's CPU override\n"
                  "  --clblast-set Kernel:NAME=V,...  CLBlastOverrideParameters before the ops (repeatable)\n"
                  "  --tune ITEM_WG,VW,MR,GEMM_VW,NV,GEMM_WG  the CPU kernels' tuning (0 = default)\n");
  exit(2);
}

int main(int argc, char **argv) {
  bench_opts o;
  memset(&o, 0, sizeof o);
  o.rows[0] = 2048, o.rows[1] = 8192, o.nrows = 2;
  o.width[0] = 128, o.width[1] = 256, o.nwidth = 2;
  o.vocab[0] = 8, o.vocab[1] = 256, o.nvocab = 2;
  o.min_time = 0.2;
  o.samples = 5;
  dua_ops_options_init(&o.ops);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--quick")) {
      o.nrows = o.nwidth = 1;
      o.min_time = 0.1;
      continue;
    }
    if (!v)
      usage();
    i++;
    if (!strcmp(a, "--device"))
      o.device = v;
    else if (!strcmp(a, "--op"))
      o.op = v;
    else if (!strcmp(a, "--rows") && (o.nrows = parse_list(v, o.rows)) > 0)
      ;
    else if (!strcmp(a, "--width") && (o.nwidth = parse_list(v, o.width)) > 0)
      ;
    else if (!strcmp(a, "--vocab") && (o.nvocab = parse_list(v, o.vocab)) > 0)
      ;
    else if (!strcmp(a, "--min-time") && (o.min_time = atof(v)) > 0)
      ;
    else if (!strcmp(a, "--samples") && (o.samples = atoi(v)) > 0)
      ;
    else if (!strcmp(a, "--rows-kernels") && (!strcmp(v, "group") || !strcmp(v, "item")))
      o.ops.row_kernels = !strcmp(v, "item") ? DUA_OPS_ROW_ITEM : DUA_OPS_ROW_GROUP;
    else if (!strcmp(a, "--gemm") && (!strcmp(v, "clblast") || !strcmp(v, "dua")))
      o.ops.gemm = !strcmp(v, "dua") ? DUA_OPS_GEMM_DUA : DUA_OPS_GEMM_CLBLAST;
    else if (!strcmp(a, "--clblast-params") && (!strcmp(v, "default") || !strcmp(v, "cpu")))
      o.ops.clblast_cpu_params = !strcmp(v, "cpu");
    else if (!strcmp(a, "--pack-a") && (!strcmp(v, "0") || !strcmp(v, "1")))
      o.ops.pack_a = atoi(v);
    else if (!strcmp(a, "--pack-b-tn") && (!strcmp(v, "0") || !strcmp(v, "1")))
      o.ops.pack_b_tn = atoi(v);
    else if (!strcmp(a, "--clblast-set"))
      o.clblast_set[o.nclblast_set < MAXV ? o.nclblast_set++ : MAXV - 1] = v;
    else if (!strcmp(a, "--tune")) {
      int t[MAXV], nt = parse_list(v, t);
      if (nt != 6)
        usage();
      o.ops.item_wg = t[0], o.ops.vw = t[1], o.ops.gemm_mr = t[2], o.ops.gemm_vw = t[3], o.ops.gemm_nv = t[4];
      o.ops.gemm_wg = t[5];
    } else
      usage();
  }
  dua_context_options co;
  dua_context_options_init(&co);
  co.selector = o.device;
  bench b;
  memset(&b, 0, sizeof b);
  TRY(NULL, dua_context_create(&co, &b.ctx));
  dua_device_info info;
  TRY(b.ctx, dua_context_device_info(b.ctx, &info));
  for (int i = 0; i < o.nclblast_set; i++)
    clblast_set(b.ctx, o.clblast_set[i]);
  TRY(b.ctx, dua_ops_create_with(b.ctx, &o.ops, &b.ops));
  char desc[256];
  dua_ops_describe(b.ops, desc, sizeof desc);
  printf("device: %s (%s, driver %s)\nops: %s\n", info.name, info.platform_version, info.driver_version,
         desc);
  printf("per call: median of %d batches, each >= %.2f s between dua_context_finish calls\n", o.samples,
         o.min_time);
  int maxR = 0;
  for (int i = 0; i < o.nrows; i++)
    maxR = o.rows[i] > maxR ? o.rows[i] : maxR;
  b.tokens = malloc((size_t)maxR * sizeof *b.tokens);
  b.targets = malloc((size_t)maxR * sizeof *b.targets);
  if (!b.tokens || !b.targets)
    return 1;
  for (int ri = 0; ri < o.nrows; ri++)
    for (int ci = 0; ci < o.nwidth; ci++) {
      const int R = o.rows[ri], C = o.width[ci];
      run_linear(&b, &o, "qkv", R, C, 3 * C, 1);
      run_linear(&b, &o, "attproj", R, C, C, 1);
      run_linear(&b, &o, "fc", R, C, 4 * C, 1);
      run_linear(&b, &o, "fcproj", R, 4 * C, C, 1);
      run_rows(&b, &o, R, C);
      for (int vi = 0; vi < o.nvocab; vi++)
        run_vocab(&b, &o, R, C, o.vocab[vi]);
      if (ri == 0)
        run_params(&b, &o, C);
    }
  free(b.tokens);
  free(b.targets);
  dua_buffer_destroy(b.buf);
  dua_ops_destroy(b.ops);
  dua_context_destroy(b.ctx);
  return 0;
}
