/* test_content.c: content routing mode end to end on a tiny dyck-lm model (S = 128, block 16, arity 2:
 * tree depth 3) on the default OpenCL device:
 *   - a run resumed from a checkpoint in the soft phase ends with a checkpoint byte-identical to the
 *     straight run's (router weights and AdamW moments restored; the run crosses into fixed depths);
 *   - the router learns: its weights move, and the balance loss and expected density are reported;
 *   - evaluation by dua_inference_* after a reload equals dua_trainer_evaluate bit for bit, in the soft
 *     phase and with fixed depths, and the routing (tree "content") round-trips through a routing file;
 *   - causality of the routed model: tokens after a cut change no earlier logit (bit for bit);
 *   - generation (prefill + paged-KV decode, blocks routed as their first tokens arrive) gives at every
 *     step the full forward's logits at that position, for prompts ending inside a block, at its end and
 *     at a block's first token, also with a short last block (S = 120), and differs from dense;
 *   - a checkpoint whose router section is missing or holds a NaN, and a positional routing file for a
 *     content checkpoint, are refused with messages. */
#include "dua_train.h"
#include "test_util.h"
#include "train/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_LEN 128

static dua_trainer_config tiny_config(void) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.task = DUA_TASK_DYCK_LM;
  c.layers = 2, c.width = 64, c.heads = 2, c.mlp_ratio = 2;
  c.seq_len = S_LEN, c.block = 16, c.arity = 2, c.batch = 2, c.dyck_max_depth = 8;
  c.test_size = 6;
  c.mode = DUA_ROUTING_CONTENT;
  c.gate_init = 1.0f, c.density_weight = 1.0f, c.density_target = 0.3f, c.balance_weight = 0.1f;
  c.steps = 8, c.warmup = 2, c.hard_frac = 0.5f, c.eval_every = 0, c.lr = 3e-3f;
  return c;
}

static unsigned char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc(*n);
  ck_assert(b && fread(b, 1, *n, f) == *n);
  fclose(f);
  return b;
}

static void assert_same_eval(const dua_eval_result *a, const dua_eval_result *b, const char *what) {
  ck_assert_msg(a->scored == b->scored && a->loss == b->loss && a->accuracy == b->accuracy &&
                    a->density == b->density,
                "%s: loss %.17g / %.17g, accuracy %.17g / %.17g, density %.17g / %.17g", what, a->loss,
                b->loss, a->accuracy, b->accuracy, a->density, b->density);
}

/* Generation: the prefill routes the blocks the prompt reaches, each decode step the block its token
 * starts; every step's logits equal the full forward's (its own argmax routing of the whole sequence) at that
 * position; the routing matters (the dense generation's logits differ) and skips K/V. tok [S] holds the
 * prompts' tokens. */
