/* test_paper.c: paper routing mode (host/train/paper.h) on the device.
 *   - the z-normalized token-tree table: mean 0 and variance 1 over the causal pairs, by brute force;
 *   - gradients of the controller (E -> hidden -> H MLP and the linear map), the amplitudes alpha and the
 *     model parameters the controller's input gradient reaches, against central finite differences of the
 *     mean cross-entropy with the training gate (fixed noise and temperature);
 *   - training resumes bit-identically from a checkpoint; the soft and hard evaluations, the extraction to
 *     {0, D}, the routing after a reload and dua_inference_evaluate (bit for bit the hard result); damaged
 * and truncated checkpoints are refused. */
#include "test_util.h"
#include "train/model.h"
#include "train/paper.h"
#include "train/task.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static dua_trainer_config tiny_config(int hidden) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.mode = DUA_ROUTING_PAPER;
  c.layers = 2, c.width = 64, c.heads = 2, c.mlp_ratio = 2;
  c.seq_len = 32, c.block = 16, c.arity = 2, c.batch = 2;
  c.test_size = 64;
  c.ctrl_hidden = hidden;
  return c;
}

START_TEST(token_table_is_z_normalized_over_causal_pairs) {
  for (int n = 2; n <= 70; n += 3) {
    float tab[40];
    int levels = dua_paper_token_table(n, tab), D = dua_token_tree_depth(n);
    ck_assert_int_eq(levels, D + 1);
    double s = 0, ss = 0, cnt = 0;
    for (int i = 0; i < n; i++)
      for (int j = 0; j <= i; j++) {
        double v = tab[dua_token_tree_level(i, j, D)];
        s += v, ss += v * v, cnt += 1;
      }
    ck_assert_msg(fabs(s / cnt) < 1e-5 && fabs(ss / cnt - 1.0) < 1e-5, "n=%d: mean %g, variance %g", n,
                  s / cnt, ss / cnt);
    for (int v = 1; v < levels; v++) /* increasing with the shared depth */
      ck_assert(tab[v] > tab[v - 1]);
  }
}
END_TEST

static double mean_loss(dua_model *m, const int32_t *tok, const int32_t *tgt, const dua_layer_routing *r) {
  double sum = 0;
  int count = 0;
  ck_assert_int_eq(dua_model_forward(m, tok, tgt, r, &sum, &count, NULL), DUA_SUCCESS);
  ck_assert_int_gt(count, 0);
  return sum / count;
}

/* Central difference of the loss in one float: *x in host memory (alpha) or element `at` of a buffer. */
static double fd_of(dua_model *m, const int32_t *tok, const int32_t *tgt, const dua_layer_routing *r,
                    dua_buffer *buf, size_t at, float *x, float eps) {
  float keep, v;
  if (buf)
    ck_assert_int_eq(dua_buffer_read(buf, at * 4, 4, &keep), DUA_SUCCESS);
  else
    keep = *x;
  double f[2];
  for (int side = 0; side < 2; side++) {
    v = keep + (side ? -eps : eps);
    if (buf)
      ck_assert_int_eq(dua_buffer_write(buf, at * 4, 4, &v), DUA_SUCCESS);
    else
      *x = v;
    f[side] = mean_loss(m, tok, tgt, r);
  }
  if (buf)
    ck_assert_int_eq(dua_buffer_write(buf, at * 4, 4, &keep), DUA_SUCCESS);
  else
    *x = keep;
  return (f[0] - f[1]) / (2.0 * eps);
}

