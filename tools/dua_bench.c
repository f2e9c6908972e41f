/* dua-bench: times dua's attention forward (sparse layout, the same kernel on the full layout, and the naive
 * materialized-scores baseline) on one OpenCL device for the problems shared/devkit/peers.py takes, with the
 * same problem flags, and reports ms, TFLOP/s, GB/s, density, speedups and roofline fractions as a table
 * and as JSON lines. --check validates every variant against the CPU reference before timing. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "dua_bench.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROTATE_LIMIT (64u << 20) /* input sets smaller than this (Q+K+V bytes) rotate among 3 copies */
#ifndef CHECK_BUDGET
#define CHECK_BUDGET 3e9 /* double operations one full-slice reference check may cost */
#endif
#define CHECK_SLICES 4  /* most (b, h) slices checked in full */
#define CHECK_ROWS 48   /* rows per slice in the row-sample check */
#define KERNEL_TEXT 400 /* a launch's debug line (program, build options, plan): about 300 characters */

/* --help, in parts: ISO C requires compilers to support only 4095-byte string literals */
static const char *const usage_text[] = {
    "usage: dua-bench [options]\n"
    "Times dua's attention forward on one OpenCL device. Problem flags are those of shared/devkit/peers.py,\n"
    "so one problem line drives both; several values of --n, --depth and --dtype run as a sweep.\n"
    "\n"
    "problem (as peers.py):\n"
    "  --n N...            sequence lengths (default 8192)\n"
    "  --batch B           batch (default 8)\n"
    "  --heads H           query heads (default 8)\n"
    "  --dim D             head dim: 32, 64, 96 or 128 (default 64)\n"
    "  --block BLK         block size, power of two 16..256 (default 128)\n"
    "  --arity P           tree arity >= 2 (default 2)\n"
    "  --depth D...        tree depths (default -1); -1 = deepest (block-diagonal), values above the tree\n"
    "                      depth clamp to it, 0 = dense\n"
    "  --window W          token window, 0 = none (default 0)\n"
    "  --sink S            leading keys always visible, 0 = none (default 0)\n"
    "  --causal            causal mask\n"
    "  --dtype T...        fp16 and/or fp32 (default fp16 fp32)\n"
    "  --tf32              fp32 forward may run its products in tf32 on tensor cores (dua: allow_tf32, "
    "where\n"
    "                      the device has them; PyTorch: allow_tf32); the backward stays exact fp32\n"
    "  --pass P            fwd (default), bwd (the backward alone, after one forward), fwdbwd (forward +\n"
    "                      backward of a random dO, as peers.py --pass fwdbwd; naive runs fwd only), or\n"
    "                      decode (paged-KV generation, as peers.py --pass decode; options at the end)\n"
    "dua only:\n"
    "  --kv-heads H        K/V heads for GQA, divides --heads (default = heads)\n"
    "  --head-depths LIST  comma-separated depth per head (replaces the --depth sweep)\n"
    "  --shift S           positional tree block shift (default 0)\n"
    "  --lse               also write the LSE output (fp32, counted in bytes); peers do not write it\n"
    "  --algo A            algorithm of the sparse variant: auto (default), rule or list\n"
    "  --device SEL        device index, type (gpu/cpu) or name substring (default: DUA_DEVICE, else first\n"
    "                      GPU, else first CPU)\n"
    "measurement:\n"
    "  --check             validate each variant against the CPU reference before timing (see below)\n"
    "  --atol A --rtol R   check tolerance |x - ref| <= A + R |ref| (fp32: 1e-4, 1e-3; fp16 and fp32 with\n"
    "                      --tf32: 2e-3, 4e-3)\n"
    "  --reps R            timed calls per variant (default: enough for --min-time, at least 5)\n"
    "  --min-time S        seconds of timed calls per variant when --reps is not given (default 0.3)\n"
    "  --warmup W          untimed calls per variant before timing (default 3; stops early after "
    "--min-time)\n"
    "  --timer T           events (default; falls back to wall if markers give no profiling data) or wall\n"
    "  --no-naive          skip the naive baseline (it is also skipped, with a note, when its scores\n"
    "                      B*H*N*N*4 bytes exceed 1/4 of min(max allocation, global memory))\n"
    "  --force-naive       run the naive baseline even above that limit\n"
    "  --no-dense          skip the dua dense variant\n"
    "  --show-mask         print the block mask of batch 0, head 0 (# full, + partial, . skipped)\n"
    "  --peak-tflops X     measured compute ceiling of the device (TFLOP/s) for the roofline fraction\n"
    "  --peak-gbps Y       measured memory bandwidth ceiling (GB/s) for the roofline fraction\n"
    "  --json FILE         one JSON object per measurement line to FILE ('-' = stdout; the table then goes "
    "to\n"
    "                      stderr); kernel_fwd, kernel_bwd: the kernels the timed calls launched (the\n"
    "                      library's debug line: program, build options, plan; with --pass bwd,\n"
    "                      kernel_fwd is the forward that made the O and LSE the backward reads)\n"
    "  --seed S            input seed (default 1)\n"
    "  --help              this text\n"
    "\n",
    "variants: dua_sparse = the layout of the flags (params.algo --algo); dua_dense = the same kernel on "
    "the\n"
    "full layout (every depth 0, no window or sink, same causal flag); naive = DUA_ALGO_NAIVE on the sparse\n"
    "layout (materialized B*H*N*N fp32 scores; the paper's 'dense').\n"
    "\n"
    "definitions (per variant, on the layout it runs):\n"
    "  visited FLOPs = 4 * Dh * B * Hq * sum over visited (query block, key block) pairs of rows x cols "
    "that\n"
    "                  exist (tails counted exactly, masked elements inside a visited block counted)\n"
    "  useful FLOPs  = 4 * Dh * visible (query, key) token pairs, summed over batch and heads\n"
    "  bytes         = compulsory traffic: Q, K, V read once and O written once at the storage dtype, plus\n"
    "                  the fp32 LSE with --lse (K/V re-reads across query blocks are not counted)\n"
    "  --pass bwd multiplies FLOPs by 2.5 (S, dP, dV, dQ, dK products) and bytes by 2 (plus dO, dQ, dK, "
    "dV);\n"
    "  --pass fwdbwd by 3.5 and 3 (FlashAttention's convention)\n"
    "  TFLOP/s = visited FLOPs / time; useful TFLOP/s = useful FLOPs / time; GB/s = bytes / time\n"
    "  density = visited blocks / nb^2 (peers.py's BlockMask density); density_pairs = visible pairs / N^2\n"
    "  roofline fraction = max(visited FLOPs / peak FLOP/s, bytes / peak B/s) / measured time\n"
    "  naive computes all N^2 scores: its TFLOP/s use the same problem counts (effective rates)\n"
    "\n"
    "timing: markers with profiling (clEnqueueMarkerWithWaitList on dua's queue) between consecutive calls;\n"
    "ms = median device time per call, ms_min its minimum; wall_ms = median over trials of host wall clock\n"
    "around the trial's calls and dua_context_finish, per call. The JSON 'timer' says which gave ms. When a\n"
    "Q+K+V set is under 64 MiB, calls rotate among 3 input sets so caches do not flatter small problems.\n"
    "Inputs are uniform in [-1, 1) (fp16 via dua_float_to_half).\n"
    "\n"
    "--check (set 0 of the inputs, every variant): two calls run (so the checked one runs as the timed ones\n"
    "do), then O and LSE are poisoned with NaN and one call runs; every O element must be written and not\n"
    "NaN, LSE never NaN or +inf (all slices scanned). Then, when one\n"
    "(b, h) slice costs under ~3e9 double operations (2*Dh*visited elements), up to 4 distinct slices of\n"
    "(0,0), (B-1,H-1), (B/2,H/2), (0,H-1), (B-1,0) are compared in full, O and (with --lse) LSE, with\n"
    "dua_attention_reference on a one-batch one-head layout with that head's depth; otherwise 48 rows of\n"
    "slices (0,0) and (B-1,H-1) (first, block edges, middle, last, random) are compared with a double\n"
    "softmax over the keys that dua_layout_visible (the library's exact rule) says are visible.\n"
    "Rows with no visible key must be exactly 0 (LSE -inf). Each variant is checked against the reference\n"
    "on its own layout, never against another variant.\n"
    "\n"
    "exit status: 0 success, 1 dua error or check failure, 2 bad usage.\n",
    "\n"
    "--pass decode: generation against a paged KV cache (dua_kv_cache, dua_decode). Each of --batch "
    "sequences\n"
    "holds --n tokens (--ragged: uniform in [n/2, n]); --tokens T query tokens per sequence sit at its last "
    "T\n"
    "positions. Variants on the same cache, queries and device: dua_sparse_decode (the layout of the flags;\n"
    "decode is causal by construction, --causal is implied) and dua_dense_decode (depth 0, no window or "
    "sink).\n"
    "  --page P            page tokens, a power of two 16..256 (default 16)\n"
    "  --page-order O      shuffled (default: free pages handed out in a seeded random order) or seq\n"
    "  --ragged            context lengths uniform in [n/2, n] instead of all n\n"
    "  --tokens T          query tokens per sequence, 1..4 (default 1)\n"
    "  --copy-gbs X        the device's measured copy bandwidth (GB/s, read + write); default: measured in "
    "the\n"
    "                      same run (clEnqueueCopyBuffer of min(1 GiB, largest allocation / 2), median of "
    "5)\n"
    "decode figures:\n"
    "  kv bytes  = K + V bytes the kernel reads: per (sequence, KV head), the key units of min(page, block,\n"
    "              tile) tokens (the tile the tuning chain gives: by default 32, 16 on CPU devices)\n"
    "              holding a key visible to some query head of the group and some query token, clipped to\n"
    "              the context, x head_dim x dtype size x 2\n"
    "  bytes     = kv bytes + Q read + O written (+ fp32 LSE with --lse); GB/s = bytes / ms\n"
    "  of_copy   = GB/s / copy GB/s; visible = visible keys / context keys (peers.py's visible_fraction for\n"
    "              the last position)\n"
    "  of_cp_n   = device time of one clEnqueueCopyBuffer moving as many bytes as the call (half read,\n"
    "              half written) / ms: the floor at the call's own size, start-up cost included (only with\n"
    "              a measured copy bandwidth and device timing)\n"
    "  x_dense   = dua_dense_decode ms / this ms; ideal = dense kv bytes / this variant's kv bytes\n"
    "  --check (before timing, both variants): outputs poisoned with NaN, one call; every element written;\n"
    "  then sequences 0 and B-1, every query head and token, against a double softmax over the keys that\n"
    "  dua_layout_visible (the causal forward's rule) calls visible; tolerance as above.\n"};

