/* test_router.c: unit tests (no device) of content mode's router (host/train/router.c): the router
 * gradient against central finite differences of the smooth surrogate (soft agreements, every level and
 * node, arity 2 and 3), the balance-loss gradient alone against finite differences (both scopes), the
 * balance loss of a uniform router (1), the per-sequence scope against the batch scope on a batch even
 * overall and uneven within each sequence, the hard bias identity sum_l c[l] (1 - prod a) = beta[lca], the
 * straight-through derivative's sign, the training (hard-digit) backward against its formula computed the
 * slow way, path sampling (digits in range, argmax deterministic, noise reproducible) and the lca fractions;
 * and the router's input rows (host/train/content.c): with router_input = token+position, a node that
 * weighs only its level's positional digit routes every block to its index's digits, and one block routed
 * alone (generation) gets the digits of the whole-sequence pass, in both input modes, and the argmax lca
 * fractions of a noisy forward are the fractions of the noise-free one.
 */
#include "test_util.h"
#include "train/content.h"
#include "train/router.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct problem {
  dua_router_dims d;
  int B, nb;
  float *w, *x, *g, *beta, *soft, *dw;
  uint8_t *paths;
  int32_t *node;
} problem;

/* One layer (L = 1): random weights (larger than the trainer's init, so that paths differ), rows x,
 * pair gradients g (causal pairs n <= m, some zero), and level biases beta decreasing to 0 at D. */
static problem make(int H, int D, int p, int C, int B, int nb, test_rng *r) {
  problem P;
  P.d = dua_router_dims_of(1, H, D, p, C);
  P.B = B, P.nb = nb;
  P.w = malloc(P.d.total * sizeof *P.w);
  P.dw = calloc(P.d.total, sizeof *P.dw);
  P.x = malloc((size_t)B * nb * C * sizeof *P.x);
  P.g = calloc((size_t)B * H * nb * nb, sizeof *P.g);
  P.beta = malloc((size_t)H * (D + 1) * sizeof *P.beta);
  const size_t blocks = (size_t)B * H * nb * D;
  P.paths = malloc(blocks);
  P.node = malloc(blocks * sizeof *P.node);
  P.soft = malloc(blocks * p * sizeof *P.soft);
  ck_assert(P.w && P.dw && P.x && P.g && P.beta && P.paths && P.node && P.soft);
  for (size_t i = 0; i < P.d.total; i++)
    P.w[i] = 0.5f * test_rng_float(r);
  for (size_t i = 0; i < (size_t)B * nb * C; i++)
    P.x[i] = test_rng_float(r);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int m = 0; m < nb; m++)
        for (int n = 0; n <= m; n++)
          if (test_rng_int(r, 0, 3))
            P.g[(((size_t)b * H + h) * nb + m) * nb + n] = test_rng_float(r);
  for (int h = 0; h < H; h++) {
    double acc = 0.0;
    P.beta[h * (D + 1) + D] = 0.0f;
    for (int k = D - 1; k >= 0; k--) {
      acc -= 0.2 + fabs(test_rng_float(r)); /* c[l] < 0 */
      P.beta[h * (D + 1) + k] = (float)acc;
    }
  }
  return P;
}

static void release(problem *P) {
  free(P->w);
  free(P->dw);
  free(P->x);
  free(P->g);
  free(P->beta);
  free(P->paths);
  free(P->node);
  free(P->soft);
}

/* Central differences of the surrogate w.r.t. every router parameter; |a - n| <= 1e-4 + 1e-3 |n| (the
 * surrogate is evaluated in double from fp32 weights; the analytical gradient is accumulated in double and
 * stored in fp32). Returns the count of parameters whose gradient is nonzero. */
