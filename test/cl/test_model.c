/* test_model.c: the trainer's model and loop on the device.
 *   - every parameter tensor's gradient (and the level-bias gradient of native mode) against central finite
 *     differences of the mean cross-entropy, on a tiny 2-layer model with sparse and dense heads;
 *   - training lowers the loss; resuming from a checkpoint continues bit-identically; evaluation after a
 *     reload equals evaluation before it; a damaged checkpoint is refused;
 *   - the text task resumes bit-identically too, and its checkpoint accepts its corpus only if the file is
 *     the one it was trained on (moved: give the new path; changed: refused), in the trainer and inference;
 *   - the density budget's deterministic estimate is the noise-free gates' density, the extracted one the
 *     density of the depths extraction would fix (native mode).
 */
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/gates.h"
#include "train/model.h"
#include "train/task.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static dua_trainer_config tiny_config(void) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.layers = 2, c.width = 64, c.heads = 2, c.mlp_ratio = 2;
  c.seq_len = 32, c.block = 16, c.arity = 2, c.batch = 2;
  c.test_size = 64;
  return c;
}

static double mean_loss(dua_model *m, const int32_t *tok, const int32_t *tgt, const dua_layer_routing *r) {
  double sum = 0;
  int count = 0;
  ck_assert_int_eq(dua_model_forward(m, tok, tgt, r, &sum, &count, NULL), DUA_SUCCESS);
  ck_assert_int_gt(count, 0);
  return sum / count;
}

