/* dua_bench.h: what dua-bench's attention part (dua_bench.c: fwd, bwd, fwdbwd) and its decode part
 * (dua_bench_decode.c) share: the parsed options, the timing loop (profiling markers, medians), the layout
 * maker, JSON writers and the seeded input generator. */
#ifndef DUA_BENCH_H
#define DUA_BENCH_H

#include "dua.h"
#include "dua_cl.h"

#include <stdint.h>
#include <stdio.h>

#define MAXV 64 /* values per sweep flag */

typedef struct options {
  int n[MAXV], nn;
  int depth[MAXV], ndepth;
  int head_depths[MAXV * 16], nhead_depths;
  dua_dtype dtype[MAXV];
  int ndtype;
  int batch, heads, kv_heads, dim, block, arity, window, sink, causal, shift, lse,
      pass; /* pass: 0 fwd 1 bwd 2 fwdbwd 3 decode */
  dua_attention_algo algo;
  const char *device, *json;
  int check, reps, warmup, use_events, no_naive, force_naive, no_dense, show_mask;
  int tf32; /* fp32 forward may run in tf32 on tensor cores (dua_attention_params.allow_tf32) */
  double min_time, peak_tflops, peak_gbps, atol, rtol;
  unsigned long long seed;
  /* --pass decode */
  int page, tokens, ragged, page_order; /* page_order: 0 lowest first, 1 shuffled */
  double copy_gbs;                      /* measured copy bandwidth given; 0 = measure */
} options;

typedef struct timing {
  double ms, ms_min, wall_ms;
  int reps, events;
} timing;

/* The queue to time on; events_ok drops to 0 once markers gave no usable profiling data. */
typedef struct bench_clock {
  dua_context *ctx;
  cl_command_queue queue;
  int events_ok;
} bench_clock;

typedef void (*bench_call_fn)(void *user, int set);

/* Times fn(user, set) (set rotating over nsets input sets) as described in --help: warm-up, then --reps or
 * --min-time worth of calls between profiling markers; median device time per call. */
timing time_calls(bench_clock *c, const options *o, int nsets, bench_call_fn fn, void *user);
int queue_profiles(cl_command_queue queue);

void fail_usage(const char *fmt, const char *arg);
void die_dua(const dua_context *ctx, dua_status st, const char *what);
void *xmalloc(size_t bytes);
double now_s(void);
double median(double *x, size_t n); /* sorts x */
uint64_t splitmix(uint64_t *s);
float uniform(uint64_t *s); /* [-1, 1), 24 random bits */
const char *dtype_name(dua_dtype t);
int tree_depth(int nb, int p);
void json_str(FILE *f, const char *key, const char *s);
void json_num(FILE *f, const char *key, double v);
void json_int(FILE *f, const char *key, long long v);
/* Depth of every head for sweep value `depth` (or --head-depths): -1 = deepest, above D clamps to D. */
void resolve_depths(const options *o, int depth, int D, int32_t *out);
/* The layout of the flags (extras: shift, window, sink) with these depths (NULL = all 0); exits on error. */
dua_layout *make_layout(const options *o, int n, int batch, int heads, const int32_t *depths, int extras);

/* --pass decode (dua_bench_decode.c): runs every problem of the options; returns the exit status. */
int bench_decode(const options *o, dua_context *ctx, FILE *table, FILE *json);

#endif