static int check_fd(problem *P, float tau, double balance_scale, int per_sequence, int use_g,
                    const char *what) {
  const float step = 1e-2f;
  float *zero_g = calloc((size_t)P->B * P->d.H * P->nb * P->nb, sizeof *zero_g);
  const float *g = use_g ? P->g : zero_g;
  dua_router_forward(&P->d, P->w, P->x, P->B, P->nb, tau, 0, 1, 0, 0, P->paths, P->soft, P->node);
  memset(P->dw, 0, P->d.total * sizeof *P->dw);
  dua_router_backward(&P->d, P->x, P->B, P->nb, P->paths, P->soft, P->node, g, P->beta, tau, 1, balance_scale,
                      per_sequence, P->dw);
  int nonzero = 0;
  double worst = 0.0;
  for (size_t i = 0; i < P->d.total; i++) {
    const float w0 = P->w[i];
    P->w[i] = w0 + step;
    double fp = dua_router_surrogate(&P->d, P->w, P->x, P->B, P->nb, P->paths, P->node, g, P->beta, tau,
                                     balance_scale, per_sequence);
    P->w[i] = w0 - step;
    double fm = dua_router_surrogate(&P->d, P->w, P->x, P->B, P->nb, P->paths, P->node, g, P->beta, tau,
                                     balance_scale, per_sequence);
    P->w[i] = w0;
    double num = (fp - fm) / ((double)(w0 + step) - (double)(w0 - step)), a = P->dw[i];
    double tol = 1e-4 + 1e-3 * fabs(num);
    ck_assert_msg(fabs(a - num) <= tol, "%s: dw[%zu] analytical %.8g vs numerical %.8g", what, i, a, num);
    worst = fabs(a - num) / tol > worst ? fabs(a - num) / tol : worst;
    nonzero += fabs(num) > 1e-6;
  }
  printf("%s: %zu gradients, %d nonzero, worst |a - n| / tol = %.3f\n", what, P->d.total, nonzero, worst);
  free(zero_g);
  return nonzero;
}

/* With no pair gradients the training backward (hard digits) and the surrogate's (soft agreements) differ in
 * nothing: both must give the same balance gradient, in either scope (the training path's balance term is
 * otherwise checked only through the hand-built case below). Call after check_fd (paths and soft drawn). */
static void check_hard_balance(problem *P, float tau, double balance_scale, int per_sequence) {
  float *zero_g = calloc((size_t)P->B * P->d.H * P->nb * P->nb, sizeof *zero_g);
  float *dw_hard = calloc(P->d.total, sizeof *dw_hard);
  ck_assert(zero_g && dw_hard);
  memset(P->dw, 0, P->d.total * sizeof *P->dw);
  const double soft_loss = dua_router_backward(&P->d, P->x, P->B, P->nb, P->paths, P->soft, P->node, zero_g,
                                               P->beta, tau, 1, balance_scale, per_sequence, P->dw);
  const double hard_loss = dua_router_backward(&P->d, P->x, P->B, P->nb, P->paths, P->soft, P->node, zero_g,
                                               P->beta, tau, 0, balance_scale, per_sequence, dw_hard);
  ck_assert_msg(soft_loss == hard_loss, "balance loss %.17g (soft) vs %.17g (hard)", soft_loss, hard_loss);
  for (size_t i = 0; i < P->d.total; i++)
    ck_assert_msg(P->dw[i] == dw_hard[i], "per_sequence %d: dw[%zu] %.9g (soft) vs %.9g (hard)", per_sequence,
                  i, P->dw[i], dw_hard[i]);
  free(zero_g);
  free(dw_hard);
}

START_TEST(router_gradient_vs_finite_differences) {
  static const int shapes[3][6] = {/* H, D, p, C, B, nb */
                                   {2, 3, 2, 5, 2, 8},
                                   {1, 2, 3, 4, 2, 9},
                                   {2, 1, 2, 3, 2, 6}};
  const int *s = shapes[_i];
  test_rng r = test_rng_make(0x5007E5ull + (uint64_t)_i);
  /* every problem drawn is checked in full; the draws go on (at most 4) until more than a quarter of the
   * parameters had a nonzero gradient in each check, so the check cannot pass vacuously (a tiny problem
   * can route every block alike and give a zero balance gradient) */
  int pairs_seen = 0, balance_seen = 0, sequence_seen = 0;
  for (int draw = 0; draw < 4 && !(pairs_seen && balance_seen && sequence_seen); draw++) {
    problem P = make(s[0], s[1], s[2], s[3], s[4], s[5], &r);
    pairs_seen |= check_fd(&P, 0.7f, 0.0, 0, 1, "pair gradients") > (int)(P.d.total / 4);
    balance_seen |= check_fd(&P, 1.3f, 0.37, 0, 0, "balance alone") > (int)(P.d.total / 4);
    sequence_seen |= check_fd(&P, 1.3f, 0.37, 1, 0, "balance alone, per sequence") > (int)(P.d.total / 4);
    check_hard_balance(&P, 1.3f, 0.37, 0);
    check_hard_balance(&P, 1.3f, 0.37, 1);
    check_fd(&P, 1.0f, 0.2, 0, 1, "pairs + balance");
    check_fd(&P, 1.0f, 0.2, 1, 1, "pairs + balance per sequence");
    release(&P);
  }
  ck_assert_msg(pairs_seen && balance_seen && sequence_seen,
                "gradients were zero for most parameters in every draw (pairs %d, "
                "balance %d, per sequence %d)",
                pairs_seen, balance_seen, sequence_seen);
}
END_TEST

