/* test_gates.c: native routing's gate math (host/train/gates.c) against finite differences and brute
 * force: level bias, its gradient, expected density and its gradient, skip and extracted depths, and the
 * lca fractions against the library's own layout rule (dua_layout_visible at each depth). */
#include "test_util.h"
#include "train/gates.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Loss = sum_k w[h][k] beta[h][k] for fixed random w: dL/dbeta = w. */
static double loss_of(const float *z, int H, int D, float tau, const float *w) {
  float x[64], beta[80];
  dua_gates_sample(z, H, D, tau, 7, 3, 1, 0, x, beta);
  double s = 0;
  for (int i = 0; i < H * (D + 1); i++)
    s += (double)w[i] * beta[i];
  return s;
}

START_TEST(bias_gradient_matches_finite_differences) {
  test_rng r = test_rng_make(11);
  const int H = 3, D = 4;
  const float tau = 0.7f;
  float z[12], w[15], x[12], beta[15], dz[12] = {0};
  for (int i = 0; i < H * D; i++)
    z[i] = 2.0f * test_rng_float(&r);
  for (int i = 0; i < H * (D + 1); i++)
    w[i] = test_rng_float(&r);
  dua_gates_sample(z, H, D, tau, 7, 3, 1, 0, x, beta);
  dua_gates_backward(x, w, H, D, tau, dz);
  for (int i = 0; i < H * D; i++) {
    const float e = 1e-2f;
    float zp[12], zm[12];
    memcpy(zp, z, sizeof z), memcpy(zm, z, sizeof z);
    zp[i] += e, zm[i] -= e;
    double fd = (loss_of(zp, H, D, tau, w) - loss_of(zm, H, D, tau, w)) / (2.0 * e);
    ck_assert_msg(fabs(fd - dz[i]) <= 2e-3 + 1e-2 * fabs(fd), "dz[%d] = %g, finite difference %g", i,
                  (double)dz[i], fd);
  }
  /* beta is the exact log of prod (1 - g): check one head against the direct product */
  for (int k = 0; k <= D; k++) {
    double p = 1.0;
    for (int l = k + 1; l <= D; l++)
      p *= 1.0 - 1.0 / (1.0 + exp(-(double)x[l - 1]));
    ck_assert_msg(fabs(exp((double)beta[k]) - p) <= 1e-6, "beta[%d]: %g vs %g", k, exp((double)beta[k]), p);
  }
}
END_TEST

START_TEST(saturated_gates_stay_finite) {
  float z[2] = {80.0f, -80.0f}, x[2], beta[3];
  dua_gates_sample(z, 1, 2, 0.1f, 1, 1, 0, 1, x, beta);
  for (int k = 0; k < 3; k++)
    ck_assert_msg(isfinite(beta[k]), "beta[%d] = %g", k, (double)beta[k]);
  ck_assert(beta[0] < -100.0f); /* gate 1 on: lca 0 pairs cut */
  ck_assert_int_eq(dua_gates_skip_depth(beta, 2, -30.0f), 1);
  ck_assert_int_eq(dua_gates_extract_depth(z, 2), 1);
  float z2[3] = {-1.0f, 0.5f, -3.0f};
  ck_assert_int_eq(dua_gates_extract_depth(z2, 3), 2);
  float z3[3] = {-1.0f, -0.5f, -3.0f};
  ck_assert_int_eq(dua_gates_extract_depth(z3, 3), 0);
}
END_TEST

START_TEST(noise_is_a_pure_function_of_its_seed) {
  float z[4] = {0.1f, -0.2f, 0.3f, 0.0f}, x1[4], x2[4], x3[4], b[6];
  dua_gates_sample(z, 2, 2, 1.0f, 5, 10, 0, 1, x1, b);
  dua_gates_sample(z, 2, 2, 1.0f, 5, 10, 0, 1, x2, b);
  dua_gates_sample(z, 2, 2, 1.0f, 5, 11, 0, 1, x3, b);
  ck_assert(memcmp(x1, x2, sizeof x1) == 0);
  ck_assert(memcmp(x1, x3, sizeof x1) != 0);
}
END_TEST