static void check_generation(dua_context *ctx, dua_inference_model *m, const int32_t *tok, int S,
                             const int *prompts, int np, int n_new) {
  const int V = dua_inference_vocab_size(m);
  int32_t *out = malloc(sizeof(int32_t) * n_new), *seq = malloc(sizeof(int32_t) * S);
  float *glg = malloc(sizeof(float) * n_new * V), *dlg = malloc(sizeof(float) * n_new * V),
        *ref = malloc(sizeof(float) * S * V);
  ck_assert(out && seq && glg && dlg && ref);
  for (int pi = 0; pi < np; pi++) {
    const int P = prompts[pi], nn = n_new < S - P ? n_new : S - P;
    dua_generate_options go;
    dua_generate_options_init(&go);
    dua_generate_stats gs;
    ck_assert_msg(dua_inference_generate(m, tok, P, nn, &go, out, glg, &gs) == DUA_SUCCESS, "%s",
                  dua_context_last_error(ctx));
    memcpy(seq, tok, sizeof(int32_t) * P);
    double worst = 0.0;
    for (int i = 0; i < nn; i++) {
      const int len = P + i;
      ck_assert_int_eq(dua_inference_forward(m, seq, 1, len, 0, ref), DUA_SUCCESS);
      double e;
      long bad = test_compare(glg + (size_t)i * V, ref + (size_t)(len - 1) * V, (size_t)V, 1e-4, 1e-4, &e);
      ck_assert_msg(bad < 0, "S %d, prompt %d, step %d (position %d): logit %ld is %g, the full forward's %g",
                    S, P, i, len - 1, bad, (double)glg[(size_t)i * V + bad],
                    (double)ref[(size_t)(len - 1) * V + bad]);
      worst = e > worst ? e : worst;
      seq[len] = out[i];
    }
    ck_assert_msg(gs.density > 0.0 && gs.density < 1.0 && gs.kv_bytes_per_token < gs.dense_kv_bytes_per_token,
                  "S %d, prompt %d: density %g, K/V bytes per token %g (dense %g)", S, P, gs.density,
                  gs.kv_bytes_per_token, gs.dense_kv_bytes_per_token);
    go.dense = 1;
    ck_assert_int_eq(dua_inference_generate(m, tok, P, nn, &go, out, dlg, NULL), DUA_SUCCESS);
    ck_assert_msg(memcmp(glg, dlg, sizeof(float) * nn * V) != 0, "S %d, prompt %d: routing changed nothing",
                  S, P);
    fprintf(stderr,
            "content generation, S %d, prompt %d, %d new: largest logit difference %.3g, density %.3f\n", S,
            P, nn, worst, gs.density);
  }
  free(out);
  free(seq);
  free(glg);
  free(dlg);
  free(ref);
}