START_TEST(bias_identity_and_straight_through_sign) {
  test_rng r = test_rng_make(77);
  for (int t = 0; t < 200; t++) {
    const int D = test_rng_int(&r, 1, 6);
    float beta[8], c[8];
    double acc = 0.0;
    beta[D] = 0.0f;
    for (int k = D - 1; k >= 0; k--)
      beta[k] = (float)(acc -= fabs(test_rng_float(&r)));
    for (int l = 0; l < D; l++)
      c[l] = beta[l] - beta[l + 1];
    const int lca = test_rng_int(&r, 0, D);
    double a[8], bias = 0.0, prod = 1.0, da[8];
    for (int j = 0; j < D; j++)
      a[j] = j < lca ? 1.0 : j == lca ? 0.0 : (double)test_rng_int(&r, 0, 1);
    for (int l = 0; l < D; l++)
      bias += c[l] * (1.0 - (prod *= a[l]));
    ck_assert_msg(fabs(bias - beta[lca]) <= 1e-5, "bias %g != beta[%d] = %g", bias, lca, (double)beta[lca]);
    dua_router_bias_grad(c, a, D, da);
    for (int j = 0; j < D; j++) {
      if (j > lca) /* below the first disagreement nothing moves the bias */
        ck_assert_msg(da[j] == 0.0, "da[%d] = %g with lca %d", j, da[j], lca);
      else /* agreeing more raises the bias (c < 0) */
        ck_assert_msg(da[j] > 0.0, "da[%d] = %g with lca %d", j, da[j], lca);
    }
  }
}
END_TEST

START_TEST(paths_balance_and_fractions) {
  test_rng r = test_rng_make(91);
  problem P = make(2, 3, 2, 4, 3, 8, &r);
  uint8_t *again = malloc((size_t)P.B * 2 * P.nb * 3);
  dua_router_forward(&P.d, P.w, P.x, P.B, P.nb, 1.0f, 0, 5, 0, 0, P.paths, P.soft, P.node);
  dua_router_forward(&P.d, P.w, P.x, P.B, P.nb, 1.0f, 0, 6, 9, 0, again, NULL, NULL);
  ck_assert_msg(memcmp(again, P.paths, (size_t)P.B * 2 * P.nb * 3) == 0, "argmax depends on the seed");
  dua_router_forward(&P.d, P.w, P.x, P.B, P.nb, 1.0f, 1, 5, 3, 0, P.paths, P.soft, P.node);
  dua_router_forward(&P.d, P.w, P.x, P.B, P.nb, 1.0f, 1, 5, 3, 0, again, NULL, NULL);
  ck_assert_msg(memcmp(again, P.paths, (size_t)P.B * 2 * P.nb * 3) == 0, "noise is not reproducible");
  for (size_t i = 0; i < (size_t)P.B * 2 * P.nb * 3; i++) {
    ck_assert_int_lt(P.paths[i], 2);
    int j = (int)(i % 3), prefix = 0;
    for (int k = 0; k < j; k++)
      prefix = prefix * 2 + P.paths[i - j + k];
    ck_assert_int_eq(P.node[i], (1 << j) - 1 + prefix); /* the node is (level, prefix) */
  }
  /* a router with zero weights: uniform probabilities; balance loss 1 per level whatever the digits */
  memset(P.w, 0, P.d.total * sizeof *P.w);
  dua_router_forward(&P.d, P.w, P.x, P.B, P.nb, 1.0f, 0, 5, 4, 0, P.paths, P.soft, P.node);
  float *zero_g = calloc((size_t)P.B * 2 * P.nb * P.nb, sizeof *zero_g);
  double bal = dua_router_backward(&P.d, P.x, P.B, P.nb, P.paths, P.soft, P.node, zero_g, P.beta, 1.0f, 0,
                                   0.0, 0, P.dw);
  ck_assert_msg(fabs(bal - 2 * 3) <= 1e-5, "uniform balance loss %g, expected 6 (2 heads x 3 levels)", bal);
  bal = dua_router_backward(&P.d, P.x, P.B, P.nb, P.paths, P.soft, P.node, zero_g, P.beta, 1.0f, 0, 0.0, 1,
                            P.dw);
  ck_assert_msg(fabs(bal - 2 * 3) <= 1e-5, "uniform balance loss per sequence %g, expected 6", bal);
  double frac[2 * 4];
  dua_router_lca_fractions(P.paths, P.B, 2, P.nb, 3, 8 * 16 - 5, 16, frac);
  for (int h = 0; h < 2; h++) {
    double s = 0.0;
    for (int k = 0; k <= 3; k++)
      s += frac[h * 4 + k];
    ck_assert_msg(fabs(s - 1.0) <= 1e-12 && frac[h * 4 + 3] > 0.0, "head %d fractions sum to %g", h, s);
  }
  free(zero_g);
  free(again);
  release(&P);
}
END_TEST