/* One measured (or skipped) variant of one problem, kept for the final table. */
typedef struct result {
  char variant[16], dtype[8], depth[32], skipped[160], check[48];
  int n, batch, heads, kv_heads, dim, block, arity, window, sink, causal;
  double density, density_pairs, ms, ms_min, wall_ms, tflops, useful_tflops, gbps, vs_dense, vs_naive, roof;
} result;

/* What a run needs about the problem and device. */
typedef struct bench {
  const options *opt;
  dua_context *ctx;
  dua_device_info info;
  bench_clock clock; /* ctx, queue, events_ok: markers gave profiling data so far */
  int n, nb, tree_depth;
  dua_dtype dtype;
  int nsets;
  dua_buffer *qb[3], *kb[3], *vb[3], *ob, *lb, *gb, *dqb, *dkb, *dvb; /* gb: dO; d*: gradients (bwd passes) */
  dua_tensor q[3], k[3], v[3], o, lse, g, dq, dk, dv;
  FILE *json, *table;
  result *results;
  int nresults, cap;
  /* where bench_log keeps the kernels the timed forward and backward launch ([0], [1]); NULL: not timing */
  char (*capture)[KERNEL_TEXT];
} bench;

/* The library's messages (dua-bench's log callback, at debug level): warnings go to stderr, so that a
 * fallback (from the tensor-core kernels to the portable ones, say) is never silent; the debug line each
 * attention launch leaves ("forward: ..." and "backward: ...", with its program's build options and plan) is
 * kept as the kernel the variant ran. Errors come back as statuses (die_dua prints them). */
static void bench_log(dua_log_level level, const char *msg, void *user) {
  bench *b = user;
  if (level == DUA_LOG_WARNING)
    fprintf(stderr, "  dua warning: %s\n", msg);
  else if (level == DUA_LOG_DEBUG && b->capture && strncmp(msg, "forward: ", 9) == 0)
    snprintf(b->capture[0], KERNEL_TEXT, "%s", msg + 9);
  else if (level == DUA_LOG_DEBUG && b->capture && strncmp(msg, "backward: ", 10) == 0)
    snprintf(b->capture[1], KERNEL_TEXT, "%s", msg + 10);
}

/* ------------------------------------------------------------------ small helpers */

void fail_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "dua-bench: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(dua-bench --help lists the options)\n");
  exit(2);
}

void die_dua(const dua_context *ctx, dua_status st, const char *what) {
  fprintf(stderr, "dua-bench: %s failed: %s (%d)", what, dua_status_string(st), (int)st);
  if (ctx != NULL)
    fprintf(stderr, ": %s", dua_context_last_error(ctx));
  fprintf(stderr, "\n");
  exit(1);
}

void *xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (p == NULL) {
    fprintf(stderr, "dua-bench: out of host memory (%zu bytes)\n", bytes);
    exit(1);
  }
  return p;
}

double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double median(double *x, size_t n) {
  if (n == 0)
    return NAN;
  qsort(x, n, sizeof *x, cmp_double);
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [-1, 1), 24 random bits. */
float uniform(uint64_t *s) {
  return (float)((double)(splitmix(s) >> 40) * (2.0 / 16777216.0) - 1.0);
}

const char *dtype_name(dua_dtype t) {
  return t == DUA_F16 ? "fp16" : "fp32";
}

static const char *algo_name(dua_attention_algo a) {
  switch (a) {
  case DUA_ALGO_RULE:
    return "rule";
  case DUA_ALGO_LIST:
    return "list";
  case DUA_ALGO_NAIVE:
    return "naive";
  default:
    return "auto";
  }
}

int tree_depth(int nb, int p) {
  int d = 0;
  for (long long span = 1; span < nb; span *= p)
    d++;
  return d;
}

/* ------------------------------------------------------------------ command line */

static int parse_int(const char *flag, const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < INT_MIN || v > INT_MAX) {
    fprintf(stderr, "dua-bench: %s expects an integer, got '%s'\n", flag, s);
    exit(2);
  }
  return (int)v;
}

static double parse_double(const char *flag, const char *s) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !isfinite(v)) {
    fprintf(stderr, "dua-bench: %s expects a number, got '%s'\n", flag, s);
    exit(2);
  }
  return v;
}

/* Every option: name and how many values it takes (0 = switch, 1 = one, -1 = one or more). */
static const struct {
  const char *name;
  int values;
} known[] = {
    {"--n", -1},          {"--depth", -1},      {"--dtype", -1},      {"--batch", 1},      {"--heads", 1},
    {"--kv-heads", 1},    {"--dim", 1},         {"--block", 1},       {"--arity", 1},      {"--window", 1},
    {"--sink", 1},        {"--shift", 1},       {"--head-depths", 1}, {"--pass", 1},       {"--algo", 1},
    {"--device", 1},      {"--json", 1},        {"--reps", 1},        {"--warmup", 1},     {"--min-time", 1},
    {"--timer", 1},       {"--peak-tflops", 1}, {"--peak-gbps", 1},   {"--atol", 1},       {"--rtol", 1},
    {"--seed", 1},        {"--causal", 0},      {"--check", 0},       {"--lse", 0},        {"--no-naive", 0},
    {"--force-naive", 0}, {"--no-dense", 0},    {"--help", 0},        {"--tf32", 0},       {"--show-mask", 0},
    {"--page", 1},        {"--tokens", 1},      {"--copy-gbs", 1},    {"--page-order", 1}, {"--ragged", 0}};

static int pick(const char *flag, const char *v, const char *const *names, int count) {
  for (int i = 0; i < count; i++)
    if (strcmp(v, names[i]) == 0)
      return i;
  fprintf(stderr, "dua-bench: %s: '%s' is not one of", flag, v);
  for (int i = 0; i < count; i++)
    fprintf(stderr, " %s", names[i]);
  fprintf(stderr, "\n");
  exit(2);
}

static void parse_head_depths(options *o, const char *list) {
  const char *s = list;
  o->nhead_depths = 0;
  while (*s) {
    const char *comma = strchr(s, ',');
    char item[32];
    size_t l = comma ? (size_t)(comma - s) : strlen(s);
    if (l == 0 || l >= sizeof item || o->nhead_depths >= (int)(sizeof o->head_depths / sizeof(int)))
      fail_usage("--head-depths: bad list '%s'", list);
    memcpy(item, s, l);
    item[l] = '\0';
    o->head_depths[o->nhead_depths++] = parse_int("--head-depths", item);
    s += l + (comma != NULL);
  }
  if (o->nhead_depths == 0)
    fail_usage("--head-depths: empty list '%s'", list);
}

