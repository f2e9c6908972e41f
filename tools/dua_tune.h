/* dua_tune.h: what dua-tune's search (dua_tune.c) and its problems (dua_tune_problems.c) share: the tuned
 * kernel's problem shapes with their inputs, outputs and reference outputs, and the calls that run, time and
 * read one problem for the forward, the backward or the paged-KV decode. */
#ifndef DUA_TUNE_H
#define DUA_TUNE_H

#include "attention/kv_internal.h"
#include "dua.h"
#include "dua_cl.h"

#include <stddef.h>
#include <stdint.h>

typedef enum tune_kind { TUNE_FWD, TUNE_BWD, TUNE_DECODE } tune_kind;

#define TUNE_MAX_CACHES 64

/* A decode problem's paged KV cache (one layer), shared by the problems of the same (n, batch). */
typedef struct tune_cache {
  int n, batch;
  dua_kv_cache *cache;
  int32_t *seqs;
} tune_cache;

typedef struct tuner {
  dua_context *ctx;
  cl_command_queue queue;
  tune_kind kind;
  dua_dtype dtype;
  int dim, block, arity, heads, kv_heads, tokens, page;
  int events, reps, warmup;
  int mma;  /* "fwd_mma": the tensor-core forward (kind TUNE_FWD, fast paths on) */
  int tf32; /* forward calls pass allow_tf32 = 1 (fwd_mma, fp32) */
  double atol, rtol;
  tune_cache caches[TUNE_MAX_CACHES];
  int ncaches;
} tuner;

/* One problem shape: fwd/bwd: n tokens (layout seq_len), batch, causal or not; decode: batch sequences of n
 * context tokens, tokens queries each (causal). depth: the positional tree depth of every head (-1 deepest, 0
 * dense). */
typedef struct problem {
  int n, depth, batch, causal;
  dua_layout *layout;
  dua_buffer *bufs[10];
  int nbufs;
  dua_tensor q, k, v, o, lse, d_o, dq, dk, dv;
  tune_cache *cache; /* decode */
  size_t out_elems;  /* outputs read back (fwd: O, LSE; bwd: dQ, dK, dV; decode: O, LSE) */
  float *ref, *got;  /* [out_elems] */
  double default_ms, best_ms, cand_ms;
} problem;

/* Makes the problem's layout, inputs and outputs (seeded inputs in [-1, 1)); exits with a message on error.
 */
void problem_make(tuner *t, problem *p, int n, int depth, int batch, int causal, uint64_t *seed);
/* One call of the tuned kernel (fwd: dua_attention_forward, with allow_tf32 = t->tf32; bwd:
 * dua_attention_backward; decode: dua_decode). */
dua_status problem_run(const tuner *t, problem *p);
/* Reads the outputs as floats into out[out_elems]. */
void problem_read(const tuner *t, problem *p, float *out);
/* The plan a decode call of this problem would use now. */
dua_status problem_decode_plan(const tuner *t, const problem *p, dua_decode_plan_info *info);
/* Index of the first output element outside |x - ref| <= atol + rtol |ref| (equal infinities pass), or -1. */
long problem_compare(const tuner *t, const problem *p, double *got, double *want);
/* Name of output element i ("O[12]", "dK[3]", ...). */
void problem_element_name(const tuner *t, const problem *p, long i, char *out, size_t n);
void problem_free(problem *p);
void tuner_free_caches(tuner *t);

void tune_die(const char *what, const char *detail)
#if defined(__GNUC__)
    __attribute__((noreturn))
#endif
    ;
void tune_check(dua_context *ctx, dua_status st, const char *what);

#endif