START_TEST(resume_eval_and_files) {
  dua_context *ctx = test_context();
  char dir[64], a[128], b[128], err[512];
  snprintf(dir, sizeof dir, "/tmp/dua_test_content_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(a, sizeof a, "%s/straight.ckpt", dir);
  snprintf(b, sizeof b, "%s/resumed.ckpt", dir);
  dua_trainer_config c = tiny_config();
  dua_trainer *t = NULL;
  ck_assert_msg(dua_trainer_create(ctx, &c, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_train_stats st;
  for (int i = 0; i < 3; i++) {
    ck_assert_int_eq(dua_trainer_step(t, &st), DUA_SUCCESS);
    ck_assert_int_eq(st.phase, 0);
    ck_assert_msg(st.balance_loss >= 1.0f - 1e-6f && st.balance_loss < 2.0f, "balance loss %g",
                  (double)st.balance_loss);
    ck_assert_msg(st.expected_density > 0.0f && st.expected_density <= 1.0f, "expected density %g",
                  (double)st.expected_density);
  }
  ck_assert_msg(dua_trainer_save(t, b, err, sizeof err) == DUA_SUCCESS, "%s", err);
  /* soft phase: the inference model evaluates as the trainer does */
  dua_eval_result te, ie;
  ck_assert_int_eq(dua_trainer_evaluate(t, &te), DUA_SUCCESS);
  dua_inference_model *m = NULL;
  ck_assert_msg(dua_inference_model_load(ctx, b, NULL, &m, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_inference_evaluate(m, 0, &ie), DUA_SUCCESS);
  assert_same_eval(&te, &ie, "soft phase: trainer vs inference");
  dua_inference_model_destroy(m);
  for (int i = 3; i < 8; i++)
    ck_assert_int_eq(dua_trainer_step(t, &st), DUA_SUCCESS);
  ck_assert_int_eq(st.phase, 1);
  ck_assert_msg(dua_trainer_save(t, a, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_trainer_evaluate(t, &te), DUA_SUCCESS);
  dua_trainer_destroy(t);

  /* resumed from step 3: the same bytes at step 8 */
  ck_assert_msg(dua_trainer_load(ctx, b, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  for (int i = 3; i < 8; i++)
    ck_assert_int_eq(dua_trainer_step(t, NULL), DUA_SUCCESS);
  ck_assert_msg(dua_trainer_save(t, b, err, sizeof err) == DUA_SUCCESS, "%s", err);
  size_t na, nb;
  unsigned char *pa = read_all(a, &na), *pb = read_all(b, &nb);
  ck_assert_msg(na == nb && memcmp(pa, pb, na) == 0, "resumed content run differs from the straight run");
  free(pa);
  free(pb);

  /* the router moved away from its initialization; paths differ between blocks */
  dua_trainer_config c0 = c;
  dua_trainer *fresh = NULL;
  ck_assert_int_eq(dua_trainer_create(ctx, &c0, &fresh, err, sizeof err), DUA_SUCCESS);
  snprintf(b, sizeof b, "%s/fresh.ckpt", dir);
  ck_assert_int_eq(dua_trainer_save(fresh, b, err, sizeof err), DUA_SUCCESS);
  dua_trainer_destroy(fresh);
  dua_trainer_config cf;
  dua_ckpt_section *s0 = NULL, *s1 = NULL;
  int n0 = 0, n1 = 0;
  ck_assert_int_eq(dua_checkpoint_load(b, &cf, &s0, &n0, err, sizeof err), DUA_SUCCESS);
  ck_assert_int_eq(dua_checkpoint_load(a, &cf, &s1, &n1, err, sizeof err), DUA_SUCCESS);
  const dua_ckpt_section *w0 = dua_checkpoint_find(s0, n0, "router_w"),
                         *w1 = dua_checkpoint_find(s1, n1, "router_w");
  ck_assert(w0 && w1 && w0->bytes == w1->bytes && w0->bytes > 0);
  ck_assert_msg(memcmp(w0->data, w1->data, w0->bytes) != 0, "the router weights never moved");
  ck_assert_ptr_nonnull(dua_checkpoint_find(s1, n1, "router_m"));
  ck_assert_ptr_nonnull(dua_checkpoint_find(s1, n1, "router_v"));

  /* fixed depths: inference equals the trainer, and the routing file says "content" */
  ck_assert_msg(dua_inference_model_load(ctx, a, NULL, &m, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_inference_evaluate(m, 0, &ie), DUA_SUCCESS);
  assert_same_eval(&te, &ie, "fixed depths: trainer vs inference");
  double per_layer[2];
  ck_assert_int_eq(dua_inference_density(m, 0, per_layer), DUA_SUCCESS);
  ck_assert(fabs((per_layer[0] + per_layer[1]) / 2 - ie.density) < 1e-12);
  dua_routing r;
  ck_assert_int_eq(dua_inference_routing(m, &r), DUA_SUCCESS);
  ck_assert_int_eq(r.content, 1);
  char rpath[160];
  snprintf(rpath, sizeof rpath, "%s/routing.json", dir);
  ck_assert_int_eq(dua_routing_save(rpath, &r, err, sizeof err), DUA_SUCCESS);
  dua_routing back;
  ck_assert_int_eq(dua_routing_load(rpath, &back, err, sizeof err), DUA_SUCCESS);
  ck_assert_int_eq(back.content, 1);
  dua_routing_free(&back);
  dua_inference_model *m2 = NULL;
  ck_assert_msg(dua_inference_model_load(ctx, a, rpath, &m2, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_eval_result ie2;
  ck_assert_int_eq(dua_inference_evaluate(m2, 0, &ie2), DUA_SUCCESS);
  assert_same_eval(&ie, &ie2, "with the routing file");
  dua_inference_model_destroy(m2);
  r.content = 0; /* a positional routing file for a content checkpoint */
  ck_assert_int_eq(dua_routing_save(rpath, &r, err, sizeof err), DUA_SUCCESS);
  ck_assert_int_eq(dua_inference_model_load(ctx, a, rpath, &m2, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "positional") && strstr(err, "content"), "message: %s", err);
  dua_routing_free(&r);

  /* causality: later tokens change no earlier logit; paths differ between the blocks of an example */
  const int V = dua_inference_vocab_size(m);
  int32_t tok[2 * S_LEN], tgt[S_LEN];
  ck_assert_int_eq(dua_inference_test_example(m, 0, tok, tgt), DUA_SUCCESS);
  memcpy(tok + S_LEN, tok, sizeof(int32_t) * S_LEN);
  const int cut = 40; /* inside block 2 */
  test_rng rng = test_rng_make(5);
  for (int i = cut + 1; i < S_LEN; i++)
    tok[S_LEN + i] = test_rng_int(&rng, 0, V - 1);
  float *lg = malloc(sizeof(float) * 2 * S_LEN * V);
  ck_assert_int_eq(dua_inference_forward(m, tok, 2, S_LEN, 0, lg), DUA_SUCCESS);
  ck_assert_msg(memcmp(lg, lg + (size_t)S_LEN * V, sizeof(float) * (cut + 1) * V) == 0,
                "content routing leaks the future into positions <= %d", cut);
  ck_assert_msg(memcmp(lg + (size_t)(cut + 1) * V, lg + (size_t)(S_LEN + cut + 1) * V,
                       sizeof(float) * (S_LEN - cut - 1) * V) != 0,
                "the perturbation changed nothing (the check is empty)");
  free(lg);

  const int prompts[4] = {5, 16, 17, 37};
  check_generation(ctx, m, tok, S_LEN, prompts, 4, 40);
  dua_inference_model_destroy(m);

  /* damaged router sections are refused */
  dua_ckpt_section *edit = malloc((size_t)n1 * sizeof *edit);
  int ne = 0;
  for (int i = 0; i < n1; i++)
    if (strcmp(s1[i].name, "router_w") != 0)
      edit[ne++] = s1[i];
  snprintf(b, sizeof b, "%s/bad.ckpt", dir);
  ck_assert_int_eq(dua_checkpoint_save(b, &cf, edit, ne, err, sizeof err), DUA_SUCCESS);
  ck_assert_int_eq(dua_inference_model_load(ctx, b, NULL, &m, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  ck_assert_msg(strstr(err, "router_w") != NULL, "message: %s", err);
  ck_assert_int_eq(dua_trainer_load(ctx, b, &t, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  ck_assert_msg(strstr(err, "router_w") != NULL, "message: %s", err);
  ((float *)w1->data)[3] = NAN;
  ck_assert_int_eq(dua_checkpoint_save(b, &cf, s1, n1, err, sizeof err), DUA_SUCCESS);
  ck_assert_int_eq(dua_inference_model_load(ctx, b, NULL, &m, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  ck_assert_int_eq(dua_trainer_load(ctx, b, &t, err, sizeof err), DUA_ERROR_CORRUPT_FILE);
  ck_assert_msg(strstr(err, "non-finite") != NULL, "message: %s", err);
  free(edit);
  dua_checkpoint_free(s0, n0);
  dua_checkpoint_free(s1, n1);
  dua_trainer_destroy(t);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
  dua_context_destroy(ctx);
}
END_TEST

/* A sequence length that is not a multiple of the block (120 = 7 blocks of 16 + 8): its content model
 * generates through the short last block too (prompts ending before, at and inside it). */
START_TEST(generation_with_a_partial_last_block) {
  dua_context *ctx = test_context();
  char dir[64], path[128], err[512];
  snprintf(dir, sizeof dir, "/tmp/dua_test_content_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/short.ckpt", dir);
  dua_trainer_config c = tiny_config();
  c.seq_len = 120;
  dua_trainer *t = NULL;
  ck_assert_msg(dua_trainer_create(ctx, &c, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  for (int i = 0; i < c.steps; i++)
    ck_assert_int_eq(dua_trainer_step(t, NULL), DUA_SUCCESS);
  ck_assert_msg(dua_trainer_save(t, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_trainer_destroy(t);
  dua_inference_model *m = NULL;
  ck_assert_msg(dua_inference_model_load(ctx, path, NULL, &m, err, sizeof err) == DUA_SUCCESS, "%s", err);
  int32_t tok[120], tgt[120];
  ck_assert_int_eq(dua_inference_test_example(m, 0, tok, tgt), DUA_SUCCESS);
  const int prompts[3] = {30, 112, 113};
  check_generation(ctx, m, tok, 120, prompts, 3, 40);
  dua_inference_model_destroy(m);
  dua_context_destroy(ctx);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void) {
  Suite *s = suite_create("content");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 1200);
  tcase_add_test(tc, resume_eval_and_files);
  tcase_add_test(tc, generation_with_a_partial_last_block);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