START_TEST(model_gradients_match_finite_differences) {
  dua_context *ctx = test_context();
  dua_trainer_config c = tiny_config();
  const int V = 7;
  dua_model *m = NULL;
  ck_assert_int_eq(dua_model_create(ctx, &c, V, &m), DUA_SUCCESS);
  ck_assert_int_eq(m->tree_depth, 1);
  test_rng r = test_rng_make(21);
  const int R = c.batch * c.seq_len, H = c.heads, D1 = m->tree_depth + 1;
  int32_t *tok = malloc((size_t)R * sizeof *tok), *tgt = malloc((size_t)R * sizeof *tgt);
  for (int i = 0; i < R; i++) {
    tok[i] = test_rng_int(&r, 0, V - 1);
    tgt[i] = test_rng_int(&r, 0, 3) == 0 ? DUA_IGNORE : test_rng_int(&r, 0, V - 1);
  }
  /* Larger weights than the initialization so every path carries a visible gradient. */
  float *p = malloc(m->num_params * 4);
  ck_assert_int_eq(dua_buffer_read(m->params, 0, m->num_params * 4, p), DUA_SUCCESS);
  for (size_t i = 0; i < m->num_params; i++)
    p[i] += 0.2f * test_rng_float(&r);
  ck_assert_int_eq(dua_buffer_write(m->params, 0, m->num_params * 4, p), DUA_SUCCESS);
  /* layer 0: head 0 block-diagonal, head 1 dense; layer 1 dense; level biases on every layer */
  float bias[2][4];
  dua_layer_routing routing[2];
  memset(routing, 0, sizeof routing);
  routing[0].depths[0] = 1;
  for (int l = 0; l < 2; l++) {
    for (int i = 0; i < H * D1; i++)
      bias[l][i] = -1.0f + test_rng_float(&r);
    routing[l].bias = bias[l];
  }
  mean_loss(m, tok, tgt, routing);
  float dbias[2 * 4];
  ck_assert_int_eq(dua_model_backward(m, dbias), DUA_SUCCESS);
  float *g = malloc(m->num_params * 4);
  ck_assert_int_eq(dua_buffer_read(m->grads, 0, m->num_params * 4, g), DUA_SUCCESS);

  /* The 3 largest-gradient entries of each tensor (per layer for layer tensors): the finite difference
   * of an fp32 loss resolves gradients well above ~1e-4, so these are where a wrong term shows. */
  const float eps = 3e-3f;
  int checked = 0;
  for (int t = 0; t < P_COUNT; t++) {
    int layers = (t >= P_LN1W && t <= P_FCPROJB) ? c.layers : 1;
    size_t per = m->param_size[t] / (size_t)layers;
    for (int l = 0; l < layers; l++) {
      size_t base = m->param_off[t] + (size_t)l * per, best[3] = {base, base, base};
      for (size_t i = base; i < base + per; i++) {
        if (fabsf(g[i]) > fabsf(g[best[2]])) {
          best[2] = i;
          for (int k = 2; k > 0 && fabsf(g[best[k]]) > fabsf(g[best[k - 1]]); k--) {
            size_t tmp = best[k];
            best[k] = best[k - 1], best[k - 1] = tmp;
          }
        }
      }
      for (int k = 0; k < 3; k++) {
        size_t i = best[k];
        float keep = p[i], v = keep + eps;
        ck_assert_int_eq(dua_buffer_write(m->params, i * 4, 4, &v), DUA_SUCCESS);
        double lp = mean_loss(m, tok, tgt, routing);
        v = keep - eps;
        ck_assert_int_eq(dua_buffer_write(m->params, i * 4, 4, &v), DUA_SUCCESS);
        double lm = mean_loss(m, tok, tgt, routing);
        ck_assert_int_eq(dua_buffer_write(m->params, i * 4, 4, &keep), DUA_SUCCESS);
        double fd = (lp - lm) / (2.0 * eps);
        ck_assert_msg(fabs(fd) > 1e-3, "tensor %d layer %d: largest gradient %g too small to check", t, l,
                      fd);
        ck_assert_msg(fabs(fd - g[i]) <= 2e-4 + 2e-2 * fabs(fd), "tensor %d layer %d [%zu]: grad %g, fd %g",
                      t, l, i - base, (double)g[i], fd);
        checked++;
      }
    }
  }
  /* level-bias gradient, every element (layer 0 head 0 at depth 1 has no lca-0 pairs: gradient 0) */
  for (int l = 0; l < 2; l++)
    for (int i = 0; i < H * D1; i++) {
      const float e = 1e-2f, keep = bias[l][i];
      bias[l][i] = keep + e;
      double lp = mean_loss(m, tok, tgt, routing);
      bias[l][i] = keep - e;
      double lm = mean_loss(m, tok, tgt, routing);
      bias[l][i] = keep;
      double fd = (lp - lm) / (2.0 * e);
      ck_assert_msg(fabs(fd - dbias[l * H * D1 + i]) <= 2e-4 + 2e-2 * fabs(fd), "dbias[%d][%d] = %g, fd %g",
                    l, i, (double)dbias[l * H * D1 + i], fd);
    }
  ck_assert_float_eq(dbias[0], 0.0f);
  ck_assert_int_eq(checked, 3 * (4 + 12 * c.layers));
  free(g);
  free(p);
  free(tok);
  free(tgt);
  dua_model_destroy(m);
  dua_context_destroy(ctx);
}
END_TEST