static void check_gradients(int hidden) {
  dua_context *ctx = test_context();
  dua_trainer_config c = tiny_config(hidden);
  const int V = 7;
  dua_model *m = NULL;
  ck_assert_int_eq(dua_model_create(ctx, &c, V, &m), DUA_SUCCESS);
  dua_paper *p = NULL;
  ck_assert_int_eq(dua_paper_create(ctx, m->ops, &c, &p), DUA_SUCCESS);
  m->paper = p;
  test_rng r = test_rng_make(31 + (uint64_t)hidden);
  const int R = c.batch * c.seq_len;
  int32_t *tok = malloc((size_t)R * sizeof *tok), *tgt = malloc((size_t)R * sizeof *tgt);
  for (int i = 0; i < R; i++) {
    tok[i] = test_rng_int(&r, 0, V - 1);
    tgt[i] = test_rng_int(&r, 0, 3) == 0 ? DUA_IGNORE : test_rng_int(&r, 0, V - 1);
  }
  /* larger weights than the initialization (gates spread over (0, 1), visible bias) */
  float *w = malloc(m->num_params * 4), *cw = malloc(p->n_params * 4);
  ck_assert_int_eq(dua_buffer_read(m->params, 0, m->num_params * 4, w), DUA_SUCCESS);
  for (size_t i = 0; i < m->num_params; i++)
    w[i] += 0.2f * test_rng_float(&r);
  ck_assert_int_eq(dua_buffer_write(m->params, 0, m->num_params * 4, w), DUA_SUCCESS);
  for (size_t i = 0; i < p->n_params; i++)
    cw[i] = 0.5f * test_rng_float(&r);
  ck_assert_int_eq(dua_buffer_write(p->params, 0, p->n_params * 4, cw), DUA_SUCCESS);
  for (int i = 0; i < c.layers * c.heads; i++)
    p->alpha[i] = 1.5f + test_rng_float(&r);
  p->gate = DUA_PAPER_TRAIN, p->tau = 0.7f, p->seed = 5, p->step = 3;
  dua_layer_routing routing[2];
  memset(routing, 0, sizeof routing); /* dense, no level bias: as paper mode trains */
  mean_loss(m, tok, tgt, routing);
  ck_assert_int_eq(dua_paper_zero_grads(p), DUA_SUCCESS);
  ck_assert_int_eq(dua_model_backward(m, NULL), DUA_SUCCESS);
  float *g = malloc(m->num_params * 4), *cg = malloc(p->n_params * 4), dalpha[4];
  ck_assert_int_eq(dua_buffer_read(m->grads, 0, m->num_params * 4, g), DUA_SUCCESS);
  ck_assert_int_eq(dua_buffer_read(p->grads, 0, p->n_params * 4, cg), DUA_SUCCESS);
  memcpy(dalpha, p->dalpha, sizeof dalpha);
  const float eps = 3e-3f;
  int checked = 0;
  /* every alpha (eps 3e-3: the loss is far from linear in alpha where the bias saturates the softmax); a
   * small gradient is held to the absolute tolerance, and the largest must be large enough to show a wrong
   * term */
  double largest = 0;
  for (int i = 0; i < c.layers * c.heads; i++) {
    double fd = fd_of(m, tok, tgt, routing, NULL, 0, &p->alpha[i], 3e-3f);
    ck_assert_msg(fabs(fd - dalpha[i]) <= 2e-4 + 2e-2 * fabs(fd), "dalpha[%d] = %g, fd %g", i,
                  (double)dalpha[i], fd);
    largest = fabs(fd) > largest ? fabs(fd) : largest;
    checked++;
  }
  ck_assert_msg(largest > 1e-3, "every alpha gradient is below 1e-3 (%g): nothing to check", largest);
  /* the 2 largest-gradient entries of each controller tensor of each layer */
  const size_t parts[4][2] = {{p->off_w1, p->off_b1 - p->off_w1},
                              {p->off_b1, p->off_w2 - p->off_b1},
                              {p->off_w2, p->off_b2 - p->off_w2},
                              {p->off_b2, p->per_layer - p->off_b2}};
  for (int l = 0; l < c.layers; l++)
    for (int k = 0; k < 4; k++) {
      if (parts[k][1] == 0)
        continue;
      size_t base = (size_t)l * p->per_layer + parts[k][0], best[2] = {base, base};
      for (size_t i = base; i < base + parts[k][1]; i++)
        if (fabsf(cg[i]) > fabsf(cg[best[1]])) {
          best[1] = i;
          if (fabsf(cg[best[1]]) > fabsf(cg[best[0]])) {
            size_t t = best[0];
            best[0] = best[1], best[1] = t;
          }
        }
      for (int b = 0; b < 2; b++) {
        double fd = fd_of(m, tok, tgt, routing, p->params, best[b], NULL, eps);
        ck_assert_msg(b > 0 || fabs(fd) > 3e-5, "controller layer %d part %d: gradient %g too small to check",
                      l, k, fd);
        ck_assert_msg(fabs(fd - cg[best[b]]) <= 2e-4 + 2e-2 * fabs(fd),
                      "controller layer %d part %d [%zu]: grad %g, fd %g", l, k, best[b] - base,
                      (double)cg[best[b]], fd);
        checked++;
      }
    }
  /* model tensors the controller's input gradient flows into: LN1 weights and biases, the embeddings */
  const int tensors[4] = {P_LN1W, P_LN1B, P_WTE, P_WPE};
  for (int t = 0; t < 4; t++) {
    size_t base = m->param_off[tensors[t]], best = base;
    for (size_t i = base; i < base + m->param_size[tensors[t]]; i++)
      if (fabsf(g[i]) > fabsf(g[best]))
        best = i;
    double fd = fd_of(m, tok, tgt, routing, m->params, best, NULL, eps);
    ck_assert_msg(fabs(fd - g[best]) <= 2e-4 + 2e-2 * fabs(fd), "model tensor %d [%zu]: grad %g, fd %g",
                  tensors[t], best - base, (double)g[best], fd);
    checked++;
  }
  ck_assert_int_eq(checked, 4 + (hidden ? 16 : 8) + 4);
  free(g), free(cg), free(w), free(cw), free(tok), free(tgt);
  dua_paper_destroy(p);
  dua_model_destroy(m);
  dua_context_destroy(ctx);
}