static void parse_args(int argc, char **argv, options *o) {
  static const char *const dtypes[] = {"fp32", "fp16"}, *const algos[] = {"auto", "rule", "list"};
  static const char *const timers[] = {"wall", "events"}, *const passes[] = {"fwd", "bwd", "fwdbwd",
                                                                             "decode"};
  static const char *const orders[] = {"seq", "shuffled"};
  memset(o, 0, sizeof *o);
  o->n[0] = 8192, o->nn = 1;
  o->depth[0] = -1, o->ndepth = 1;
  o->dtype[0] = DUA_F16, o->dtype[1] = DUA_F32, o->ndtype = 2;
  o->batch = 8, o->heads = 8, o->dim = 64, o->block = 128, o->arity = 2;
  o->algo = DUA_ALGO_AUTO;
  o->warmup = 3, o->min_time = 0.3, o->use_events = 1, o->seed = 1;
  o->atol = o->rtol = -1;
  o->page = 16, o->tokens = 1, o->page_order = 1;
  for (int i = 1; i < argc; i++) {
    /* "--flag=v" gives one value; otherwise the values are the following arguments up to the next
     * "--..." (so -1 is a value) */
    char name[32];
    const char *a = argv[i], *eq = strchr(a, '=');
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    int kind = -2;
    if (strcmp(a, "-h") == 0)
      len = 6, a = "--help";
    for (size_t k = 0; k < sizeof known / sizeof known[0] && len < sizeof name; k++)
      if (strlen(known[k].name) == len && strncmp(a, known[k].name, len) == 0)
        kind = known[k].values;
    if (kind == -2)
      fail_usage(strncmp(a, "--", 2) ? "unexpected argument '%s' (values follow their option)"
                                     : "unknown option '%s'",
                 a);
    memcpy(name, a, len);
    name[len] = '\0';
    char *vals[MAXV];
    int nv = 0;
    if (eq != NULL) {
      vals[nv++] = (char *)eq + 1;
    } else {
      while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 && (kind < 0 || nv < kind)) {
        if (nv == MAXV)
          fail_usage("%s: too many values", name);
        vals[nv++] = argv[++i];
      }
    }
    if (kind == 0 && nv > 0)
      fail_usage("%s takes no value", name);
    if (kind != 0 && nv == 0)
      fail_usage("%s needs a value", name);
    const char *v = nv ? vals[0] : "";
    if (strcmp(name, "--help") == 0) {
      for (size_t k = 0; k < sizeof usage_text / sizeof usage_text[0]; k++)
        fputs(usage_text[k], stdout);
      exit(0);
    } else if (strcmp(name, "--n") == 0) {
      for (o->nn = 0; o->nn < nv; o->nn++)
        o->n[o->nn] = parse_int(name, vals[o->nn]);
    } else if (strcmp(name, "--depth") == 0) {
      for (o->ndepth = 0; o->ndepth < nv; o->ndepth++)
        o->depth[o->ndepth] = parse_int(name, vals[o->ndepth]);
    } else if (strcmp(name, "--dtype") == 0) {
      for (o->ndtype = 0; o->ndtype < nv; o->ndtype++)
        o->dtype[o->ndtype] = pick(name, vals[o->ndtype], dtypes, 2) ? DUA_F16 : DUA_F32;
    } else if (strcmp(name, "--batch") == 0) {
      o->batch = parse_int(name, v);
    } else if (strcmp(name, "--heads") == 0) {
      o->heads = parse_int(name, v);
    } else if (strcmp(name, "--kv-heads") == 0) {
      o->kv_heads = parse_int(name, v);
    } else if (strcmp(name, "--dim") == 0) {
      o->dim = parse_int(name, v);
      if (o->dim != 32 && o->dim != 64 && o->dim != 96 && o->dim != 128)
        fail_usage("--dim: '%s' is not one of 32, 64, 96, 128", v);
    } else if (strcmp(name, "--block") == 0) {
      o->block = parse_int(name, v);
    } else if (strcmp(name, "--arity") == 0) {
      o->arity = parse_int(name, v);
    } else if (strcmp(name, "--window") == 0) {
      o->window = parse_int(name, v);
    } else if (strcmp(name, "--sink") == 0) {
      o->sink = parse_int(name, v);
    } else if (strcmp(name, "--shift") == 0) {
      o->shift = parse_int(name, v);
    } else if (strcmp(name, "--head-depths") == 0) {
      parse_head_depths(o, v);
    } else if (strcmp(name, "--causal") == 0) {
      o->causal = 1;
    } else if (strcmp(name, "--lse") == 0) {
      o->lse = 1;
    } else if (strcmp(name, "--check") == 0) {
      o->check = 1;
    } else if (strcmp(name, "--no-naive") == 0) {
      o->no_naive = 1;
    } else if (strcmp(name, "--force-naive") == 0) {
      o->force_naive = 1;
    } else if (strcmp(name, "--no-dense") == 0) {
      o->no_dense = 1;
    } else if (strcmp(name, "--show-mask") == 0) {
      o->show_mask = 1;
    } else if (strcmp(name, "--pass") == 0) {
      o->pass = pick(name, v, passes, 4);
    } else if (strcmp(name, "--page") == 0) {
      o->page = parse_int(name, v);
    } else if (strcmp(name, "--tokens") == 0) {
      o->tokens = parse_int(name, v);
    } else if (strcmp(name, "--copy-gbs") == 0) {
      if ((o->copy_gbs = parse_double(name, v)) <= 0)
        fail_usage("--copy-gbs %s: must be > 0", v);
    } else if (strcmp(name, "--page-order") == 0) {
      o->page_order = pick(name, v, orders, 2);
    } else if (strcmp(name, "--ragged") == 0) {
      o->ragged = 1;
    } else if (strcmp(name, "--algo") == 0) {
      o->algo = (dua_attention_algo)pick(name, v, algos, 3); /* DUA_ALGO_AUTO, _RULE, _LIST */
    } else if (strcmp(name, "--device") == 0) {
      o->device = v;
    } else if (strcmp(name, "--json") == 0) {
      o->json = v;
    } else if (strcmp(name, "--reps") == 0) {
      if ((o->reps = parse_int(name, v)) < 1)
        fail_usage("--reps %s: must be >= 1", v);
    } else if (strcmp(name, "--warmup") == 0) {
      if ((o->warmup = parse_int(name, v)) < 0)
        fail_usage("--warmup %s: must be >= 0", v);
    } else if (strcmp(name, "--min-time") == 0) {
      if ((o->min_time = parse_double(name, v)) <= 0)
        fail_usage("--min-time %s: must be > 0", v);
    } else if (strcmp(name, "--timer") == 0) {
      o->use_events = pick(name, v, timers, 2);
    } else if (strcmp(name, "--peak-tflops") == 0) {
      o->peak_tflops = parse_double(name, v);
    } else if (strcmp(name, "--peak-gbps") == 0) {
      o->peak_gbps = parse_double(name, v);
    } else if (strcmp(name, "--atol") == 0) {
      o->atol = parse_double(name, v);
    } else if (strcmp(name, "--rtol") == 0) {
      o->rtol = parse_double(name, v);
    } else if (strcmp(name, "--seed") == 0) {
      o->seed = (unsigned long long)parse_double(name, v);
    } else if (strcmp(name, "--tf32") == 0) {
      o->tf32 = 1;
    }
  }
  /* checks the layout would not name as such (the rest is validated by dua_layout_create) */
  if (o->batch <= 0 || o->heads <= 0 || o->dim <= 0)
    fail_usage("%s", "--batch, --heads and --dim must be > 0");
  for (int k = 0; k < o->nn; k++)
    if (o->n[k] <= 0)
      fail_usage("%s", "--n values must be > 0");
  if (o->kv_heads == 0)
    o->kv_heads = o->heads;
  if (o->kv_heads < 0 || o->heads % o->kv_heads != 0)
    fail_usage("%s", "--kv-heads must divide --heads");
  if (o->nhead_depths != 0 && o->nhead_depths != o->heads)
    fail_usage("%s", "--head-depths needs one depth per query head");
  if (o->tokens < 1 || o->tokens > 4)
    fail_usage("%s", "--tokens must be 1..4");
  if (o->pass == 3 && (o->page < 16 || o->page > 256 || (o->page & (o->page - 1))))
    fail_usage("%s", "--page must be a power of two in 16..256");
  if ((o->peak_tflops > 0) != (o->peak_gbps > 0))
    fail_usage("%s", "--peak-tflops and --peak-gbps go together (both measured ceilings)");
}

/* ------------------------------------------------------------------ JSON output */

void json_str(FILE *f, const char *key, const char *s) {
  fprintf(f, ", \"%s\": \"", key);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      fprintf(f, "\\u%04x", (unsigned char)*s);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

void json_num(FILE *f, const char *key, double v) {
  if (isfinite(v))
    fprintf(f, ", \"%s\": %.10g", key, v);
  else
    fprintf(f, ", \"%s\": null", key);
}

void json_int(FILE *f, const char *key, long long v) {
  fprintf(f, ", \"%s\": %lld", key, v);
}

/* ------------------------------------------------------------------ layouts and counts */

/* Depth of every head for sweep value `depth` (or --head-depths): -1 = deepest, above D clamps to D. */
void resolve_depths(const options *o, int depth, int D, int32_t *out) {
  for (int h = 0; h < o->heads; h++) {
    int d = o->nhead_depths ? o->head_depths[h] : depth;
    out[h] = d < 0 ? D : (d > D ? D : d);
  }
}

dua_layout *make_layout(const options *o, int n, int batch, int heads, const int32_t *depths, int extras) {
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  d.seq_len = n;
  d.block = o->block;
  d.batch = batch;
  d.heads = heads;
  d.kv_heads = heads == o->heads ? o->kv_heads : heads;
  d.arity = o->arity;
  d.depths = depths;
  d.shift = extras ? o->shift : 0;
  d.window = extras ? o->window : 0;
  d.sink = extras ? o->sink : 0;
  d.causal = o->causal;
  dua_layout *l = NULL;
  char err[512];
  dua_status st = dua_layout_create(&d, &l, err, sizeof err);
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-bench: dua_layout_create failed: %s (%d): %s\n", dua_status_string(st), (int)st,
            err);
    exit(1);
  }
  return l;
}