static void read_params(dua_trainer *t, const char *dir, const char *name, float **out, size_t *n) {
  char path[512], err[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  ck_assert_msg(dua_trainer_save(t, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  *out = malloc(*n);
  ck_assert_uint_eq(fread(*out, 1, *n, f), *n);
  fclose(f);
}

START_TEST(training_resumes_bit_identically) {
  dua_context *ctx = test_context();
  dua_trainer_config c = tiny_config();
  c.mode = DUA_ROUTING_NATIVE;
  c.steps = 8, c.warmup = 2, c.hard_frac = 0.5f, c.eval_every = 0;
  char dir[] = "/tmp/dua_test_model_XXXXXX", err[512];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  /* straight run: 8 steps (4 soft, 4 with fixed depths) */
  dua_trainer *a = NULL;
  ck_assert_msg(dua_trainer_create(ctx, &c, &a, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_train_stats s;
  double first = 0, last = 0;
  for (int i = 0; i < 8; i++) {
    ck_assert_int_eq(dua_trainer_step(a, &s), DUA_SUCCESS);
    ck_assert(isfinite(s.loss));
    if (i == 0)
      first = s.loss;
    last = s.loss;
  }
  ck_assert_int_eq(s.phase, 1);
  ck_assert_int_eq(dua_trainer_step(a, &s), DUA_ERROR_INVALID_ARGUMENT); /* all steps done */
  (void)first, (void)last;
  /* split run: 3 steps, save, reload, 5 more */
  dua_trainer *b = NULL, *b2 = NULL;
  ck_assert_msg(dua_trainer_create(ctx, &c, &b, err, sizeof err) == DUA_SUCCESS, "%s", err);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(dua_trainer_step(b, &s), DUA_SUCCESS);
  char path[512];
  snprintf(path, sizeof path, "%s/mid.ckpt", dir);
  ck_assert_msg(dua_trainer_save(b, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_trainer_destroy(b);
  ck_assert_msg(dua_trainer_load(ctx, path, &b2, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_trainer_step_count(b2), 3);
  for (int i = 0; i < 5; i++)
    ck_assert_int_eq(dua_trainer_step(b2, &s), DUA_SUCCESS);
  float *pa, *pb;
  size_t na, nb;
  read_params(a, dir, "a.ckpt", &pa, &na);
  read_params(b2, dir, "b.ckpt", &pb, &nb);
  ck_assert_uint_eq(na, nb);
  ck_assert_msg(memcmp(pa, pb, na) == 0, "resumed run differs from the straight run");
  free(pa);
  free(pb);
  /* evaluation after reload equals evaluation before */
  dua_eval_result e1, e2;
  ck_assert_int_eq(dua_trainer_evaluate(a, &e1), DUA_SUCCESS);
  snprintf(path, sizeof path, "%s/a.ckpt", dir);
  dua_trainer *a2 = NULL;
  ck_assert_msg(dua_trainer_load(ctx, path, &a2, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_trainer_evaluate(a2, &e2), DUA_SUCCESS);
  ck_assert_int_eq(e1.scored, e2.scored);
  ck_assert_msg(e1.loss == e2.loss && e1.accuracy == e2.accuracy && e1.density == e2.density,
                "eval before %g/%g/%g, after reload %g/%g/%g", e1.loss, e1.accuracy, e1.density, e2.loss,
                e2.accuracy, e2.density);
  /* routing of the reloaded model == routing of the original */
  dua_routing r1, r2;
  ck_assert_int_eq(dua_trainer_routing(a, &r1), DUA_SUCCESS);
  ck_assert_int_eq(dua_trainer_routing(a2, &r2), DUA_SUCCESS);
  ck_assert(memcmp(r1.head, r2.head, (size_t)r1.layers * r1.heads * sizeof *r1.head) == 0);
  dua_routing_free(&r1);
  dua_routing_free(&r2);
  /* a damaged checkpoint is refused, with a message */
  FILE *f = fopen(path, "r+b");
  ck_assert_ptr_nonnull(f);
  fseek(f, 200, SEEK_SET);
  int ch = fgetc(f);
  fseek(f, 200, SEEK_SET);
  fputc(ch ^ 0x10, f);
  fclose(f);
  dua_trainer *bad = NULL;
  err[0] = 0;
  ck_assert_int_eq(dua_trainer_load(ctx, path, &bad, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  ck_assert_ptr_null(bad);
  ck_assert_msg(strlen(err) > 10, "no message: \"%s\"", err);
  dua_trainer_destroy(a);
  dua_trainer_destroy(a2);
  dua_trainer_destroy(b2);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
  dua_context_destroy(ctx);
}
END_TEST

/* A UTF-8 corpus of n bytes (2-byte characters among ASCII words), seeded. */
static void write_corpus(const char *path, size_t n, uint64_t seed) {
  test_rng r = test_rng_make(seed);
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  for (size_t i = 0; i < n;) {
    int k = test_rng_int(&r, 0, 12);
    if (k == 0 && i + 2 <= n) {
      fputs("\xC3\xA9", f); /* é */
      i += 2;
    } else {
      fputc(k == 1 ? ' ' : k == 2 ? '\n' : 'a' + k, f);
      i++;
    }
  }
  ck_assert_int_eq(fclose(f), 0);
}

/* Task text through the trainer: resuming is bit-identical; the checkpoint records the corpus, so a moved
 * corpus is refused at its recorded path and accepted at its new one (by the trainer and by inference,
 * whose evaluation equals the trainer's), a changed corpus is refused, and a corpus for another task or
 * none for text is refused. */
START_TEST(text_task_resumes_and_checks_its_corpus) {
  dua_context *ctx = test_context();
  char dir[] = "/tmp/dua_test_text_XXXXXX", err[1024], corpus[256], moved[256], path[256];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
  snprintf(moved, sizeof moved, "%s/moved.txt", dir);
  write_corpus(corpus, 6000, 3);
  dua_trainer_config c = tiny_config();
  c.task = DUA_TASK_TEXT;
  c.seq_len = 64, c.test_size = 8, c.mode = DUA_ROUTING_NATIVE;
  c.steps = 6, c.warmup = 1, c.hard_frac = 0.5f, c.eval_every = 0;
  dua_trainer *a = NULL, *b = NULL, *b2 = NULL;
  ck_assert_msg(dua_trainer_create_with_corpus(ctx, &c, corpus, &a, err, sizeof err) == DUA_SUCCESS, "%s",
                err);
  ck_assert_int_eq(dua_trainer_vocab_size(a), 256);
  dua_text_corpus_info info;
  ck_assert_int_eq(dua_trainer_text_corpus(a, &info), DUA_SUCCESS);
  ck_assert_uint_eq(info.bytes, 6000);
  dua_train_stats s;
  for (int i = 0; i < 6; i++) {
    ck_assert_int_eq(dua_trainer_step(a, &s), DUA_SUCCESS);
    ck_assert(isfinite(s.loss));
  }
  ck_assert_msg(dua_trainer_create_with_corpus(ctx, &c, corpus, &b, err, sizeof err) == DUA_SUCCESS, "%s",
                err);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(dua_trainer_step(b, &s), DUA_SUCCESS);
  snprintf(path, sizeof path, "%s/mid.ckpt", dir);
  ck_assert_msg(dua_trainer_save(b, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_trainer_destroy(b);
  ck_assert_msg(dua_trainer_load(ctx, path, &b2, err, sizeof err) == DUA_SUCCESS, "%s", err);
  for (int i = 0; i < 3; i++)
    ck_assert_int_eq(dua_trainer_step(b2, &s), DUA_SUCCESS);
  float *pa, *pb;
  size_t na, nb;
  read_params(a, dir, "a.ckpt", &pa, &na);
  read_params(b2, dir, "b.ckpt", &pb, &nb);
  ck_assert_uint_eq(na, nb);
  ck_assert_msg(memcmp(pa, pb, na) == 0, "resumed text run differs from the straight run");
  free(pa);
  free(pb);
  dua_trainer_destroy(b2);
  /* inference on the checkpoint: the trainer's evaluation, bit for bit */
  dua_eval_result te, ie;
  ck_assert_int_eq(dua_trainer_evaluate(a, &te), DUA_SUCCESS);
  ck_assert_int_eq(te.scored, 8 * 64);
  snprintf(path, sizeof path, "%s/a.ckpt", dir);
  dua_inference_model *m = NULL;
  ck_assert_msg(dua_inference_model_load(ctx, path, NULL, &m, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_inference_evaluate(m, 0, &ie), DUA_SUCCESS);
  ck_assert_msg(te.loss == ie.loss && te.accuracy == ie.accuracy && te.scored == ie.scored,
                "trainer %.17g/%.17g, inference %.17g/%.17g", te.loss, te.accuracy, ie.loss, ie.accuracy);
  ck_assert_str_eq(dua_inference_token_name(m, 'e'), "e");
  dua_inference_model_destroy(m);
  /* moved: refused at the recorded path, accepted at the new one */
  ck_assert_int_eq(rename(corpus, moved), 0);
  dua_trainer *t = NULL;
  ck_assert_int_eq(dua_trainer_load(ctx, path, &t, err, sizeof err), DUA_ERROR_IO);
  ck_assert_msg(strstr(err, "corpus.txt") && strstr(err, "--text FILE"), "%s", err);
  m = NULL;
  ck_assert_int_eq(dua_inference_model_load(ctx, path, NULL, &m, err, sizeof err), DUA_ERROR_IO);
  ck_assert_ptr_null(m);
  ck_assert_msg(dua_trainer_load_with_corpus(ctx, path, moved, &t, err, sizeof err) == DUA_SUCCESS, "%s",
                err);
  dua_eval_result e2;
  ck_assert_int_eq(dua_trainer_evaluate(t, &e2), DUA_SUCCESS);
  ck_assert(e2.loss == te.loss && e2.accuracy == te.accuracy);
  snprintf(path, sizeof path, "%s/resaved.ckpt", dir); /* the new path is recorded */
  ck_assert_msg(dua_trainer_save(t, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_trainer_destroy(t);
  ck_assert_msg(dua_inference_model_load(ctx, path, NULL, &m, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_inference_text_corpus(m, &info), DUA_SUCCESS);
  ck_assert_msg(strstr(info.path, "moved.txt") != NULL, "%s", info.path);
  dua_inference_model_destroy(m);
  snprintf(path, sizeof path, "%s/a.ckpt", dir);
  ck_assert_msg(dua_inference_model_load_with_corpus(ctx, path, NULL, moved, &m, err, sizeof err) ==
                    DUA_SUCCESS,
                "%s", err);
  dua_inference_model_destroy(m);
  /* changed (same size, another seed): refused by both */
  write_corpus(moved, 6000, 4);
  t = NULL;
  ck_assert_int_eq(dua_trainer_load_with_corpus(ctx, path, moved, &t, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_null(t);
  ck_assert_msg(strstr(err, "is not the file the checkpoint was trained on"), "%s", err);
  m = NULL;
  ck_assert_int_eq(dua_inference_model_load_with_corpus(ctx, path, NULL, moved, &m, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_null(m);
  /* a checkpoint whose corpus record is malformed or missing behind a valid checksum: corrupt */
  write_corpus(moved, 6000, 3);
  {
    dua_trainer_config cc;
    dua_ckpt_section *secs = NULL;
    int count = 0;
    ck_assert_msg(dua_checkpoint_load(path, &cc, &secs, &count, err, sizeof err) == DUA_SUCCESS, "%s", err);
    dua_ckpt_section *rec = NULL;
    for (int i = 0; i < count; i++)
      if (!strcmp(secs[i].name, "text_corpus"))
        rec = &secs[i];
    ck_assert_ptr_nonnull(rec);
    char bad[256];
    snprintf(bad, sizeof bad, "%s/bad_record.ckpt", dir);
    ((unsigned char *)rec->data)[0] = 2; /* record version 2 */
    ck_assert_msg(dua_checkpoint_save(bad, &cc, secs, count, err, sizeof err) == DUA_SUCCESS, "%s", err);
    ck_assert_int_eq(dua_trainer_load_with_corpus(ctx, bad, moved, &t, err, sizeof err),
                     DUA_ERROR_CORRUPT_FILE);
    ck_assert_msg(strstr(err, "text_corpus") && strstr(err, "version"), "%s", err);
    ck_assert_int_eq(dua_inference_model_load(ctx, bad, NULL, &m, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
    ((unsigned char *)rec->data)[0] = 1;
    ck_assert_msg(dua_checkpoint_save(bad, &cc, secs, count, err, sizeof err) == DUA_SUCCESS, "%s", err);
    ck_assert_msg(dua_trainer_load_with_corpus(ctx, bad, moved, &t, err, sizeof err) == DUA_SUCCESS, "%s",
                  err);
    dua_trainer_destroy(t);
    t = NULL;
    dua_ckpt_section last = secs[count - 1]; /* drop the record: swap it to the end, save the others */
    secs[count - 1] = *rec;
    *rec = last;
    ck_assert_msg(dua_checkpoint_save(bad, &cc, secs, count - 1, err, sizeof err) == DUA_SUCCESS, "%s", err);
    ck_assert_int_eq(dua_trainer_load_with_corpus(ctx, bad, moved, &t, err, sizeof err),
                     DUA_ERROR_CORRUPT_FILE);
    ck_assert_msg(strstr(err, "missing"), "%s", err);
    dua_checkpoint_free(secs, count);
  }
  /* a corpus for another task, none for text */
  dua_trainer_config d = tiny_config();
  d.steps = 1, d.warmup = 0;
  ck_assert_int_eq(dua_trainer_create_with_corpus(ctx, &d, moved, &t, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "--text"), "%s", err);
  ck_assert_int_eq(dua_trainer_create(ctx, &c, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "needs a corpus"), "%s", err);
  ck_assert_msg(dua_trainer_create(ctx, &d, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_trainer_text_corpus(t, &info), DUA_ERROR_INVALID_ARGUMENT);
  snprintf(path, sizeof path, "%s/dyck.ckpt", dir);
  ck_assert_msg(dua_trainer_save(t, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_trainer_destroy(t);
  ck_assert_int_eq(dua_trainer_load_with_corpus(ctx, path, moved, &t, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "reads none"), "%s", err);
  ck_assert_int_eq(dua_inference_model_load_with_corpus(ctx, path, NULL, moved, &m, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  dua_trainer_destroy(a);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(training_lowers_the_loss) {
  dua_context *ctx = test_context();
  dua_trainer_config c = tiny_config();
  c.batch = 16, c.steps = 60, c.warmup = 5, c.lr = 3e-3f;
  char err[512];
  dua_trainer *t = NULL;
  ck_assert_msg(dua_trainer_create(ctx, &c, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_eval_result before, after;
  ck_assert_int_eq(dua_trainer_evaluate(t, &before), DUA_SUCCESS);
  dua_train_stats s;
  for (int i = 0; i < c.steps; i++)
    ck_assert_int_eq(dua_trainer_step(t, &s), DUA_SUCCESS);
  ck_assert_int_eq(dua_trainer_evaluate(t, &after), DUA_SUCCESS);
  ck_assert_msg(after.loss < 0.8 * before.loss, "test loss %g -> %g", before.loss, after.loss);
  ck_assert(after.density == 1.0);
  dua_trainer_destroy(t);
  dua_context_destroy(ctx);
}
END_TEST

/* The content router's input: the first token's row of every block, for sequence lengths with and without a
 * tail block (one strided read, or one per sequence), at an element offset into the activations. */
START_TEST(first_rows_of_blocks) {
  dua_context *ctx = test_context();
  const int B = 3, C = 8, block = 16, off = 5;
  const int lens[] = {64, 50};
  for (int li = 0; li < 2; li++) {
    const int T = lens[li], nb = (T + block - 1) / block;
    const size_t n = (size_t)off + (size_t)B * T * C;
    float *acts = malloc(n * sizeof *acts), *x = malloc((size_t)(B * nb * C + 1) * sizeof *x);
    ck_assert(acts && x);
    for (size_t i = 0; i < n; i++)
      acts[i] = (float)i;
    dua_buffer *buf = NULL;
    ck_assert_int_eq(dua_buffer_create(ctx, n * sizeof *acts, &buf), DUA_SUCCESS);
    ck_assert_int_eq(dua_buffer_write(buf, 0, n * sizeof *acts, acts), DUA_SUCCESS);
    x[B * nb * C] = -1.0f;
    ck_assert_int_eq(dua_read_first_rows(buf, (size_t)off, B, T, C, block, x), DUA_SUCCESS);
    for (int b = 0; b < B; b++)
      for (int nn = 0; nn < nb; nn++)
        for (int c = 0; c < C; c++)
          ck_assert_msg(x[(b * nb + nn) * C + c] == acts[off + ((size_t)b * T + (size_t)nn * block) * C + c],
                        "T %d: sequence %d block %d column %d", T, b, nn, c);
    ck_assert(x[B * nb * C] == -1.0f);
    dua_buffer_destroy(buf);
    free(acts);
    free(x);
  }
  dua_context_destroy(ctx);
}
END_TEST

/* Visited key blocks of layer l's causal layout with these per-head depths over a dense causal layout's,
 * by the library's layout code (dua_layout_density). */
static double visited_blocks(const dua_trainer_config *c, const int32_t *depths, int l) {
  const dua_layout_desc d = {.seq_len = c->seq_len,
                             .block = c->block,
                             .batch = 1,
                             .heads = c->heads,
                             .arity = c->arity,
                             .depths = depths,
                             .shift = dua_layer_shift(c, l),
                             .window = c->window,
                             .sink = c->sink,
                             .causal = 1};
  return test_visited_block_fraction(&d);
}

/* The density budget's estimate (config density_estimate), native mode, first step (the gates still at
 * gate_init = 0.3, tau at tau_start): deterministic reports sum_k frac[k] exp(beta[k]) of the noise-free
 * gates sigmoid(z / tau), averaged over layers (each with its tree shift's fractions); extracted the density
 * of depth D (every z > 0), frac[D]; sampled the noisy gates' value, which differs from both. */
START_TEST(density_estimate_measures_noise_free_gates) {
  dua_context *ctx = test_context();
  double got[3] = {0.0, 0.0, 0.0}, want[3] = {0.0, 0.0, 0.0};
  for (int e = DUA_DENSITY_SAMPLED; e <= DUA_DENSITY_EXTRACTED; e++) {
    dua_trainer_config c = tiny_config();
    c.seq_len = 64, c.mode = DUA_ROUTING_NATIVE, c.shift_alternate = 1, c.gate_init = 0.3f, c.window = 20;
    c.density_weight = 1.0f, c.density_target = 0.1f, c.density_estimate = e, c.steps = 4, c.warmup = 1;
    char err[512];
    dua_trainer *t = NULL;
    ck_assert_msg(dua_trainer_create(ctx, &c, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
    dua_train_stats s;
    ck_assert_int_eq(dua_trainer_step(t, &s), DUA_SUCCESS);
    got[e] = s.expected_density;
    dua_trainer_destroy(t);
    const int D = 2, H = c.heads; /* 4 blocks, arity 2 */
    float z[2 * 2], x[2 * 2], beta[2 * 3];
    double frac[3];
    for (int i = 0; i < H * D; i++)
      z[i] = c.gate_init;
    dua_gates_sample(z, H, D, c.tau_start, 0, 0, 0, 0, x, beta);
    for (int l = 0; l < c.layers && e == DUA_DENSITY_SAMPLED; l++) { /* once */
      dua_gates_lca_fractions(c.seq_len, c.block, c.arity, D, dua_layer_shift(&c, l), frac);
      want[DUA_DENSITY_DETERMINISTIC] += dua_gates_density(beta, frac, H, D, 0.0f, 0.0f, NULL) / c.layers;
      want[DUA_DENSITY_EXTRACTED] += visited_blocks(&c, (int32_t[]){D, D}, l) / c.layers;
    }
  }
  for (int e = DUA_DENSITY_DETERMINISTIC; e <= DUA_DENSITY_EXTRACTED; e++) {
    ck_assert_msg(fabs(got[e] - want[e]) <= 1e-6 * want[e], "estimate %d: %.9g, expected %.9g", e, got[e],
                  want[e]);
    ck_assert_msg(fabs(got[DUA_DENSITY_SAMPLED] - want[e]) > 1e-4, "the sampled estimate %.9g equals %.9g",
                  got[DUA_DENSITY_SAMPLED], want[e]);
  }
  dua_context_destroy(ctx);
}
END_TEST

START_TEST(bad_configs_are_refused) {
  dua_context *ctx = test_context();
  dua_trainer_config c = tiny_config();
  c.width = 48; /* head dim 24 */
  char err[512] = "";
  dua_trainer *t = NULL;
  ck_assert_int_eq(dua_trainer_create(ctx, &c, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_null(t);
  ck_assert_msg(strstr(err, "width") || strstr(err, "heads"), "message \"%s\"", err);
  ck_assert_int_eq(dua_trainer_load(ctx, "/nonexistent/dir/model.ckpt", &t, err, sizeof err), DUA_ERROR_IO);
  dua_context_destroy(ctx);
}
END_TEST

int main(void) {
  Suite *s = suite_create("model");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, model_gradients_match_finite_differences);
  tcase_add_test(tc, training_resumes_bit_identically);
  tcase_add_test(tc, text_task_resumes_and_checks_its_corpus);
  tcase_add_test(tc, training_lowers_the_loss);
  tcase_add_test(tc, bad_configs_are_refused);
  tcase_add_test(tc, first_rows_of_blocks);
  tcase_add_test(tc, density_estimate_measures_noise_free_gates);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