/* Fractions of causal pairs by lca, brute force over tokens with the library's visibility rule: a pair
 * has lca >= d iff it is visible in the depth-d layout. */
START_TEST(lca_fractions_match_the_layout_rule) {
  const int cases[][4] = {{32, 16, 2, 0}, {128, 16, 2, 0}, {200, 16, 3, 1}, {96, 32, 2, 1}, {256, 16, 4, 2}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const int T = cases[c][0], blk = cases[c][1], p = cases[c][2], s = cases[c][3];
    const int nb = (T + blk - 1) / blk;
    int D = 0;
    for (long g = 1; g < nb; g *= p)
      D++;
    double frac[16];
    dua_gates_lca_fractions(T, blk, p, D, s, frac);
    double total = 0;
    for (int k = 0; k <= D; k++)
      total += frac[k];
    ck_assert_msg(fabs(total - 1.0) < 1e-12, "fractions sum to %g", total);
    double at_least_prev = 1.0;
    for (int d = 0; d <= D; d++) {
      int32_t depth = d;
      dua_layout_desc desc;
      memset(&desc, 0, sizeof desc);
      desc.seq_len = T, desc.block = blk, desc.batch = 1, desc.heads = 1, desc.arity = p,
      desc.depths = &depth;
      desc.shift = s, desc.causal = 1;
      dua_layout *l = NULL;
      ck_assert_int_eq(dua_layout_create(&desc, &l, NULL, 0), DUA_SUCCESS);
      double vis = 0, all = (double)T * (T + 1) / 2;
      for (int i = 0; i < T; i++)
        for (int j = 0; j <= i; j++)
          vis += dua_layout_visible(l, 0, 0, i, j);
      dua_layout_destroy(l);
      double want = 0; /* fraction with lca >= d */
      for (int k = d; k <= D; k++)
        want += frac[k];
      ck_assert_msg(fabs(vis / all - want) < 1e-12, "T=%d blk=%d p=%d s=%d depth %d: layout %g, fractions %g",
                    T, blk, p, s, d, vis / all, want);
      ck_assert(want <= at_least_prev + 1e-15);
      at_least_prev = want;
    }
  }
}
END_TEST

START_TEST(density_gradient_matches_finite_differences) {
  test_rng r = test_rng_make(12);
  const int H = 2, D = 3;
  double frac[4] = {0.4, 0.3, 0.2, 0.1};
  float beta[8], dbeta[8] = {0};
  for (int i = 0; i < H * (D + 1); i++)
    beta[i] = -1.5f + test_rng_float(&r);
  for (int h = 0; h < H; h++)
    beta[h * (D + 1) + D] = 0.0f;
  const float weight = 0.8f, target = 0.05f; /* the layer is above its budget: penalty active */
  double e0 = dua_gates_density(beta, frac, H, D, weight, target, dbeta);
  ck_assert(e0 > target);
  for (int i = 0; i < H * (D + 1); i++) {
    const float e = 1e-3f;
    float bp[8], bm[8];
    memcpy(bp, beta, sizeof beta), memcpy(bm, beta, sizeof beta);
    bp[i] += e, bm[i] -= e;
    double lp = weight * (dua_gates_density(bp, frac, H, D, 0, 0, NULL) - target);
    double lm = weight * (dua_gates_density(bm, frac, H, D, 0, 0, NULL) - target);
    double fd = (lp - lm) / (2.0 * e);
    ck_assert_msg(fabs(fd - dbeta[i]) <= 1e-4 + 1e-2 * fabs(fd), "dbeta[%d] = %g, fd %g", i, (double)dbeta[i],
                  fd);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("gates");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, bias_gradient_matches_finite_differences);
  tcase_add_test(tc, saturated_gates_stay_finite);
  tcase_add_test(tc, noise_is_a_pure_function_of_its_seed);
  tcase_add_test(tc, lca_fractions_match_the_layout_rule);
  tcase_add_test(tc, density_gradient_matches_finite_differences);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