/* Token elements (rows x cols that exist) in the blocks one (batch, head) visits, from the list form of a
 * one-batch, one-head layout. */
static double slice_elements(dua_layout *one, int n, int blk) {
  dua_block_lists lists;
  dua_status st = dua_layout_lists(one, 0, &lists);
  if (st != DUA_SUCCESS)
    die_dua(NULL, st, "dua_layout_lists");
  int nb = lists.num_blocks;
  double total = 0;
  for (int m = 0; m < nb; m++) {
    double rows = (double)(n - m * blk < blk ? n - m * blk : blk), cols = 0;
    for (int t = 0; t < lists.counts[m]; t++) {
      int kb = lists.indices[(size_t)m * nb + t];
      cols += (double)(n - kb * blk < blk ? n - kb * blk : blk);
    }
    total += rows * cols;
  }
  return total;
}

/* Visited token elements of the whole problem. Positional layouts do not depend on the batch and a head
 * depends only on its depth, so each distinct depth is counted once on a 1 x 1 layout. depths NULL = the
 * full layout (depth 0, no window or sink). */
static double visited_elements(const options *o, int n, const int32_t *depths) {
  double total = 0, *per = xmalloc((size_t)o->heads * sizeof(double));
  for (int h = 0; h < o->heads; h++) {
    int32_t d = depths ? depths[h] : 0;
    int known = -1;
    for (int g = 0; g < h && known < 0; g++)
      if ((depths ? depths[g] : 0) == d)
        known = g;
    if (known >= 0) {
      per[h] = per[known];
    } else {
      dua_layout *one = make_layout(o, n, 1, 1, &d, depths != NULL);
      per[h] = slice_elements(one, n, o->block);
      dua_layout_destroy(one);
    }
    total += per[h];
  }
  free(per);
  return total * o->batch;
}

/* ------------------------------------------------------------------ buffers */

static void fill_random(bench *b, dua_buffer *buf, size_t count, uint64_t seed) {
  const size_t chunk = (size_t)1 << 20;
  size_t es = dua_dtype_size(b->dtype);
  void *host = xmalloc(chunk * es);
  uint64_t s = seed;
  for (size_t off = 0; off < count; off += chunk) {
    size_t c = count - off < chunk ? count - off : chunk;
    if (b->dtype == DUA_F16)
      for (size_t i = 0; i < c; i++)
        ((uint16_t *)host)[i] = dua_float_to_half(uniform(&s));
    else
      for (size_t i = 0; i < c; i++)
        ((float *)host)[i] = uniform(&s);
    dua_status st = dua_buffer_write(buf, off * es, c * es, host);
    if (st != DUA_SUCCESS)
      die_dua(b->ctx, st, "dua_buffer_write");
  }
  free(host);
}

static dua_buffer *new_buffer(bench *b, size_t bytes) {
  dua_buffer *buf = NULL;
  dua_status st = dua_buffer_create(b->ctx, bytes, &buf);
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-bench: cannot allocate %.1f MiB on the device\n", bytes / 1048576.0);
    die_dua(b->ctx, st, "dua_buffer_create");
  }
  return buf;
}

static void alloc_problem(bench *b) {
  const options *o = b->opt;
  size_t es = dua_dtype_size(b->dtype);
  int64_t B = o->batch, H = o->heads, HKV = o->kv_heads, N = b->n, DH = o->dim;
  size_t qn = (size_t)(B * H * N * DH), kn = (size_t)(B * HKV * N * DH);
  size_t set_bytes = (qn + 2 * kn) * es;
  b->nsets = set_bytes < ROTATE_LIMIT ? 3 : 1;
  for (int s = 0; s < b->nsets; s++) {
    b->qb[s] = new_buffer(b, qn * es);
    b->kb[s] = new_buffer(b, kn * es);
    b->vb[s] = new_buffer(b, kn * es);
    uint64_t seed = o->seed * 1000003ull + (uint64_t)b->n * 131ull + (uint64_t)s * 7ull;
    fill_random(b, b->qb[s], qn, seed + 1);
    fill_random(b, b->kb[s], kn, seed + 2);
    fill_random(b, b->vb[s], kn, seed + 3);
    b->q[s] = dua_tensor_contiguous(b->qb[s], 0, b->dtype, B, H, N, DH);
    b->k[s] = dua_tensor_contiguous(b->kb[s], 0, b->dtype, B, HKV, N, DH);
    b->v[s] = dua_tensor_contiguous(b->vb[s], 0, b->dtype, B, HKV, N, DH);
  }
  b->ob = new_buffer(b, qn * es);
  b->o = dua_tensor_contiguous(b->ob, 0, b->dtype, B, H, N, DH);
  b->lb = new_buffer(b, (size_t)(B * H * N) * sizeof(float));
  b->lse = dua_tensor_contiguous(b->lb, 0, DUA_F32, B, H, N, 1);
  if (o->pass) {
    b->gb = new_buffer(b, qn * es);
    fill_random(b, b->gb, qn, o->seed * 7919ull + 5);
    b->dqb = new_buffer(b, qn * es);
    b->dkb = new_buffer(b, kn * es);
    b->dvb = new_buffer(b, kn * es);
    b->g = dua_tensor_contiguous(b->gb, 0, b->dtype, B, H, N, DH);
    b->dq = dua_tensor_contiguous(b->dqb, 0, b->dtype, B, H, N, DH);
    b->dk = dua_tensor_contiguous(b->dkb, 0, b->dtype, B, HKV, N, DH);
    b->dv = dua_tensor_contiguous(b->dvb, 0, b->dtype, B, HKV, N, DH);
  }
}

static void free_problem(bench *b) {
  for (int s = 0; s < b->nsets; s++) {
    dua_buffer_destroy(b->qb[s]);
    dua_buffer_destroy(b->kb[s]);
    dua_buffer_destroy(b->vb[s]);
  }
  dua_buffer_destroy(b->ob);
  dua_buffer_destroy(b->lb);
  dua_buffer *grads[4] = {b->gb, b->dqb, b->dkb, b->dvb};
  for (int i = 0; i < 4; i++)
    dua_buffer_destroy(grads[i]);
  b->gb = b->dqb = b->dkb = b->dvb = NULL;
  b->nsets = 0;
}

static void forward_call(bench *b, dua_layout *layout, const dua_attention_params *p, int set, int with_lse) {
  dua_status st = dua_attention_forward(b->ctx, layout, p, &b->q[set], &b->k[set], &b->v[set], &b->o,
                                        with_lse ? &b->lse : NULL);
  if (st != DUA_SUCCESS)
    die_dua(b->ctx, st, "dua_attention_forward");
}

static void backward_call(bench *b, dua_layout *layout, const dua_attention_params *p, int set) {
  dua_status st = dua_attention_backward(b->ctx, layout, p, &b->q[set], &b->k[set], &b->v[set], &b->o,
                                         &b->lse, &b->g, &b->dq, &b->dk, &b->dv, NULL);
  if (st != DUA_SUCCESS)
    die_dua(b->ctx, st, "dua_attention_backward");
}

/* One timed unit of the chosen pass. (bwd reuses the O and LSE of the last forward, made by prepare().) */
static void call(bench *b, dua_layout *layout, const dua_attention_params *p, int set, int with_lse) {
  if (b->opt->pass != 1)
    forward_call(b, layout, p, set, with_lse || b->opt->pass == 2);
  if (b->opt->pass != 0)
    backward_call(b, layout, p, set);
}

/* The backward alone needs a forward's O and LSE on each input set; the gradients of different sets then
 * use set 0's O and LSE, which costs the same work. */
static void prepare(bench *b, dua_layout *layout, const dua_attention_params *p) {
  if (b->opt->pass == 1)
    forward_call(b, layout, p, 0, 1);
}

static void finish(bench *b) {
  dua_status st = dua_context_finish(b->ctx);
  if (st != DUA_SUCCESS)
    die_dua(b->ctx, st, "dua_context_finish");
}

/* ------------------------------------------------------------------ check */

/* Reads slice (b, h) of an attention tensor (N x width elements, contiguous) into floats. */
static void read_slice(bench *b, dua_buffer *buf, dua_dtype dt, int heads, int bi, int h, int width,
                       float *out) {
  size_t count = (size_t)b->n * width, es = dua_dtype_size(dt);
  size_t off = ((size_t)bi * heads + h) * count * es;
  dua_status st;
  if (dt == DUA_F16) {
    uint16_t *tmp = xmalloc(count * 2);
    st = dua_buffer_read(buf, off, count * 2, tmp);
    for (size_t i = 0; st == DUA_SUCCESS && i < count; i++)
      out[i] = dua_half_to_float(tmp[i]);
    free(tmp);
  } else {
    st = dua_buffer_read(buf, off, count * 4, out);
  }
  if (st != DUA_SUCCESS)
    die_dua(b->ctx, st, "dua_buffer_read");
}