START_TEST(gradients_match_finite_differences) {
  check_gradients(_i == 0 ? 8 : 0);
}
END_TEST

static void file_bytes(const char *path, unsigned char **out, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  *out = malloc(*n);
  ck_assert_uint_eq(fread(*out, 1, *n, f), *n);
  fclose(f);
}

START_TEST(resume_evaluation_and_extraction) {
  dua_context *ctx = test_context();
  dua_trainer_config c = tiny_config(8);
  c.steps = 6, c.warmup = 1, c.eval_every = 0;
  char dir[] = "/tmp/dua_test_paper_XXXXXX", err[512], path[600], pa_path[600], pb_path[600];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  dua_trainer *a = NULL, *b = NULL, *b2 = NULL;
  dua_train_stats s;
  ck_assert_msg(dua_trainer_create(ctx, &c, &a, err, sizeof err) == DUA_SUCCESS, "%s", err);
  for (int i = 0; i < 6; i++) {
    ck_assert_int_eq(dua_trainer_step(a, &s), DUA_SUCCESS);
    ck_assert(isfinite(s.loss));
    ck_assert_float_eq(s.density, 1.0f); /* dense while training */
  }
  ck_assert_msg(dua_trainer_create(ctx, &c, &b, err, sizeof err) == DUA_SUCCESS, "%s", err);
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(dua_trainer_step(b, &s), DUA_SUCCESS);
  snprintf(path, sizeof path, "%s/mid.ckpt", dir);
  ck_assert_msg(dua_trainer_save(b, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_trainer_destroy(b);
  ck_assert_msg(dua_trainer_load(ctx, path, &b2, err, sizeof err) == DUA_SUCCESS, "%s", err);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq(dua_trainer_step(b2, &s), DUA_SUCCESS);
  snprintf(pa_path, sizeof pa_path, "%s/a.ckpt", dir);
  snprintf(pb_path, sizeof pb_path, "%s/b.ckpt", dir);
  ck_assert_msg(dua_trainer_save(a, pa_path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_msg(dua_trainer_save(b2, pb_path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  unsigned char *fa, *fb;
  size_t na, nb;
  file_bytes(pa_path, &fa, &na);
  file_bytes(pb_path, &fb, &nb);
  ck_assert_uint_eq(na, nb);
  ck_assert_msg(memcmp(fa, fb, na) == 0, "resumed paper run differs from the straight run");
  free(fa), free(fb);
  /* both evaluations; the extraction; the hard one is what dua_trainer_evaluate and inference run */
  dua_paper_eval_result pe;
  ck_assert_int_eq(dua_trainer_evaluate_paper(a, &pe), DUA_SUCCESS);
  ck_assert_int_eq(pe.heads_total, 4);
  ck_assert_int_eq(pe.soft.scored, pe.hard.scored);
  ck_assert_int_gt(pe.soft.scored, 0);
  ck_assert(pe.accuracy_change == pe.hard.accuracy - pe.soft.accuracy);
  ck_assert(pe.soft.density == 1.0);
  dua_routing ra;
  ck_assert_int_eq(dua_trainer_routing(a, &ra), DUA_SUCCESS);
  int sparse = 0;
  for (int i = 0; i < 4; i++) {
    ck_assert(ra.head[i].depth == 0 || ra.head[i].depth == dua_trainer_tree_depth(a));
    sparse += ra.head[i].depth > 0;
  }
  ck_assert_int_eq(sparse, pe.heads_sparse);
  dua_eval_result e;
  ck_assert_int_eq(dua_trainer_evaluate(a, &e), DUA_SUCCESS);
  ck_assert(e.loss == pe.hard.loss && e.accuracy == pe.hard.accuracy && e.density == pe.hard.density);
  ck_assert_msg(dua_trainer_save(a, pa_path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  /* a reloaded trainer: same routing and the same evaluations */
  dua_trainer *a2 = NULL;
  ck_assert_msg(dua_trainer_load(ctx, pa_path, &a2, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_routing ra2;
  ck_assert_int_eq(dua_trainer_routing(a2, &ra2), DUA_SUCCESS);
  ck_assert(memcmp(ra.head, ra2.head, 4 * sizeof *ra.head) == 0);
  dua_paper_eval_result pe2;
  ck_assert_int_eq(dua_trainer_evaluate_paper(a2, &pe2), DUA_SUCCESS);
  ck_assert(pe2.soft.loss == pe.soft.loss && pe2.hard.loss == pe.hard.loss);
  /* inference runs the extracted routing: bit for bit the hard evaluation */
  dua_inference_model *im = NULL;
  ck_assert_msg(dua_inference_model_load(ctx, pa_path, NULL, &im, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_routing ri;
  ck_assert_int_eq(dua_inference_routing(im, &ri), DUA_SUCCESS);
  ck_assert(memcmp(ra.head, ri.head, 4 * sizeof *ra.head) == 0);
  dua_eval_result ei;
  ck_assert_int_eq(dua_inference_evaluate(im, 0, &ei), DUA_SUCCESS);
  ck_assert_msg(ei.loss == pe.hard.loss && ei.accuracy == pe.hard.accuracy,
                "inference %g/%g, trainer hard %g/%g", ei.loss, ei.accuracy, pe.hard.loss, pe.hard.accuracy);
  dua_routing_free(&ri);
  dua_inference_model_destroy(im);
  dua_routing_free(&ra);
  dua_routing_free(&ra2);
  /* not paper mode: refused */
  dua_trainer_config cn = tiny_config(8);
  cn.mode = DUA_ROUTING_NATIVE;
  dua_trainer *n = NULL;
  ck_assert_msg(dua_trainer_create(ctx, &cn, &n, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_trainer_evaluate_paper(n, &pe), DUA_ERROR_INVALID_ARGUMENT);
  dua_trainer_destroy(n);
  /* truncated and damaged checkpoints are refused */
  unsigned char *bytes;
  size_t nbytes;
  file_bytes(pa_path, &bytes, &nbytes);
  FILE *f = fopen(path, "wb");
  ck_assert_uint_eq(fwrite(bytes, 1, nbytes - 100, f), nbytes - 100);
  fclose(f);
  dua_trainer *bad = NULL;
  ck_assert_int_eq(dua_trainer_load(ctx, path, &bad, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  ck_assert_ptr_null(bad);
  bytes[nbytes - 200] ^= 0x40; /* inside the last section (paper_alpha) */
  f = fopen(path, "wb");
  ck_assert_uint_eq(fwrite(bytes, 1, nbytes, f), nbytes);
  fclose(f);
  ck_assert_int_eq(dua_trainer_load(ctx, path, &bad, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  free(bytes);
  dua_trainer_destroy(a);
  dua_trainer_destroy(a2);
  dua_trainer_destroy(b2);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
  dua_context_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("paper");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 1200);
  tcase_add_test(tc, token_table_is_z_normalized_over_causal_pairs);
  tcase_add_loop_test(tc, gradients_match_finite_differences, 0, 2);
  tcase_add_test(tc, resume_evaluation_and_extraction);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