/* The two balance scopes on a batch that is even overall and uneven within each sequence: sequence 0's
 * blocks all take digit 0 at the root (x = +1), sequence 1's digit 1 (x = -1). Over the batch f = (1/2, 1/2)
 * and the mean probabilities are (1/2, 1/2) by symmetry, so the loss is p sum f P = 1; per sequence f = (1,
 * 0) and P_0 = softmax(3, -3)_0, so the loss is 2 P_0. */
START_TEST(balance_scope_sees_sequences) {
  const int B = 2, nb = 6;
  dua_router_dims d = dua_router_dims_of(1, 1, 1, 2, 1);
  float w[4] = {3.0f, 0.0f, -3.0f, 0.0f}, x[2 * 6], soft[2 * 6 * 2], dw[4], zero_g[2 * 6 * 6] = {0}, beta[2];
  uint8_t paths[2 * 6];
  int32_t node[2 * 6];
  beta[0] = -1.0f, beta[1] = 0.0f;
  for (int i = 0; i < B * nb; i++)
    x[i] = i < nb ? 1.0f : -1.0f;
  dua_router_forward(&d, w, x, B, nb, 1.0f, 0, 1, 0, 0, paths, soft, node);
  for (int i = 0; i < B * nb; i++)
    ck_assert_int_eq(paths[i], i < nb ? 0 : 1);
  const double p0 = 1.0 / (1.0 + exp(-6.0));
  memset(dw, 0, sizeof dw);
  double batch = dua_router_backward(&d, x, B, nb, paths, soft, node, zero_g, beta, 1.0f, 0, 0.0, 0, dw);
  double seq = dua_router_backward(&d, x, B, nb, paths, soft, node, zero_g, beta, 1.0f, 0, 0.0, 1, dw);
  ck_assert_msg(fabs(batch - 1.0) <= 1e-6, "batch-scope balance loss %.8f, expected 1", batch);
  ck_assert_msg(fabs(seq - 2.0 * p0) <= 1e-6, "per-sequence balance loss %.8f, expected %.8f", seq, 2.0 * p0);
  /* per sequence the loss pushes each sequence's blocks toward the other digit: the gradient lowers the
   * root's digit-0 weight for x = +1 (dw[0] > 0 descends to a smaller w[0]); over the batch the digit counts
   * are even, so every block's balance gradient is zero */
  memset(dw, 0, sizeof dw);
  dua_router_backward(&d, x, B, nb, paths, soft, node, zero_g, beta, 1.0f, 0, 1.0, 1, dw);
  ck_assert_msg(dw[0] > 1e-4, "per-sequence balance gradient dw[0] = %g, expected > 0", dw[0]);
  memset(dw, 0, sizeof dw);
  dua_router_backward(&d, x, B, nb, paths, soft, node, zero_g, beta, 1.0f, 0, 1.0, 0, dw);
  ck_assert_msg(fabs(dw[0]) <= 1e-6, "batch balance gradient dw[0] = %g, expected 0", dw[0]);
}
END_TEST

/* The training (hard-digit, straight-through) backward against the formula as router.h writes it, computed
 * here the slow way: per block pair the agreements a_i = [digits equal], dbias/da from the product form by
 * brute force, dLoss/dy at the hard digits, then through softmax((z + noise) / tau) to the weights. Random
 * paths with many shared prefixes (small arity), balance off; equal up to rounding. */