typedef struct check_stats {
  double max_err, atol, rtol;
  long long compared, bad;
  char first_bad[160];
} check_stats;

static void compare(check_stats *c, const float *x, const float *ref, size_t count, int bi, int h, int row0,
                    int dim, int empty_row) {
  for (size_t i = 0; i < count; i++) {
    double err = fabs((double)x[i] - (double)ref[i]);
    int ok = empty_row ? x[i] == 0.0f : !isnan(x[i]) && err <= c->atol + c->rtol * fabs((double)ref[i]);
    if (!isnan(err) && err > c->max_err)
      c->max_err = err;
    c->compared++;
    if (!ok) {
      if (c->bad++ == 0)
        snprintf(c->first_bad, sizeof c->first_bad, "b=%d h=%d row=%d d=%d: got %.7g, expected %.7g%s", bi, h,
                 row0 + (int)(i / (size_t)dim), (int)(i % (size_t)dim), (double)x[i], (double)ref[i],
                 empty_row ? " (row with no visible key must be 0)" : "");
    }
  }
}

/* Full-slice check of (bi, h) with dua_attention_reference on a one-batch, one-head layout. */
static void check_slice_full(bench *b, check_stats *c, int bi, int h, int32_t depth, int extras, float *q,
                             float *k, float *v, float *o, float *lse, float *ro, float *rl) {
  const options *o_ = b->opt;
  int N = b->n, DH = o_->dim, hk = h / (o_->heads / o_->kv_heads);
  read_slice(b, b->qb[0], b->dtype, o_->heads, bi, h, DH, q);
  read_slice(b, b->kb[0], b->dtype, o_->kv_heads, bi, hk, DH, k);
  read_slice(b, b->vb[0], b->dtype, o_->kv_heads, bi, hk, DH, v);
  read_slice(b, b->ob, b->dtype, o_->heads, bi, h, DH, o);
  read_slice(b, b->lb, DUA_F32, o_->heads, bi, h, 1, lse);
  dua_layout *one = make_layout(o_, N, 1, 1, &depth, extras);
  dua_host_tensor tq = {q, {1, 1, N, DH}, {(int64_t)N * DH, (int64_t)N * DH, DH, 1}};
  dua_host_tensor tk = tq, tv = tq, to = tq, tl = {rl, {1, 1, N, 1}, {N, N, 1, 1}};
  tk.data = k, tv.data = v, to.data = ro;
  dua_status st = dua_attention_reference(one, 0.0f, NULL, &tq, &tk, &tv, &to, &tl);
  if (st != DUA_SUCCESS)
    die_dua(NULL, st, "dua_attention_reference");
  dua_layout_destroy(one);
  for (int i = 0; i < N; i++) {
    int empty = isinf(rl[i]) && rl[i] < 0;
    compare(c, o + (size_t)i * DH, ro + (size_t)i * DH, (size_t)DH, bi, h, i, DH, empty);
  }
  if (b->opt->lse) /* LSE: same tolerance; empty rows must be -inf on both sides */
    for (int i = 0; i < N; i++) {
      int bad = (isinf(rl[i]) || isinf(lse[i]))
                    ? lse[i] != rl[i]
                    : !(fabs((double)lse[i] - rl[i]) <= c->atol + c->rtol * fabs(rl[i]));
      c->compared++;
      if (bad && c->bad++ == 0)
        snprintf(c->first_bad, sizeof c->first_bad, "b=%d h=%d row=%d: lse %.7g, expected %.7g", bi, h, i,
                 (double)lse[i], (double)rl[i]);
    }
}

/* Row-sample check of (bi, h): double softmax over the keys dua_layout_visible calls visible. */
static void check_slice_rows(bench *b, check_stats *c, dua_layout *layout, int bi, int h, float *q, float *k,
                             float *v, float *o, float *lse, uint64_t *rng) {
  const options *op = b->opt;
  int N = b->n, DH = op->dim, blk = op->block, hk = h / (op->heads / op->kv_heads);
  read_slice(b, b->qb[0], b->dtype, op->heads, bi, h, DH, q);
  read_slice(b, b->kb[0], b->dtype, op->kv_heads, bi, hk, DH, k);
  read_slice(b, b->vb[0], b->dtype, op->kv_heads, bi, hk, DH, v);
  read_slice(b, b->ob, b->dtype, op->heads, bi, h, DH, o);
  read_slice(b, b->lb, DUA_F32, op->heads, bi, h, 1, lse);
  double *s = xmalloc((size_t)N * sizeof(double)), *acc = xmalloc((size_t)DH * sizeof(double));
  int *cols = xmalloc((size_t)N * sizeof(int));
  float *ref = xmalloc((size_t)DH * sizeof(float));
  int fixed[] = {0, 1, blk - 1, blk, N / 2, (b->nb - 1) * blk, N - 2, N - 1};
  double scale = 1.0 / sqrt((double)DH);
  for (int r = 0; r < CHECK_ROWS; r++) {
    int i = r < 8 ? fixed[r] : (int)(splitmix(rng) % (uint64_t)N);
    if (i < 0 || i >= N)
      continue;
    int cnt = 0;
    double mx = -INFINITY;
    for (int j = 0; j < N; j++) {
      if (!dua_layout_visible(layout, bi, h, i, j))
        continue;
      double d = 0;
      for (int x = 0; x < DH; x++)
        d += (double)q[(size_t)i * DH + x] * (double)k[(size_t)j * DH + x];
      s[cnt] = d * scale;
      cols[cnt++] = j;
      if (s[cnt - 1] > mx)
        mx = s[cnt - 1];
    }
    double sum = 0;
    for (int x = 0; x < DH; x++)
      acc[x] = 0;
    for (int t = 0; t < cnt; t++) {
      double p = exp(s[t] - mx);
      sum += p;
      for (int x = 0; x < DH; x++)
        acc[x] += p * (double)v[(size_t)cols[t] * DH + x];
    }
    for (int x = 0; x < DH; x++)
      ref[x] = cnt ? (float)(acc[x] / sum) : 0.0f;
    compare(c, o + (size_t)i * DH, ref, (size_t)DH, bi, h, i, DH, cnt == 0);
    if (op->lse) {
      double rl = cnt ? mx + log(sum) : -INFINITY;
      int bad = cnt == 0 ? !(isinf(lse[i]) && lse[i] < 0)
                         : !(fabs((double)lse[i] - rl) <= c->atol + c->rtol * fabs(rl));
      c->compared++;
      if (bad && c->bad++ == 0)
        snprintf(c->first_bad, sizeof c->first_bad, "b=%d h=%d row=%d: lse %.7g, expected %.7g", bi, h, i,
                 (double)lse[i], rl);
    }
  }
  free(s);
  free(acc);
  free(cols);
  free(ref);
}

/* Poisons O and LSE, runs one call, scans every element, then compares slices (see --help). Exits on
 * failure; writes a short description of what was checked into `what`. */
