/* test_gates.c: native routing's gate math (host/train/gates.c) against finite differences and brute
 * force: level bias, its gradient, expected density and its gradient (per layer and over the whole model),
 * skip and extracted depths, and the lca fractions against the library's own layout rule
 * (dua_layout_visible at each depth), and the block-level fractions against the layout's visited blocks. */
#include "dua_train.h"
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

/* Two layers' gates for dua_density_budget: layer l's density under beta[l], its gradient into db[l]. */
typedef struct two_layers {
  const float (*beta)[6];
  const double *frac;
  float db[2][6];
} two_layers;

static double two_layers_density(void *user, int l, float weight, float target) {
  two_layers *u = user;
  return dua_gates_density(u->beta[l], u->frac, 2, 2, weight, target, weight > 0 ? u->db[l] : NULL);
}

/* The budget over the whole model (dua_density_budget, the trainer's code path): two layers, the first
 * above the target and the second below. Per layer only the first is pushed; for the model nothing is pushed
 * while the mean is under the target, and both layers are, each by its share, once it is over: the
 * gradient of each scope's penalty by finite differences. */
START_TEST(model_wide_budget) {
  const int H = 2, D = 2, L = 2;
  double frac[3] = {0.5, 0.3, 0.2};
  float beta[2][6] = {{-0.1f, -0.2f, 0.0f, -0.3f, -0.1f, 0.0f}, {-4.0f, -3.0f, 0.0f, -5.0f, -4.5f, 0.0f}};
  double mean[2];
  for (int l = 0; l < L; l++)
    mean[l] = dua_gates_density(beta[l], frac, H, D, 0.0f, 0.0f, NULL);
  const float weight = 2.0f;
  const float targets[2] = {0.6f, (float)((mean[0] + mean[1]) / 2 - 0.05)}; /* model mean under, then over */
  ck_assert(mean[0] > targets[0] && mean[1] < targets[0] && (mean[0] + mean[1]) / 2 < targets[0]);
  for (int ti = 0; ti < 2; ti++) {
    const float target = targets[ti];
    for (int scope = DUA_DENSITY_PER_LAYER; scope <= DUA_DENSITY_MODEL; scope++) {
      two_layers u = {(const float(*)[6])beta, frac, {{0}}};
      const double m = dua_density_budget(scope, L, weight, target, two_layers_density, &u);
      ck_assert(fabs(m - (mean[0] + mean[1]) / 2) < 1e-12);
      for (int l = 0; l < L; l++)
        for (int i = 0; i < H * (D + 1); i++) { /* central differences of the scope's penalty */
          float bp[2][6], bm[2][6];
          memcpy(bp, beta, sizeof beta), memcpy(bm, beta, sizeof beta);
          bp[l][i] += 1e-3f, bm[l][i] -= 1e-3f;
          double pp = 0.0, pm = 0.0, mp = 0.0, mm = 0.0;
          for (int k = 0; k < L; k++) {
            const double a = dua_gates_density(bp[k], frac, H, D, 0, 0, NULL),
                         b = dua_gates_density(bm[k], frac, H, D, 0, 0, NULL);
            pp += weight / L * fmax(0.0, a - target), pm += weight / L * fmax(0.0, b - target);
            mp += a / L, mm += b / L;
          }
          const double lp = scope == DUA_DENSITY_MODEL ? weight * fmax(0.0, mp - target) : pp,
                       lm = scope == DUA_DENSITY_MODEL ? weight * fmax(0.0, mm - target) : pm;
          const double fd = (lp - lm) / 2e-3;
          ck_assert_msg(fabs(fd - u.db[l][i]) <= 1e-4 + 1e-2 * fabs(fd),
                        "target %g scope %d layer %d: dbeta[%d] = %g, fd %g", (double)target, scope, l, i,
                        (double)u.db[l][i], fd);
        }
      const int pushed0 = u.db[0][0] != 0.0f, pushed1 = u.db[1][0] != 0.0f;
      ck_assert_int_eq(pushed0, scope == DUA_DENSITY_PER_LAYER ? 1 : ti == 1);
      ck_assert_int_eq(pushed1, scope == DUA_DENSITY_PER_LAYER ? ti == 1 && mean[1] > target : ti == 1);
    }
  }
}
END_TEST

/* Block-level fractions (dua_gates_block_fractions) against the library's layout (dua_layout_density's
 * visited blocks): for every head depth d, base[h] + sum_{k >= d} frac[h][k] is the visited-block fraction of
 * a causal layout with that depth, over a dense causal one; content paths (random digits, batch 3) and the
 * positional tree with a shift, with windows that reach zero, one and two blocks back, a sink and a short
 * last block. */
START_TEST(block_fractions_match_the_layout) {
  test_rng r = test_rng_make(31 + (uint64_t)_i);
  const int p = 2 + _i % 2, blk = 16, T = _i < 2 ? 16 * 11 - 3 : 16 * 8, B = 3, H = 2;
  const int nb = (T + blk - 1) / blk, window = (int[]){0, 16, 20, 40}[_i], sink = _i == 1 ? 20 : 0;
  int D = 0;
  for (int g = 1; g < nb; g *= p)
    D++;
  uint8_t *paths = malloc((size_t)B * H * nb * D);
  ck_assert_ptr_nonnull(paths);
  for (size_t i = 0; i < (size_t)B * H * nb * D; i++)
    paths[i] = (uint8_t)test_rng_int(&r, 0, p - 1);
  double frac[2 * 9], base[2];
  for (int content = 0; content < 2; content++) {
    const int shift = content ? 0 : 1;
    dua_gates_block_fractions(content ? paths : NULL, B, H, nb, D, p, shift, blk, window, sink, frac, base);
    for (int d = 0; d <= D; d++) {
      const int32_t depths[2] = {d, d};
      const dua_layout_desc desc = {.seq_len = T,
                                    .block = blk,
                                    .batch = B,
                                    .heads = H,
                                    .arity = p,
                                    .depths = depths,
                                    .shift = shift,
                                    .window = window,
                                    .sink = sink,
                                    .causal = 1,
                                    .paths = content ? paths : NULL};
      const double want = test_visited_block_fraction(&desc);
      double got = 0.0;
      for (int h = 0; h < H; h++) {
        got += base[h] / H;
        for (int k = d; k <= D; k++)
          got += frac[h * (D + 1) + k] / H;
      }
      ck_assert_msg(fabs(got - want) <= 1e-12, "case %d, content %d, depth %d: %.15f, layout %.15f", _i,
                    content, d, got, want);
    }
  }
  free(paths);
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
  tcase_add_test(tc, model_wide_budget);
  tcase_add_loop_test(tc, block_fractions_match_the_layout, 0, 4);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
