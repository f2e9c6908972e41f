/* test_util.c: shared helpers for the Check suites (see test_util.h). */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t test_seed(void) {
  static uint64_t seed = 0;
  if (!seed) {
    const char *s = getenv("DUA_TEST_SEED");
    seed = s && *s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    if (!seed)
      seed = 1;
  }
  return seed;
}

test_rng test_rng_make(uint64_t seed) {
  test_rng r = {seed * 0x9E3779B97F4A7C15ull + test_seed()};
  return r;
}

uint64_t test_rng_next(test_rng *r) { /* splitmix64 */
  uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int test_rng_int(test_rng *r, int lo, int hi) {
  return lo + (int)(test_rng_next(r) % (uint64_t)(hi - lo + 1));
}

float test_rng_float(test_rng *r) {
  return (float)((test_rng_next(r) >> 40) * (1.0 / (1ull << 24)) * 2.0 - 1.0);
}

dua_context *test_context(void) {
  dua_context *ctx = NULL;
  dua_status st = dua_context_create(NULL, &ctx);
  ck_assert_msg(st == DUA_SUCCESS, "no OpenCL device for the cl suite: %s (install pocl-opencl-icd)",
                dua_status_string(st));
  return ctx;
}

long test_compare(const float *x, const float *ref, size_t n, double atol, double rtol, double *max_err) {
  long first = -1;
  double worst = 0.0;
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)x[i] - (double)ref[i]);
    if (isnan(x[i]) || isnan(err) || err > atol + rtol * fabs((double)ref[i])) {
      if (first < 0)
        first = (long)i;
    }
    if (err > worst || isnan(err))
      worst = err;
  }
  if (max_err)
    *max_err = worst;
  return first;
}

int test_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  fprintf(stderr, "test seed %llu (set DUA_TEST_SEED to repeat)\n", (unsigned long long)test_seed());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

void test_fill(float *x, size_t n, test_rng *r, dua_dtype dtype) {
  for (size_t i = 0; i < n; i++) {
    float f = test_rng_float(r);
    x[i] = dtype == DUA_F16 ? dua_half_to_float(dua_float_to_half(f)) : f;
  }
}

dua_buffer *test_upload(dua_context *ctx, const float *x, size_t n, dua_dtype dtype) {
  dua_buffer *buf = NULL;
  ck_assert_int_eq(dua_buffer_create(ctx, n * dua_dtype_size(dtype), &buf), DUA_SUCCESS);
  if (dtype == DUA_F16) {
    uint16_t *h = malloc(n * 2);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < n; i++)
      h[i] = dua_float_to_half(x[i]);
    ck_assert_int_eq(dua_buffer_write(buf, 0, n * 2, h), DUA_SUCCESS);
    free(h);
  } else {
    ck_assert_int_eq(dua_buffer_write(buf, 0, n * 4, x), DUA_SUCCESS);
  }
  return buf;
}

void test_download(dua_buffer *buf, float *x, size_t n, dua_dtype dtype) {
  if (dtype == DUA_F16) {
    uint16_t *h = malloc(n * 2);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(dua_buffer_read(buf, 0, n * 2, h), DUA_SUCCESS);
    for (size_t i = 0; i < n; i++)
      x[i] = dua_half_to_float(h[i]);
    free(h);
  } else {
    ck_assert_int_eq(dua_buffer_read(buf, 0, n * 4, x), DUA_SUCCESS);
  }
}

void test_attn_strides(int64_t s[4], int64_t heads, int64_t tokens, int64_t dim, int bnhd) {
  s[3] = 1;
  if (bnhd) {
    s[1] = dim;
    s[2] = heads * dim;
    s[0] = tokens * heads * dim;
  } else {
    s[2] = dim;
    s[1] = tokens * dim;
    s[0] = heads * tokens * dim;
  }
}

dua_host_tensor test_host_view(float *data, int64_t b, int64_t h, int64_t n, int64_t d, int bnhd) {
  dua_host_tensor t = {data, {b, h, n, d}, {0, 0, 0, 0}};
  test_attn_strides(t.strides, h, n, d, bnhd);
  return t;
}

dua_tensor test_dev_view(dua_buffer *buf, dua_dtype dtype, int64_t b, int64_t h, int64_t n, int64_t d,
                         int bnhd) {
  dua_tensor t = dua_tensor_contiguous(buf, 0, dtype, b, h, n, d);
  test_attn_strides(t.strides, h, n, d, bnhd);
  return t;
}

dua_host_tensor test_host_tensor_new(int64_t s0, int64_t s1, int64_t s2, int64_t s3, int bnhd) {
  float *data = malloc((size_t)(s0 * s1 * s2 * s3) * sizeof(float));
  ck_assert_ptr_nonnull(data);
  return test_host_view(data, s0, s1, s2, s3, bnhd);
}

double test_visited_block_fraction(const dua_layout_desc *desc) {
  double blocks[2];
  for (int dense = 0; dense < 2; dense++) {
    dua_layout_desc d = *desc;
    if (dense)
      d.depths = NULL; /* every head at depth 0 */
    dua_layout *lay = NULL;
    dua_layout_density dens;
    ck_assert_int_eq(dua_layout_create(&d, &lay, NULL, 0), DUA_SUCCESS);
    ck_assert_int_eq(dua_layout_density_get(lay, &dens), DUA_SUCCESS);
    dua_layout_destroy(lay);
    blocks[dense] = dens.blocks;
  }
  return blocks[0] / blocks[1];
}

void test_fwd_run_check(const test_fwd_run *r, double atol, double rtol, const char *what) {
  double err;
  long bad = test_compare(r->o, r->ref_o, r->nq, atol, rtol, &err);
  ck_assert_msg(bad < 0, "%s: O[%ld] = %g, reference %g (max error %g)", what, bad,
                (double)(bad >= 0 ? r->o[bad] : 0), (double)(bad >= 0 ? r->ref_o[bad] : 0), err);
  for (size_t i = 0; i < r->nl; i++) {
    if (isinf(r->ref_lse[i]))
      ck_assert_msg(isinf(r->lse[i]) && r->lse[i] < 0, "%s: LSE[%zu] = %g, want -inf", what, i,
                    (double)r->lse[i]);
    else
      ck_assert_msg(fabs(r->lse[i] - r->ref_lse[i]) <= 1e-4 + 1e-4 * fabs(r->ref_lse[i]), /* fp32 sums */
                    "%s: LSE[%zu] = %.7g, reference %.7g", what, i, (double)r->lse[i], (double)r->ref_lse[i]);
  }
}

void test_fwd_run_free(test_fwd_run *r) {
  free(r->q);
  free(r->k);
  free(r->v);
  free(r->o);
  free(r->lse);
  free(r->ref_o);
  free(r->ref_lse);
  free(r->bias);
  memset(r, 0, sizeof *r);
}