static void check_variant(bench *b, const char *variant, dua_layout *layout, const dua_attention_params *p,
                          const int32_t *depths, int extras, double elements_per_slice, char *what,
                          size_t what_size) {
  const options *o = b->opt;
  int B = o->batch, H = o->heads, N = b->n, DH = o->dim;
  size_t slice = (size_t)N * DH;
  dua_status st;
  /* two calls first, finished: the checked call then runs as the timed ones do (programs built; on Hopper
   * the forward's TMA tensor maps, which the first call on new buffers notes and the second builds) */
  for (int warm = 0; warm < 2; warm++) {
    forward_call(b, layout, p, 0, 1);
    finish(b);
  }
  if ((st = dua_buffer_fill_bytes(b->ob, 0, dua_buffer_size(b->ob), 0xff)) != DUA_SUCCESS ||
      (st = dua_buffer_fill_bytes(b->lb, 0, dua_buffer_size(b->lb), 0xff)) != DUA_SUCCESS)
    die_dua(b->ctx, st, "dua_buffer_fill_bytes");
  forward_call(b, layout, p, 0, 1);
  finish(b);
  float *q = xmalloc(slice * 4), *k = xmalloc(slice * 4), *v = xmalloc(slice * 4), *out = xmalloc(slice * 4);
  float *ro = xmalloc(slice * 4), *lse = xmalloc((size_t)N * 4), *rl = xmalloc((size_t)N * 4);
  check_stats c;
  memset(&c, 0, sizeof c);
  const int loose = b->dtype == DUA_F16 || o->tf32; /* tf32 operands: 10-bit mantissas as f16 */
  c.atol = o->atol >= 0 ? o->atol : (loose ? 2e-3 : 1e-4);
  c.rtol = o->rtol >= 0 ? o->rtol : (loose ? 4e-3 : 1e-3);
  /* every element written, no NaN (the poison is NaN in both dtypes), LSE never NaN or +inf */
  long long nan_o = 0, nan_l = 0;
  for (int bi = 0; bi < B; bi++)
    for (int h = 0; h < H; h++) {
      read_slice(b, b->ob, b->dtype, H, bi, h, DH, out);
      read_slice(b, b->lb, DUA_F32, H, bi, h, 1, lse);
      for (size_t i = 0; i < slice; i++)
        nan_o += isnan(out[i]) != 0;
      for (int i = 0; i < N; i++)
        nan_l += isnan(lse[i]) || (isinf(lse[i]) && lse[i] > 0);
    }
  if (nan_o || nan_l) {
    fprintf(stderr,
            "dua-bench: CHECK FAILED (%s, n=%d, %s): %lld output elements NaN or never written, %lld LSE "
            "values NaN or +inf\n",
            variant, N, dtype_name(b->dtype), nan_o, nan_l);
    exit(1);
  }
  double cost = 2.0 * DH * elements_per_slice;
  int nslices = cost <= 0 ? CHECK_SLICES : (int)fmin(CHECK_SLICES, floor(CHECK_BUDGET / cost));
  if (nslices > 0) {
    int cand[][2] = {{0, 0}, {B - 1, H - 1}, {B / 2, H / 2}, {0, H - 1}, {B - 1, 0}}, done = 0;
    for (int s = 0; s < (int)(sizeof cand / sizeof cand[0]) && done < nslices; s++) {
      int dup = 0;
      for (int t = 0; t < s; t++)
        dup |= cand[t][0] == cand[s][0] && cand[t][1] == cand[s][1];
      if (dup)
        continue;
      int h = cand[s][1];
      check_slice_full(b, &c, cand[s][0], h, depths ? depths[h] : 0, extras, q, k, v, out, lse, ro, rl);
      done++;
    }
    snprintf(what, what_size, "reference:%d slice%s", done, done == 1 ? "" : "s");
  } else {
    uint64_t rng = o->seed ^ 0x5eedull;
    check_slice_rows(b, &c, layout, 0, 0, q, k, v, out, lse, &rng);
    if (B > 1 || H > 1)
      check_slice_rows(b, &c, layout, B - 1, H - 1, q, k, v, out, lse, &rng);
    snprintf(what, what_size, "rows:%d", (B > 1 || H > 1 ? 2 : 1) * CHECK_ROWS);
  }
  free(q), free(k), free(v), free(out), free(ro), free(lse), free(rl);
  if (c.bad) {
    fprintf(
        stderr,
        "dua-bench: CHECK FAILED (%s, n=%d, %s): %lld of %lld values outside |x - ref| <= %g + %g |ref|, max "
        "error %.3g; first: %s\n",
        variant, N, dtype_name(b->dtype), c.bad, c.compared, c.atol, c.rtol, c.max_err, c.first_bad);
    exit(1);
  }
  fprintf(stderr, "  check %-10s ok: %s, %lld values, max |err| %.3g (tolerance %g + %g |ref|)\n", variant,
          what, c.compared, c.max_err, c.atol, c.rtol);
}

/* ------------------------------------------------------------------ timing */

int queue_profiles(cl_command_queue queue) {
  cl_command_queue_properties props = 0;
  if (queue == NULL ||
      clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL) != CL_SUCCESS)
    return 0;
  return (props & CL_QUEUE_PROFILING_ENABLE) != 0;
}

static cl_event marker(cl_command_queue queue) {
  cl_event e = NULL;
  if (clEnqueueMarkerWithWaitList(queue, 0, NULL, &e) != CL_SUCCESS)
    return NULL;
  return e;
}

static void clock_finish(bench_clock *c) {
  dua_status st = dua_context_finish(c->ctx);
  if (st != DUA_SUCCESS)
    die_dua(c->ctx, st, "dua_context_finish");
}

/* Warm-up, then R calls (rotating input sets) in up to 5 trials; a marker before the first call and after
 * each call. Per-call device time = END(marker after) - END(marker before). */
timing time_calls(bench_clock *c, const options *o, int nsets, bench_call_fn fn, void *user) {
  timing t = {NAN, NAN, NAN, 0, 0};
  /* warm-up calls, each finished and timed; the fastest after the first (which may compile kernels) is the
   * estimate for --reps; warm-up stops early once it has taken --min-time */
  int set = 0;
  double one = -1, spent = 0;
  for (int i = 0; i < o->warmup; i++) {
    double t0 = now_s();
    fn(user, (set++) % nsets);
    clock_finish(c);
    double dt = now_s() - t0;
    spent += dt;
    if (i > 0 || o->warmup == 1)
      one = one < 0 || dt < one ? dt : one;
    if (i > 0 && spent > o->min_time)
      break;
  }
  int R = o->reps;
  if (R == 0) {
    if (one < 0) {
      double t0 = now_s();
      fn(user, (set++) % nsets);
      clock_finish(c);
      one = now_s() - t0;
    }
    double want = ceil(o->min_time / (one > 1e-7 ? one : 1e-7));
    R = want < 5 ? 5 : (want > 100000 ? 100000 : (int)want);
  }
  int trials = R >= 25 ? 5 : 1, per = R / trials;
  R = per * trials;
  int events = o->use_events && c->events_ok;
  cl_event *ev = events ? xmalloc((size_t)(R + trials) * sizeof(cl_event)) : NULL;
  double *walls = xmalloc((size_t)trials * sizeof(double));
  int nev = 0;
  double wall_total = 0;
  for (int tr = 0; tr < trials; tr++) {
    double t0 = now_s();
    if (events && (ev[nev++] = marker(c->queue)) == NULL)
      events = 0, nev--;
    for (int i = 0; i < per; i++) {
      fn(user, (set++) % nsets);
      if (events && (ev[nev++] = marker(c->queue)) == NULL)
        events = 0, nev--;
    }
    clock_finish(c);
    double el = now_s() - t0;
    wall_total += 1e3 * el;
    walls[tr] = el / per;
  }
  t.wall_ms = 1e3 * median(walls, (size_t)trials);
  t.reps = R;
  if (events) {
    double *d = xmalloc((size_t)R * sizeof(double)), total = 0;
    int nd = 0, ok = 1, idx = 0;
    for (int tr = 0; tr < trials && ok; tr++) {
      cl_ulong prev = 0;
      for (int i = 0; i <= per && ok; i++, idx++) {
        cl_ulong end = 0;
        if (clGetEventProfilingInfo(ev[idx], CL_PROFILING_COMMAND_END, sizeof end, &end, NULL) !=
                CL_SUCCESS ||
            end == 0 || (i > 0 && end < prev))
          ok = 0;
        if (i > 0 && ok) {
          d[nd] = (double)(end - prev) * 1e-6;
          total += d[nd++];
        }
        prev = end;
      }
    }
    /* device time cannot exceed host wall time around the same calls (2% and 0.1 ms of slack) */
    if (ok && total > 0 && total <= 1.02 * wall_total + 0.1) {
      t.ms = median(d, (size_t)nd);
      t.ms_min = d[0];
      t.events = 1;
    } else if (c->events_ok) {
      fprintf(stderr, "  note: marker events gave no usable profiling data; timing with the wall clock\n");
      c->events_ok = 0;
    }
    free(d);
  }
  for (int i = 0; i < nev; i++)
    clReleaseEvent(ev[i]);
  free(ev);
  if (!t.events) {
    t.ms = t.wall_ms;
    t.ms_min = 1e3 * walls[0]; /* median() sorted walls */
  }
  free(walls);
  return t;
}

typedef struct fwd_user {
  bench *b;
  dua_layout *layout;
  const dua_attention_params *p;
} fwd_user;

static void fwd_timed_call(void *user, int set) {
  fwd_user *u = user;
  call(u->b, u->layout, u->p, set, u->b->opt->lse);
}

static timing time_variant(bench *b, dua_layout *layout, const dua_attention_params *p) {
  prepare(b, layout, p);
  fwd_user u = {b, layout, p};
  return time_calls(&b->clock, b->opt, b->nsets, fwd_timed_call, &u);
}

/* ------------------------------------------------------------------ reporting */

typedef struct problem {
  int depth_value; /* resolved uniform depth, or -2 when per-head depths differ */
  const int32_t *depths;
  double visited_flops[3], useful_flops[3], bytes;
  dua_layout_density dens[3];
  char depth_text[32];
} problem;

static result *add_result(bench *b) {
  if (b->nresults == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 16;
    result *r = realloc(b->results, (size_t)b->cap * sizeof(result));
    if (r == NULL) {
      fprintf(stderr, "dua-bench: out of host memory\n");
      exit(1);
    }
    b->results = r;
  }
  result *r = &b->results[b->nresults++];
  memset(r, 0, sizeof *r);
  return r;
}