START_TEST(hard_backward_matches_the_formula) {
  test_rng r = test_rng_make(123 + (uint64_t)_i);
  const int D = _i == 3 ? 9 : 3 + _i, p = 2 + (_i == 1), H = 2, C = 5, B = 2,
            nb = 6 + 3 * _i; /* D 9: a deep tree */
  problem P = make(H, D, p, C, B, nb, &r);
  const float tau = 0.7f;
  dua_router_forward(&P.d, P.w, P.x, B, nb, tau, 1, 7, 2, 0, P.paths, P.soft, P.node);
  memset(P.dw, 0, P.d.total * sizeof *P.dw);
  dua_router_backward(&P.d, P.x, B, nb, P.paths, P.soft, P.node, P.g, P.beta, tau, 0, 0.0, 0, P.dw);
  double *ref = calloc(P.d.total, sizeof *ref), *dy = malloc((size_t)nb * D * p * sizeof *dy);
  ck_assert(ref && dy);
  const size_t row = (size_t)C + 1;
  for (int h = 0; h < H; h++) {
    const float *beta = P.beta + h * (D + 1);
    for (int b = 0; b < B; b++) {
      const size_t base = ((size_t)b * H + h) * nb;
      memset(dy, 0, (size_t)nb * D * p * sizeof *dy);
      for (int m = 0; m < nb; m++)
        for (int n = 0; n < nb; n++) {
          const double gv = P.g[(base + m) * nb + n];
          if (m == n)
            continue;
          const uint8_t *pm = P.paths + (base + m) * D, *pn = P.paths + (base + n) * D;
          for (int j = 0; j < D; j++) { /* dbias/da_j = -sum_{l >= j} c[l] prod_{i <= l, i != j} a_i */
            double da = 0.0;
            for (int l = j; l < D; l++) {
              double prod = 1.0;
              for (int i = 0; i <= l; i++)
                if (i != j)
                  prod *= pm[i] == pn[i];
              da -= ((double)beta[l] - beta[l + 1]) * prod;
            }
            dy[((size_t)m * D + j) * p + pn[j]] += gv * da; /* a_j = y_m,j . y_n,j at the hard digits */
            dy[((size_t)n * D + j) * p + pm[j]] += gv * da;
          }
        }
      for (int m = 0; m < nb; m++)
        for (int j = 0; j < D; j++) {
          const size_t at = (base + m) * D + j;
          const float *y = P.soft + at * p;
          const double *g = dy + ((size_t)m * D + j) * p;
          double dot = 0.0;
          for (int k = 0; k < p; k++)
            dot += y[k] * g[k];
          double *wn = ref + (size_t)h * P.d.per_head + (size_t)P.node[at] * p * row;
          for (int k = 0; k < p; k++) {
            const double dz = y[k] * (g[k] - dot) / tau;
            for (int c = 0; c < C; c++)
              wn[k * row + c] += dz * P.x[((size_t)b * nb + m) * C + c];
            wn[k * row + C] += dz;
          }
        }
    }
  }
  int nonzero = 0;
  for (size_t i = 0; i < P.d.total; i++) {
    ck_assert_msg(fabs(P.dw[i] - ref[i]) <= 1e-5 + 1e-4 * fabs(ref[i]), "dw[%zu] = %.9g, formula %.9g", i,
                  (double)P.dw[i], ref[i]);
    nonzero += ref[i] != 0.0;
  }
  const int want = P.d.total / 5 < 100 ? (int)(P.d.total / 5) : 100; /* the check is not empty */
  ck_assert_msg(nonzero >= want, "only %d of %zu gradients nonzero", nonzero, P.d.total);
  free(ref);
  free(dy);
  release(&P);
}
END_TEST

/* The router's input with the block's position (content.c): width + D * p features, the last D * p one-hot
 * per level of the block index's base-p digit (root first). Layer 0 head 0: every node's row k gets +8 on
 * the feature (its level, digit k), so argmax is the block index's digit at every level whatever the token
 * row (its weights are N(0, 0.02), the rows uniform in [-1, 1)); head 1 keeps its random weights. A block
 * routed alone (dua_content_route_block, generation) gets the digits of the whole-sequence pass, in both
 * input modes; without position the rows are the model's width. Cases: arity 2 with 13 blocks (D 4) and
 * arity 3 with 10 blocks (D 3), both with a short last block. */
