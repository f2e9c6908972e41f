/* test_util.h: shared helpers for the Check suites: a seeded PRNG, context creation that fails loudly
 * (tests must run on a real device, never skip), tolerance checks and a runner main. */
#ifndef DUA_TEST_UTIL_H
#define DUA_TEST_UTIL_H

#include "dua.h"

#include <check.h>
#include <stdint.h>

typedef struct test_rng {
  uint64_t state;
} test_rng;

/* Seed from the test name and a per-run salt (DUA_TEST_SEED, else the time), printed on failure. */
test_rng test_rng_make(uint64_t seed);
uint64_t test_rng_next(test_rng *r);
int test_rng_int(test_rng *r, int lo, int hi); /* uniform in [lo, hi] */
float test_rng_float(test_rng *r);             /* uniform in [-1, 1) */
uint64_t test_seed(void);                      /* run salt */

/* One forward problem's inputs and outputs next to the CPU reference's (test_forward, test_forward_mma). */
typedef struct test_fwd_run {
  float *q, *k, *v, *o, *lse, *ref_o, *ref_lse, *bias;
  size_t nq, nk, nl, nbias;
  dua_host_tensor hq, hk, hv, ho, hl;
} test_fwd_run;
/* O within atol + rtol |ref|; LSE within 1e-4 + 1e-4 |ref| (fp32 sums) and -inf exactly where the reference's
 * is; `what` names the problem in a failure. */
void test_fwd_run_check(const test_fwd_run *r, double atol, double rtol, const char *what);
/* Frees every array and zeroes the run. */
void test_fwd_run_free(test_fwd_run *r);

/* Creates a context on the default device (DUA_DEVICE or first GPU/CPU); ck_abort on failure. */
dua_context *test_context(void);

/* |x - ref| <= atol + rtol |ref|, never NaN. Returns the index of the first failure or -1. */
long test_compare(const float *x, const float *ref, size_t n, double atol, double rtol, double *max_err);

/* n random values in [-1, 1), rounded to what dtype stores (so a reference sees the device's inputs). */
void test_fill(float *x, size_t n, test_rng *r, dua_dtype dtype);
/* A new device buffer holding x (converted to dtype); ck_abort on failure. */
dua_buffer *test_upload(dua_context *ctx, const float *x, size_t n, dua_dtype dtype);
/* Reads n elements of dtype back as floats. */
void test_download(dua_buffer *buf, float *x, size_t n, dua_dtype dtype);

/* Element strides of a (B, H, N, D) attention tensor stored as (B,H,N,D), or as (B,N,H,D) when bnhd. */
void test_attn_strides(int64_t strides[4], int64_t heads, int64_t tokens, int64_t dim, int bnhd);
/* A new host tensor (malloc'ed data) of logical shape (s0, s1, s2, s3), stored as (B,H,N,D) or (B,N,H,D). */
dua_host_tensor test_host_tensor_new(int64_t s0, int64_t s1, int64_t s2, int64_t s3, int bnhd);
/* Host and device views of such a tensor. */
dua_host_tensor test_host_view(float *data, int64_t b, int64_t h, int64_t n, int64_t d, int bnhd);
dua_tensor test_dev_view(dua_buffer *buf, dua_dtype dtype, int64_t b, int64_t h, int64_t n, int64_t d,
                         int bnhd);

/* Visited key blocks of desc's layout (dua_layout_density) over those of the same layout with every depth 0
 * (dense); ck_abort on failure. */
double test_visited_block_fraction(const dua_layout_desc *desc);

/* Runs a suite; returns the process exit code. */
int test_run_suite(Suite *s);

#endif