static void write_json(bench *b, const problem *pr, int var, const char *name, const timing *t,
                       const result *r, const char *algo, const char *checked, int extras,
                       char ran[2][KERNEL_TEXT]) {
  FILE *f = b->json;
  if (f == NULL)
    return;
  const options *o = b->opt;
  static const char *const pass_names[3] = {"fwd", "bwd", "fwdbwd"};
  fprintf(f, "{\"variant\": \"%s\", \"peer\": \"%s\", \"pass_\": \"%s\"", name, name, pass_names[o->pass]);
  json_int(f, "n", b->n);
  json_int(f, "batch", o->batch);
  json_int(f, "heads", o->heads);
  json_int(f, "kv_heads", o->kv_heads);
  json_int(f, "dim", o->dim);
  json_int(f, "block", o->block);
  json_int(f, "arity", o->arity);
  if (!extras) {
    json_int(f, "depth", 0);
  } else if (pr->depth_value >= 0) {
    json_int(f, "depth", pr->depth_value);
  } else {
    fprintf(f, ", \"depth\": null, \"head_depths\": [");
    for (int h = 0; h < o->heads; h++)
      fprintf(f, "%s%d", h ? ", " : "", (int)pr->depths[h]);
    fputc(']', f);
  }
  json_int(f, "tree_depth", b->tree_depth);
  json_int(f, "shift", extras ? o->shift : 0);
  json_int(f, "window", extras ? o->window : 0);
  json_int(f, "sink", extras ? o->sink : 0);
  fprintf(f, ", \"causal\": %s", o->causal ? "true" : "false");
  json_str(f, "dtype", dtype_name(b->dtype));
  fprintf(f, ", \"tf32\": %s", o->tf32 && b->dtype == DUA_F32 ? "true" : "false");
  json_str(f, "algo", algo);
  fprintf(f, ", \"lse\": %s", o->lse ? "true" : "false");
  json_num(f, "density", pr->dens[var].blocks);
  json_num(f, "density_pairs", pr->dens[var].pairs);
  json_num(f, "density_full_blocks", pr->dens[var].full_blocks);
  json_num(f, "density_partial_blocks", pr->dens[var].partial_blocks);
  json_num(f, "visited_flops", pr->visited_flops[var]);
  json_num(f, "useful_flops", pr->useful_flops[var]);
  json_num(f, "bytes", pr->bytes);
  if (r->skipped[0]) {
    json_str(f, "skipped", r->skipped);
  } else {
    json_num(f, "ms", t->ms);
    json_num(f, "ms_min", t->ms_min);
    json_num(f, "wall_ms", t->wall_ms);
    json_int(f, "reps", t->reps);
    json_str(f, "timer", t->events ? "events" : "wall");
    json_int(f, "input_sets", b->nsets);
    json_num(f, "tflops", r->tflops);
    json_num(f, "useful_tflops", r->useful_tflops);
    json_num(f, "gbps", r->gbps);
    json_num(f, "speedup_vs_dense", r->vs_dense);
    json_num(f, "speedup_vs_naive", r->vs_naive);
    if (o->peak_tflops > 0) {
      json_num(f, "roofline_fraction", r->roof);
      json_num(f, "peak_tflops", o->peak_tflops);
      json_num(f, "peak_gbps", o->peak_gbps);
    }
  }
  if (checked != NULL)
    json_str(f, "checked", checked);
  else
    fprintf(f, ", \"checked\": null");
  if (ran[0][0])
    json_str(f, "kernel_fwd", ran[0]);
  if (ran[1][0])
    json_str(f, "kernel_bwd", ran[1]);
  json_str(f, "device", b->info.name);
  json_str(f, "platform", b->info.platform_name);
  json_str(f, "driver", b->info.driver_version);
  json_str(f, "dua_version", dua_version());
  fprintf(f, "}\n");
  fflush(f);
}

static void print_table(bench *b) {
  FILE *f = b->table;
  const options *o = b->opt;
  static const char *const pass_names[3] = {"fwd", "bwd", "fwdbwd"};
  fprintf(f, "\ndua-bench on %s (%s, driver %s), pass %s%s\n", b->info.name, b->info.platform_name,
          b->info.driver_version, pass_names[o->pass], o->lse ? ", with LSE" : "");
  fprintf(f, "%-10s %6s %3s %3s %3s %4s %4s %2s %5s %5s %5s %3s %4s %8s %8s %10s %8s %8s %8s %8s %8s%s %s\n",
          "variant", "n", "B", "H", "Hkv", "Dh", "blk", "p", "depth", "win", "sink", "cau", "type",
          "dens_blk", "dens_pr", "ms", "TFLOP/s", "useful", "GB/s", "x_dense", "x_naive",
          o->peak_tflops > 0 ? "  roofl" : "", "check");
  for (int i = 0; i < b->nresults; i++) {
    const result *r = &b->results[i];
    fprintf(f, "%-10s %6d %3d %3d %3d %4d %4d %2d %5s %5d %5d %3s %4s %8.5f %8.5f ", r->variant, r->n,
            r->batch, r->heads, r->kv_heads, r->dim, r->block, r->arity, r->depth, r->window, r->sink,
            r->causal ? "yes" : "no", r->dtype, r->density, r->density_pairs);
    if (r->skipped[0]) {
      fprintf(f, "skipped: %s\n", r->skipped);
      continue;
    }
    fprintf(f, "%10.4f %8.4f %8.4f %8.2f %8.2f %8.2f", r->ms, r->tflops, r->useful_tflops, r->gbps,
            r->vs_dense, r->vs_naive);
    if (o->peak_tflops > 0)
      fprintf(f, " %7.1f%%", 100.0 * r->roof);
    fprintf(f, " %s\n", r->check[0] ? r->check : "-");
  }
  fprintf(f,
          "ms: median per call (%s); TFLOP/s on visited blocks (4*Dh*rows*cols of visited blocks; x2.5 bwd, "
          "x3.5 fwdbwd); useful: "
          "on visible pairs; GB/s on compulsory bytes (Q,K,V,O once%s); x_dense, x_naive: speedup of the row "
          "over dua_dense and naive (NaN when not run)\n",
          b->clock.events_ok && o->use_events ? "device time from profiling markers" : "host wall clock",
          o->lse ? ", LSE" : "");
}

/* ------------------------------------------------------------------ one problem */

enum { V_SPARSE = 0, V_DENSE = 1, V_NAIVE = 2 };