START_TEST(position_input_routes_by_block) {
  const int p = 2 + _i, nb = _i ? 10 : 13, D = _i ? 3 : 4, width = 32, B = 3;
  test_rng r = test_rng_make(77 + (uint64_t)_i);
  float *x = malloc((size_t)B * nb * width * sizeof *x);
  uint8_t *paths = malloc((size_t)B * 2 * nb * D), digits[2 * 4];
  ck_assert(x && paths);
  for (size_t i = 0; i < (size_t)B * nb * width; i++)
    x[i] = test_rng_float(&r);
  for (int input = DUA_ROUTER_TOKEN; input <= DUA_ROUTER_TOKEN_POSITION; input++) {
    dua_trainer_config cfg;
    dua_trainer_config_init(&cfg);
    cfg.mode = DUA_ROUTING_CONTENT, cfg.layers = 2, cfg.heads = 2, cfg.width = width, cfg.arity = p;
    cfg.block = 16, cfg.seq_len = 16 * nb - 5, cfg.router_input = input, cfg.seed = 9;
    dua_content *c = NULL;
    ck_assert_int_eq(dua_content_create(&cfg, D, B, 1, &c), DUA_SUCCESS);
    const int C = width + (input == DUA_ROUTER_TOKEN_POSITION ? D * p : 0);
    ck_assert_int_eq(c->d.C, C);
    ck_assert_int_eq(c->nb, nb);
    if (input == DUA_ROUTER_TOKEN_POSITION)
      for (int j = 0; j < D; j++) {
        int first = 0; /* node index of level j's first node: (p^j - 1) / (p - 1) */
        for (int i = 0, pw = 1; i < j; i++, pw *= p)
          first += pw;
        for (int nd = first; nd < first + (first * (p - 1) + 1); nd++) /* p^j nodes */
          for (int k = 0; k < p; k++)
            c->w[((size_t)nd * p + k) * (C + 1) + width + j * p + k] += 8.0f; /* layer 0, head 0 */
      }
    ck_assert_int_eq(dua_content_route(c, 0, x, paths), DUA_SUCCESS);
    int differs = 0;
    for (int b = 0; b < B; b++)
      for (int h = 0; h < 2; h++)
        for (int m = 0; m < nb; m++) {
          const uint8_t *got = paths + (((size_t)b * 2 + h) * nb + m) * D;
          for (int j = D - 1, rest = m; j >= 0; j--, rest /= p) {
            if (input == DUA_ROUTER_TOKEN_POSITION && h == 0)
              ck_assert_msg(got[j] == rest % p,
                            "p %d, sequence %d, block %d, level %d: digit %d, expected %d", p, b, m, j,
                            got[j], rest % p);
            differs += h == 1 && got[j] != (rest % p);
          }
          dua_content_route_block(c, 0, m, x + ((size_t)b * nb + m) * width, digits);
          ck_assert_msg(memcmp(digits + h * D, got, (size_t)D) == 0,
                        "p %d, input %d, sequence %d, head %d, block %d: routed alone differently", p, input,
                        b, h, m);
        }
    ck_assert_msg(differs > 0, "head 1 routes by position too (the check is empty)");
    /* the argmax fractions of a noisy forward are the lca fractions of the noise-free one (layer 1) */
    double argmax[2 * 5], clean[2 * 5], noisy[2 * 5];
    for (size_t i = 0; i < c->d.total; i++) /* weights large enough that paths differ between blocks */
      c->w[i] *= 20.0f;
    c->noise = 1, c->tau = 0.5f, c->step = 3;
    ck_assert_int_eq(dua_content_route(c, 1, x, paths), DUA_SUCCESS);
    dua_content_lca_fractions(c, 1, noisy);
    dua_content_argmax_lca_fractions(c, 1, argmax);
    c->noise = 0;
    ck_assert_int_eq(dua_content_route(c, 1, x, paths), DUA_SUCCESS);
    dua_content_lca_fractions(c, 1, clean);
    ck_assert_msg(memcmp(argmax, clean, sizeof(double) * 2 * (D + 1)) == 0,
                  "p %d, input %d: argmax fractions", p, input);
    ck_assert_msg(memcmp(noisy, clean, sizeof(double) * 2 * (D + 1)) != 0,
                  "p %d, input %d: the noise changed no path (the check is empty)", p, input);
    dua_content_destroy(c);
  }
  free(x);
  free(paths);
}
END_TEST

int main(void) {
  Suite *s = suite_create("router");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 300);
  tcase_add_loop_test(tc, router_gradient_vs_finite_differences, 0, 3);
  tcase_add_test(tc, bias_identity_and_straight_through_sign);
  tcase_add_test(tc, paths_balance_and_fractions);
  tcase_add_test(tc, balance_scope_sees_sequences);
  tcase_add_loop_test(tc, hard_backward_matches_the_formula, 0, 4);
  tcase_add_loop_test(tc, position_input_routes_by_block, 0, 2);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