static void run_problem(bench *b, int depth_arg) {
  const options *o = b->opt;
  int N = b->n, B = o->batch, H = o->heads;
  int32_t *depths = xmalloc((size_t)H * sizeof(int32_t));
  resolve_depths(o, depth_arg, b->tree_depth, depths);
  problem pr;
  memset(&pr, 0, sizeof pr);
  pr.depths = depths;
  pr.depth_value = depths[0];
  for (int h = 1; h < H; h++)
    if (depths[h] != depths[0])
      pr.depth_value = -2;
  if (pr.depth_value >= 0)
    snprintf(pr.depth_text, sizeof pr.depth_text, "%d", pr.depth_value);
  else
    snprintf(pr.depth_text, sizeof pr.depth_text, "mixed");

  dua_layout *sparse = make_layout(o, N, B, H, depths, 1);
  if (o->show_mask) { /* '#' full block, '+' partial (element mask), '.' skipped */
    size_t need = dua_layout_mask_text(sparse, 0, 0, NULL, 0);
    char *text = malloc(need + 1);
    if (text && dua_layout_mask_text(sparse, 0, 0, text, need + 1) == need)
      fprintf(stderr, "block mask of batch 0, head 0 (N=%d, block %d; # full, + partial, . skipped):\n%s\n",
              N, o->block, text);
    free(text);
  }
  dua_layout *dense = make_layout(o, N, B, H, NULL, 0);
  dua_layout *lay[3] = {sparse, dense, sparse};
  size_t es = dua_dtype_size(b->dtype);
  /* fwd: 2 matrix products a visited pair, bwd: 5 (S, dP, dV, dQ, dK); bytes: Q, K, V, O (fwd), plus dO, dQ,
   * dK, dV and a re-read of the four (bwd) */
  const double flop_factor = o->pass == 0 ? 1.0 : o->pass == 1 ? 2.5 : 3.5;
  const double byte_factor = o->pass == 0 ? 1.0 : o->pass == 1 ? 2.0 : 3.0;
  pr.bytes =
      byte_factor * (double)es * ((double)B * H * N * o->dim * 2 + (double)B * o->kv_heads * N * o->dim * 2) +
      (o->lse || o->pass ? 4.0 * B * H * N : 0.0);
  double elements[3];
  for (int var = 0; var < 2; var++) {
    dua_status st = dua_layout_density_get(lay[var], &pr.dens[var]);
    if (st != DUA_SUCCESS)
      die_dua(NULL, st, "dua_layout_density_get");
    elements[var] = visited_elements(o, N, var == V_SPARSE ? depths : NULL);
    pr.visited_flops[var] = flop_factor * 4.0 * o->dim * elements[var];
    pr.useful_flops[var] = flop_factor * 4.0 * o->dim * pr.dens[var].pairs * (double)N * N * B * H;
  }
  pr.dens[V_NAIVE] = pr.dens[V_SPARSE];
  elements[V_NAIVE] = elements[V_SPARSE];
  pr.visited_flops[V_NAIVE] = pr.visited_flops[V_SPARSE];
  pr.useful_flops[V_NAIVE] = pr.useful_flops[V_SPARSE];

  const char *names[3] = {"dua_sparse", "dua_dense", "naive"};
  dua_attention_params params[3];
  for (int var = 0; var < 3; var++)
    dua_attention_params_init(&params[var]);
  params[V_SPARSE].algo = o->algo;
  params[V_DENSE].algo = DUA_ALGO_AUTO;
  params[V_SPARSE].allow_tf32 = params[V_DENSE].allow_tf32 = o->tf32;
  params[V_NAIVE].algo = DUA_ALGO_NAIVE;

  char skipped[3][160] = {"", "", ""};
  if (o->no_dense)
    snprintf(skipped[V_DENSE], sizeof skipped[V_DENSE], "--no-dense");
  double scores = 4.0 * B * H * (double)N * N;
  double limit = (double)(b->info.max_alloc_bytes < b->info.global_mem_bytes ? b->info.max_alloc_bytes
                                                                             : b->info.global_mem_bytes) /
                 4.0;
  if (o->no_naive)
    snprintf(skipped[V_NAIVE], sizeof skipped[V_NAIVE], "--no-naive");
  else if (o->pass)
    snprintf(skipped[V_NAIVE], sizeof skipped[V_NAIVE], "the naive baseline has no backward");
  else if (!o->force_naive && scores > limit)
    snprintf(skipped[V_NAIVE], sizeof skipped[V_NAIVE],
             "scores need %.0f MiB > 1/4 of min(max alloc, global mem) = %.0f MiB (--force-naive runs it)",
             scores / 1048576.0, limit / 1048576.0);

  fprintf(stderr,
          "problem n=%d B=%d H=%d Hkv=%d Dh=%d blk=%d p=%d depth=%s (tree %d) window=%d sink=%d%s %s: "
          "density %.5f blocks, %.5f pairs; %d input set%s\n",
          N, B, H, o->kv_heads, o->dim, o->block, o->arity, pr.depth_text, b->tree_depth, o->window, o->sink,
          o->causal ? " causal" : "", dtype_name(b->dtype), pr.dens[0].blocks, pr.dens[0].pairs, b->nsets,
          b->nsets == 1 ? "" : "s");
  char checked[3][48] = {"", "", ""};
  if (o->check && o->pass)
    fprintf(
        stderr,
        "  note: --check validates the forward of each variant; the backward kernels are validated against "
        "the CPU reference by the test suite (test_backward)\n");
  if (o->check)
    for (int var = 0; var < 3; var++)
      if (!skipped[var][0])
        check_variant(b, names[var], lay[var], &params[var], var == V_DENSE ? NULL : depths, var != V_DENSE,
                      elements[var] / ((double)B * H), checked[var], sizeof checked[var]);

  timing t[3];
  /* the kernels each variant's timed calls launched, forward and backward ("" where none; with --pass bwd the
   * forward is the one that made the O and LSE the backward reads) */
  char ran[3][2][KERNEL_TEXT];
  memset(ran, 0, sizeof ran);
  for (int var = 0; var < 3; var++) {
    t[var] = (timing){NAN, NAN, NAN, 0, 0};
    if (skipped[var][0]) {
      if (var == V_NAIVE && !o->no_naive)
        fprintf(stderr, "  naive skipped: %s\n", skipped[var]);
      continue;
    }
    b->capture = ran[var];
    t[var] = time_variant(b, lay[var], &params[var]);
    b->capture = NULL;
    fprintf(stderr, "  %-10s %10.4f ms (%s, %d reps; wall %.4f ms)\n", names[var], t[var].ms,
            t[var].events ? "events" : "wall", t[var].reps, t[var].wall_ms);
    for (int pass = 0; pass < 2; pass++)
      if (ran[var][pass][0])
        fprintf(stderr, "             %s: %s\n", pass ? "backward" : "forward", ran[var][pass]);
  }
  for (int var = 0; var < 3; var++) {
    result *r = add_result(b);
    snprintf(r->variant, sizeof r->variant, "%s", names[var]);
    snprintf(r->dtype, sizeof r->dtype, "%s", dtype_name(b->dtype));
    snprintf(r->depth, sizeof r->depth, "%s", var == V_DENSE ? "0" : pr.depth_text);
    snprintf(r->skipped, sizeof r->skipped, "%s", skipped[var]);
    snprintf(r->check, sizeof r->check, "%.47s", checked[var]);
    r->n = N, r->batch = B, r->heads = H, r->kv_heads = o->kv_heads, r->dim = o->dim, r->block = o->block;
    r->arity = o->arity, r->window = var == V_DENSE ? 0 : o->window, r->sink = var == V_DENSE ? 0 : o->sink;
    r->causal = o->causal;
    r->density = pr.dens[var].blocks, r->density_pairs = pr.dens[var].pairs;
    r->ms = t[var].ms, r->ms_min = t[var].ms_min, r->wall_ms = t[var].wall_ms;
    double sec = t[var].ms * 1e-3;
    r->tflops = pr.visited_flops[var] / sec / 1e12;
    r->useful_tflops = pr.useful_flops[var] / sec / 1e12;
    r->gbps = pr.bytes / sec / 1e9;
    r->vs_dense = t[V_DENSE].ms / t[var].ms;
    r->vs_naive = t[V_NAIVE].ms / t[var].ms;
    r->roof = NAN;
    if (o->peak_tflops > 0) {
      double ft = pr.visited_flops[var] / (o->peak_tflops * 1e12), bt = pr.bytes / (o->peak_gbps * 1e9);
      r->roof = (ft > bt ? ft : bt) / sec;
    }
    /* the dense line describes the full layout it ran: depth 0, no window, sink or shift */
    const char *algo = var == V_SPARSE ? algo_name(o->algo) : (var == V_DENSE ? "auto" : "naive");
    write_json(b, &pr, var, names[var], &t[var], r, algo, checked[var][0] ? checked[var] : NULL,
               var != V_DENSE, ran[var]);
  }
  dua_layout_destroy(sparse);
  dua_layout_destroy(dense);
  free(depths);
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
  options o;
  parse_args(argc, argv, &o);
  bench b;
  memset(&b, 0, sizeof b);
  b.opt = &o;
  b.table = stdout;
  if (o.json != NULL) {
    if (strcmp(o.json, "-") == 0) {
      b.json = stdout;
      b.table = stderr;
    } else if ((b.json = fopen(o.json, "w")) == NULL) {
      fprintf(stderr, "dua-bench: cannot write %s: %s\n", o.json, strerror(errno));
      return 1;
    }
  }
  dua_context_options co;
  dua_context_options_init(&co);
  co.selector = o.device;
  co.log = bench_log;
  co.log_user = &b;
  co.log_level = DUA_LOG_DEBUG;
  dua_status st = dua_context_create(&co, &b.ctx);
  if (st != DUA_SUCCESS)
    die_dua(NULL, st, o.device ? "dua_context_create (--device)" : "dua_context_create");
  if ((st = dua_context_device_info(b.ctx, &b.info)) != DUA_SUCCESS)
    die_dua(b.ctx, st, "dua_context_device_info");
  b.clock.ctx = b.ctx;
  b.clock.queue = dua_context_cl_queue(b.ctx);
  b.clock.events_ok = queue_profiles(b.clock.queue);
  if (o.use_events && !b.clock.events_ok)
    fprintf(stderr, "note: dua's queue has no profiling; timing with the wall clock\n");
  fprintf(stderr, "dua-bench %s on %s (%s, driver %s)\n", dua_version(), b.info.name, b.info.platform_name,
          b.info.driver_version);
  if (o.pass == 3) {
    int rc = bench_decode(&o, b.ctx, b.table, b.json);
    dua_context_destroy(b.ctx);
    if (b.json != NULL && b.json != stdout)
      fclose(b.json);
    return rc;
  }
  for (int i = 0; i < o.nn; i++) {
    b.n = o.n[i];
    if (o.block <= 0) {
      fprintf(stderr, "dua-bench: --block %d must be > 0\n", o.block);
      return 2;
    }
    b.nb = (b.n + o.block - 1) / o.block;
    b.tree_depth = tree_depth(b.nb, o.arity < 2 ? 2 : o.arity);
    for (int d = 0; d < o.ndtype; d++) {
      b.dtype = o.dtype[d];
      alloc_problem(&b);
      int ndepth = o.nhead_depths ? 1 : o.ndepth;
      for (int k = 0; k < ndepth; k++)
        run_problem(&b, o.depth[k]);
      free_problem(&b);
    }
  }
  print_table(&b);
  free(b.results);
  dua_context_destroy(b.ctx);
  if (b.json != NULL && b.json != stdout)
    fclose(b.json);
  return 0;
}
