/* test_inference.c: inference from a trained checkpoint (dua_inference_*), on a tiny native-mode model
 * trained a few steps (S = 64, block 16, arity 2: tree depth 2; odd layers shifted; a token window and a
 * routing file adds a sink, so the decode sees every layout feature the trainer has):
 *   - evaluation equals dua_trainer_evaluate bit for bit (fixed depths, and soft-phase gates before they are
 *     fixed), also after a save/load round trip, and the routing equals dua_trainer_routing;
 *   - greedy generation through the prefill + sparse paged decode equals generation by full recomputation
 *     (dua_inference_forward on the whole prefix, argmax of the last position) token for token, logits within
 *     1e-4 + 1e-4 |ref|, for the checkpoint's routing, a routing file with mixed depths, and dense; the
 *     sparse routing reads fewer K/V bytes per token than dense, and the counts are checked by hand;
 *   - sampling is a pure function of the seed, and top_k = 1 is greedy;
 *   - a mismatched routing file, a damaged checkpoint, a prompt past seq_len, n_new past seq_len, bad
 *     temperature/top_k/dense and out-of-vocabulary tokens are refused with messages, writing nothing. */
#include "dua_train.h"
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_LEN 64

static dua_trainer_config tiny_config(void) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.layers = 2, c.width = 64, c.heads = 2, c.mlp_ratio = 2;
  c.seq_len = S_LEN, c.block = 16, c.arity = 2, c.batch = 2;
  c.window = 3, c.shift_alternate = 1;
  c.test_size = 16;
  c.mode = DUA_ROUTING_NATIVE;
  c.gate_init = 3.0f; /* gates on: sparse depths once fixed */
  c.steps = 8, c.warmup = 2, c.hard_frac = 0.5f, c.eval_every = 0, c.lr = 3e-3f;
  return c;
}

static dua_context *g_ctx; /* the test's context, for messages */

typedef struct fixture {
  dua_context *ctx;
  char dir[64];
  char ckpt[128]; /* trained 8 steps: depths fixed */
} fixture;

/* Trains the tiny model `steps` steps and saves it to path; returns the trainer (caller destroys). */
static dua_trainer *train(dua_context *ctx, int steps, const char *path) {
  dua_trainer_config c = tiny_config();
  char err[512];
  dua_trainer *t = NULL;
  ck_assert_msg(dua_trainer_create(ctx, &c, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  for (int i = 0; i < steps; i++)
    ck_assert_int_eq(dua_trainer_step(t, NULL), DUA_SUCCESS);
  ck_assert_msg(dua_trainer_save(t, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  return t;
}

static void setup(fixture *f) {
  f->ctx = g_ctx = test_context();
  snprintf(f->dir, sizeof f->dir, "/tmp/dua_test_inference_XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(f->dir));
  snprintf(f->ckpt, sizeof f->ckpt, "%s/model.ckpt", f->dir);
  dua_trainer_destroy(train(f->ctx, 8, f->ckpt));
}

static void teardown(fixture *f) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  ck_assert_int_eq(system(cmd), 0);
  dua_context_destroy(f->ctx);
}

static dua_inference_model *load(fixture *f, const char *ckpt, const char *routing) {
  char err[512] = "";
  dua_inference_model *m = NULL;
  ck_assert_msg(dua_inference_model_load(f->ctx, ckpt, routing, &m, err, sizeof err) == DUA_SUCCESS, "%s",
                err);
  ck_assert_ptr_nonnull(m);
  return m;
}

static void assert_same_eval(const dua_eval_result *a, const dua_eval_result *b, const char *what) {
  ck_assert_msg(a->scored == b->scored && a->loss == b->loss && a->accuracy == b->accuracy &&
                    a->density == b->density,
                "%s: loss %.17g / %.17g, accuracy %.17g / %.17g, density %.17g / %.17g, scored %lld / %lld",
                what, a->loss, b->loss, a->accuracy, b->accuracy, a->density, b->density,
                (long long)a->scored, (long long)b->scored);
}

static void check_routing(dua_trainer *t, dua_inference_model *m) {
  dua_routing a, b;
  ck_assert_int_eq(dua_trainer_routing(t, &a), DUA_SUCCESS);
  ck_assert_int_eq(dua_inference_routing(m, &b), DUA_SUCCESS);
  ck_assert_int_eq(a.layers, b.layers);
  ck_assert_int_eq(a.heads, b.heads);
  ck_assert_int_eq(a.seq_len, b.seq_len);
  ck_assert(memcmp(a.head, b.head, (size_t)a.layers * a.heads * sizeof *a.head) == 0);
  dua_routing_free(&a);
  dua_routing_free(&b);
}

START_TEST(evaluation_equals_the_trainers_bit_for_bit) {
  fixture f;
  setup(&f);
  char err[512], path[160];
  /* fixed depths (phase 1): the trainer loaded from the checkpoint vs the inference model */
  dua_trainer *t = NULL;
  ck_assert_msg(dua_trainer_load(f.ctx, f.ckpt, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_eval_result te, ie, ie2, dense;
  ck_assert_int_eq(dua_trainer_evaluate(t, &te), DUA_SUCCESS);
  dua_inference_model *m = load(&f, f.ckpt, NULL);
  ck_assert_int_eq(dua_inference_step_count(m), 8);
  check_routing(t, m);
  ck_assert_int_eq(dua_inference_evaluate(m, 0, &ie), DUA_SUCCESS);
  assert_same_eval(&te, &ie, "trainer vs inference");
  ck_assert_msg(ie.density < 0.9, "the routing should be sparse: density %g", ie.density);
  ck_assert_int_eq(dua_inference_evaluate(m, 0, &ie2), DUA_SUCCESS); /* repeatable */
  assert_same_eval(&ie, &ie2, "two evaluations");
  ck_assert_int_eq(dua_inference_evaluate(m, 1, &dense), DUA_SUCCESS);
  ck_assert(dense.density == 1.0 && dense.scored == ie.scored && isfinite(dense.loss));
  ck_assert_msg(dense.loss != ie.loss, "dense and sparse evaluations should differ");
  double per_layer[2];
  ck_assert_int_eq(dua_inference_density(m, 0, per_layer), DUA_SUCCESS);
  ck_assert(fabs((per_layer[0] + per_layer[1]) / 2 - ie.density) < 1e-12);
  /* saved again by the reloaded trainer and loaded: the same bits */
  snprintf(path, sizeof path, "%s/again.ckpt", f.dir);
  ck_assert_msg(dua_trainer_save(t, path, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_inference_model *m2 = load(&f, path, NULL);
  ck_assert_int_eq(dua_inference_evaluate(m2, 0, &ie2), DUA_SUCCESS);
  assert_same_eval(&ie, &ie2, "after a save/load round trip");
  /* the checkpoint's routing.json gives the same model */
  dua_routing r;
  ck_assert_int_eq(dua_trainer_routing(t, &r), DUA_SUCCESS);
  snprintf(path, sizeof path, "%s/routing.json", f.dir);
  ck_assert_msg(dua_routing_save(path, &r, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_routing_free(&r);
  dua_inference_model *m3 = load(&f, f.ckpt, path);
  ck_assert_int_eq(dua_inference_evaluate(m3, 0, &ie2), DUA_SUCCESS);
  assert_same_eval(&ie, &ie2, "with the routing file");
  dua_inference_model_destroy(m);
  dua_inference_model_destroy(m2);
  dua_inference_model_destroy(m3);
  dua_trainer_destroy(t);
  /* soft phase (2 of 8 steps, gates not fixed yet): the deepest gate that is on, like the trainer */
  snprintf(path, sizeof path, "%s/soft.ckpt", f.dir);
  t = train(f.ctx, 2, path);
  ck_assert_int_eq(dua_trainer_evaluate(t, &te), DUA_SUCCESS);
  m = load(&f, path, NULL);
  check_routing(t, m);
  ck_assert_int_eq(dua_inference_evaluate(m, 0, &ie), DUA_SUCCESS);
  assert_same_eval(&te, &ie, "soft phase");
  dua_inference_model_destroy(m);
  dua_trainer_destroy(t);
  teardown(&f);
}
END_TEST

static int argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b])
      b = i;
  return b;
}

/* Greedy generation vs recomputation through dua_inference_forward; returns the stats. */
static dua_generate_stats greedy_vs_recompute(dua_inference_model *m, const int32_t *prompt, int P, int n_new,
                                              int dense) {
  const int V = dua_inference_vocab_size(m);
  int32_t *out = malloc((size_t)n_new * sizeof *out), *seq = malloc(S_LEN * sizeof *seq);
  float *lg = malloc((size_t)n_new * V * sizeof *lg), *ref = malloc((size_t)S_LEN * V * sizeof *ref);
  dua_generate_options o;
  dua_generate_options_init(&o);
  o.dense = dense;
  dua_generate_stats st;
  ck_assert_msg(dua_inference_generate(m, prompt, P, n_new, &o, out, lg, &st) == DUA_SUCCESS, "%s",
                dua_context_last_error(g_ctx));
  memcpy(seq, prompt, (size_t)P * sizeof *seq);
  double worst = 0;
  for (int i = 0; i < n_new; i++) {
    const int len = P + i;
    ck_assert_int_eq(dua_inference_forward(m, seq, 1, len, dense, ref), DUA_SUCCESS);
    const float *last = ref + (size_t)(len - 1) * V;
    double err;
    long bad = test_compare(lg + (size_t)i * V, last, (size_t)V, 1e-4, 1e-4, &err);
    ck_assert_msg(bad < 0, "dense %d, step %d (position %d): logit %ld is %g, recomputed %g", dense, i, len,
                  bad, (double)lg[(size_t)i * V + bad], (double)last[bad]);
    worst = err > worst ? err : worst;
    ck_assert_msg(out[i] == argmax(last, V), "dense %d, step %d: decode chose %d, recomputation %d", dense, i,
                  out[i], argmax(last, V));
    seq[len] = out[i];
  }
  ck_assert_int_eq(st.prompt_tokens, P);
  ck_assert_int_eq(st.new_tokens, n_new);
  ck_assert_int_eq(st.decode_steps, n_new - 1);
  ck_assert(st.tokens_per_second > 0 && st.prefill_seconds > 0);
  fprintf(
      stderr,
      "dense %d, prompt %d, %d new: largest logit difference %.3g; %.0f K/V bytes per token, dense %.0f\n",
      dense, P, n_new, worst, st.kv_bytes_per_token, st.dense_kv_bytes_per_token);
  free(out);
  free(seq);
  free(lg);
  free(ref);
  return st;
}

/* K/V bytes per token by hand: the 16-token units of the context holding a key the new token sees. */
static double expected_kv_bytes(const dua_routing *r, int P, int n_new, int dense) {
  double sum = 0;
  for (int i = 1; i < n_new; i++) {
    const int pos = P + i - 1, len = pos + 1;
    for (int l = 0; l < r->layers; l++)
      for (int h = 0; h < r->heads; h++) {
        const dua_routing_head *e = &r->head[(size_t)l * r->heads + h];
        int32_t depths[2] = {dense ? 0 : r->head[(size_t)l * r->heads].depth,
                             dense ? 0 : r->head[(size_t)l * r->heads + 1].depth};
        dua_layout_desc d = {.seq_len = S_LEN,
                             .block = e->block,
                             .batch = 1,
                             .heads = 2,
                             .arity = e->arity,
                             .depths = depths,
                             .shift = e->shift,
                             .window = e->window,
                             .sink = e->sink,
                             .causal = 1};
        dua_layout *lay = NULL;
        ck_assert_int_eq(dua_layout_create(&d, &lay, NULL, 0), DUA_SUCCESS);
        for (int u = 0; u * 16 < len; u++) {
          int seen = 0;
          for (int j = u * 16; j < (u + 1) * 16 && j <= pos; j++)
            seen |= dua_layout_visible(lay, 0, h, pos, j);
          if (seen)
            sum += (u + 1) * 16 <= len ? 16 : len - u * 16;
        }
        dua_layout_destroy(lay);
      }
  }
  return n_new > 1 ? sum * 32 * 4 * 2 / (n_new - 1) : 0; /* head_dim 32, fp32, K and V */
}

START_TEST(greedy_decode_equals_recomputation) {
  fixture f;
  setup(&f);
  dua_inference_model *m = load(&f, f.ckpt, NULL);
  int32_t tok[S_LEN], tgt[S_LEN];
  ck_assert_int_eq(dua_inference_test_example(m, 0, tok, tgt), DUA_SUCCESS);
  dua_routing r;
  ck_assert_int_eq(dua_inference_routing(m, &r), DUA_SUCCESS);
  /* a 5-token prompt and 50 new tokens: the context crosses every 16-token block boundary */
  dua_generate_stats sp = greedy_vs_recompute(m, tok, 5, 50, 0);
  dua_generate_stats de = greedy_vs_recompute(m, tok, 5, 50, 1);
  ck_assert_msg(sp.kv_bytes_per_token < 0.8 * sp.dense_kv_bytes_per_token, "sparse reads %g of %g bytes",
                sp.kv_bytes_per_token, sp.dense_kv_bytes_per_token);
  ck_assert(fabs(sp.kv_bytes_per_token - expected_kv_bytes(&r, 5, 50, 0)) < 1e-6);
  ck_assert(fabs(de.kv_bytes_per_token - expected_kv_bytes(&r, 5, 50, 1)) < 1e-6);
  ck_assert(de.kv_bytes_per_token == de.dense_kv_bytes_per_token);
  ck_assert(sp.dense_kv_bytes_per_token == de.dense_kv_bytes_per_token);
  ck_assert(sp.density < 0.9 && de.density == 1.0);
  /* edges: a one-token prompt; a prompt of seq_len - 1 tokens and the one token that fits */
  greedy_vs_recompute(m, tok, 1, 20, 0);
  int32_t longp[S_LEN];
  for (int i = 0; i < S_LEN; i++)
    longp[i] = tok[i % 5];
  greedy_vs_recompute(m, longp, S_LEN - 1, 1, 0);
  greedy_vs_recompute(m, longp, 17, 3, 0); /* prefill ends past the first block */
  dua_routing_free(&r);
  /* a routing file with mixed depths (dense, block-diagonal, middle) and a sink in layer 1 */
  ck_assert_int_eq(dua_inference_routing(m, &r), DUA_SUCCESS);
  const int32_t mixed[4] = {0, 2, 1, 2};
  for (int i = 0; i < 4; i++)
    r.head[i].depth = mixed[i];
  r.head[2].sink = r.head[3].sink = 2;
  char path[160], err[512];
  snprintf(path, sizeof path, "%s/mixed.json", f.dir);
  ck_assert_msg(dua_routing_save(path, &r, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_inference_model *mm = load(&f, f.ckpt, path);
  dua_generate_stats mx = greedy_vs_recompute(mm, tok, 3, 40, 0);
  ck_assert(fabs(mx.kv_bytes_per_token - expected_kv_bytes(&r, 3, 40, 0)) < 1e-6);
  dua_routing_free(&r);
  dua_inference_model_destroy(mm);
  dua_inference_model_destroy(m);
  teardown(&f);
}
END_TEST

START_TEST(sampling_is_seeded) {
  fixture f;
  setup(&f);
  dua_inference_model *m = load(&f, f.ckpt, NULL);
  int32_t tok[S_LEN], tgt[S_LEN], a[30], b[30], g[30];
  ck_assert_int_eq(dua_inference_test_example(m, 1, tok, tgt), DUA_SUCCESS);
  dua_generate_options o;
  dua_generate_options_init(&o);
  ck_assert_int_eq(dua_inference_generate(m, tok, 4, 30, &o, g, NULL, NULL), DUA_SUCCESS); /* greedy */
  o.temperature = 5.0f, o.seed = 7;
  ck_assert_int_eq(dua_inference_generate(m, tok, 4, 30, &o, a, NULL, NULL), DUA_SUCCESS);
  ck_assert_int_eq(dua_inference_generate(m, tok, 4, 30, &o, b, NULL, NULL), DUA_SUCCESS);
  ck_assert(memcmp(a, b, sizeof a) == 0);
  ck_assert_msg(memcmp(a, g, sizeof a) != 0, "temperature 5 sampled the greedy sequence");
  o.seed = 8;
  ck_assert_int_eq(dua_inference_generate(m, tok, 4, 30, &o, b, NULL, NULL), DUA_SUCCESS);
  ck_assert_msg(memcmp(a, b, sizeof a) != 0, "seeds 7 and 8 drew the same 30 tokens");
  o.top_k = 1;
  ck_assert_int_eq(dua_inference_generate(m, tok, 4, 30, &o, b, NULL, NULL), DUA_SUCCESS);
  ck_assert(memcmp(g, b, sizeof g) == 0);
  o.top_k = 2; /* only the two most likely tokens of each step's logits */
  float lg[30 * 8];
  ck_assert_int_le(dua_inference_vocab_size(m), 8);
  ck_assert_int_eq(dua_inference_generate(m, tok, 4, 30, &o, b, lg, NULL), DUA_SUCCESS);
  const int V = dua_inference_vocab_size(m);
  for (int i = 0; i < 30; i++) {
    int above = 0;
    for (int v = 0; v < V; v++)
      above += lg[i * V + v] > lg[i * V + b[i]];
    ck_assert_int_le(above, 1);
  }
  /* token names round trip */
  for (int v = 0; v < V; v++)
    ck_assert_int_eq(dua_inference_token_id(m, dua_inference_token_name(m, v)), v);
  ck_assert_int_eq(dua_inference_token_id(m, "no-such-token"), -1);
  dua_inference_model_destroy(m);
  teardown(&f);
}
END_TEST

static void expect_load_error(fixture *f, const char *ckpt, const char *routing, dua_status want,
                              const char *needle) {
  char err[512] = "";
  dua_inference_model *m = (dua_inference_model *)(uintptr_t)1;
  dua_status st = dua_inference_model_load(f->ctx, ckpt, routing, &m, err, sizeof err);
  ck_assert_msg(st == want, "%s: status %s, want %s (%s)", needle, dua_status_string(st),
                dua_status_string(want), err);
  ck_assert_msg(m == (dua_inference_model *)(uintptr_t)1, "out written on error");
  ck_assert_msg(strstr(err, needle), "message \"%s\" does not name %s", err, needle);
}

static void save_routing(fixture *f, const dua_routing *r, const char *name, char *path, size_t n) {
  char err[512];
  snprintf(path, n, "%s/%s", f->dir, name);
  ck_assert_msg(dua_routing_save(path, r, err, sizeof err) == DUA_SUCCESS, "%s", err);
}

START_TEST(bad_files_and_arguments_are_refused) {
  fixture f;
  setup(&f);
  dua_inference_model *m = load(&f, f.ckpt, NULL);
  dua_routing good, r;
  ck_assert_int_eq(dua_inference_routing(m, &good), DUA_SUCCESS);
  char path[160];
  /* routing files that do not fit the checkpoint */
  ck_assert_int_eq(dua_inference_routing(m, &r), DUA_SUCCESS);
  r.layers = 1;
  save_routing(&f, &r, "layers.json", path, sizeof path);
  expect_load_error(&f, f.ckpt, path, DUA_ERROR_INVALID_ARGUMENT, "layers");
  r.layers = 2, r.heads = 1;
  for (int i = 0; i < 2; i++)
    r.head[i] = good.head[2 * i];
  save_routing(&f, &r, "heads.json", path, sizeof path);
  expect_load_error(&f, f.ckpt, path, DUA_ERROR_INVALID_ARGUMENT, "heads");
  dua_routing_free(&r);
  ck_assert_int_eq(dua_inference_routing(m, &r), DUA_SUCCESS);
  r.seq_len = 128;
  save_routing(&f, &r, "seq.json", path, sizeof path);
  expect_load_error(&f, f.ckpt, path, DUA_ERROR_INVALID_ARGUMENT, "seq_len");
  r.seq_len = S_LEN;
  r.head[3].block = 32;
  r.head[3].depth = 1;
  save_routing(&f, &r, "block.json", path, sizeof path);
  expect_load_error(&f, f.ckpt, path, DUA_ERROR_INVALID_ARGUMENT, "routing[1][1].block");
  r.head[3] = good.head[3];
  r.head[2].arity = 4;
  r.head[2].depth = 1;
  r.head[2].shift = 0;
  save_routing(&f, &r, "arity.json", path, sizeof path);
  expect_load_error(&f, f.ckpt, path, DUA_ERROR_INVALID_ARGUMENT, "routing[1][0].arity");
  r.head[2] = good.head[2];
  r.head[1].window = good.head[0].window + 1;
  save_routing(&f, &r, "window.json", path, sizeof path);
  expect_load_error(&f, f.ckpt, path, DUA_ERROR_INVALID_ARGUMENT, "share one layout");
  dua_routing_free(&r);
  expect_load_error(&f, f.ckpt, "/nonexistent/routing.json", DUA_ERROR_IO, "routing");
  snprintf(path, sizeof path, "%s/junk.json", f.dir);
  FILE *fp = fopen(path, "w");
  fputs("{\"layers\": 2, ", fp);
  fclose(fp);
  expect_load_error(&f, f.ckpt, path, DUA_ERROR_CORRUPT_FILE, "junk.json");
  /* checkpoints: missing, damaged, truncated, not a checkpoint */
  expect_load_error(&f, "/nonexistent/model.ckpt", NULL, DUA_ERROR_IO, "model.ckpt");
  snprintf(path, sizeof path, "%s/bad.ckpt", f.dir);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "cp %s %s", f.ckpt, path);
  ck_assert_int_eq(system(cmd), 0);
  fp = fopen(path, "r+b");
  fseek(fp, 300, SEEK_SET);
  int ch = fgetc(fp);
  fseek(fp, 300, SEEK_SET);
  fputc(ch ^ 0x40, fp);
  fclose(fp);
  char err[512] = "";
  dua_inference_model *bad = NULL;
  ck_assert_int_eq(dua_inference_model_load(f.ctx, path, NULL, &bad, err, sizeof err),
                   DUA_ERROR_CORRUPT_FILE);
  ck_assert_ptr_null(bad);
  ck_assert_msg(strlen(err) > 10, "no message: \"%s\"", err);
  ck_assert_int_eq(truncate(path, 1000), 0);
  ck_assert_int_eq(dua_inference_model_load(f.ctx, path, NULL, &bad, err, sizeof err),
                   DUA_ERROR_CORRUPT_FILE);
  ck_assert_int_eq(dua_inference_model_load(f.ctx, f.ckpt, f.ckpt, &bad, err, sizeof err),
                   DUA_ERROR_CORRUPT_FILE); /* a checkpoint given as the routing file */
  ck_assert_int_eq(dua_inference_model_load(NULL, f.ckpt, NULL, &bad, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  dua_routing_free(&good);

  /* generation and forward arguments; nothing is written on error */
  int32_t tok[S_LEN], tgt[S_LEN], out[S_LEN];
  ck_assert_int_eq(dua_inference_test_example(m, 0, tok, tgt), DUA_SUCCESS);
  for (int i = 0; i < S_LEN; i++)
    out[i] = -7;
  dua_generate_options o;
  dua_generate_options_init(&o);
  struct {
    int P, n;
    float temp;
    int top_k, dense;
    const char *needle;
  } cases[] = {
      {S_LEN + 1, 1, 0, 0, 0, "prompt_len"},
      {0, 1, 0, 0, 0, "prompt_len"},
      {10, S_LEN - 9, 0, 0, 0, "seq_len"},
      {10, 0, 0, 0, 0, "n_new"},
      {10, 5, -1, 0, 0, "temperature"},
      {10, 5, NAN, 0, 0, "temperature"},
      {10, 5, INFINITY, 0, 0, "temperature"},
      {10, 5, 1, -1, 0, "top_k"},
      {10, 5, 1, 100, 0, "top_k"},
      {10, 5, 0, 0, 2, "dense"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    o.temperature = cases[i].temp, o.top_k = cases[i].top_k, o.dense = cases[i].dense;
    ck_assert_int_eq(dua_inference_generate(m, tok, cases[i].P, cases[i].n, &o, out, NULL, NULL),
                     DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(dua_context_last_error(f.ctx), cases[i].needle), "case %zu: \"%s\"", i,
                  dua_context_last_error(f.ctx));
  }
  dua_generate_options_init(&o);
  tok[3] = 99;
  ck_assert_int_eq(dua_inference_generate(m, tok, 10, 5, &o, out, NULL, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert(strstr(dua_context_last_error(f.ctx), "prompt[3]"));
  for (int i = 0; i < S_LEN; i++)
    ck_assert_int_eq(out[i], -7);
  ck_assert_int_eq(dua_inference_generate(m, tok, 3, 5, &o, NULL, NULL, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_inference_generate(m, tok, 3, S_LEN - 3, &o, out, NULL, NULL), DUA_SUCCESS); /* fits */
  ck_assert_int_eq(dua_inference_forward(m, tok, 1, S_LEN + 1, 0, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert(strstr(dua_context_last_error(f.ctx), "position embedding"));
  ck_assert_int_eq(dua_inference_forward(m, tok, 1, 10, 0, NULL), DUA_ERROR_INVALID_ARGUMENT); /* tok[3] */
  ck_assert_int_eq(dua_inference_forward(m, tok, 0, 2, 0, NULL), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_inference_test_example(m, 16, tok, tgt), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_inference_evaluate(m, 3, &(dua_eval_result){0}), DUA_ERROR_INVALID_ARGUMENT);
  dua_inference_timing tm;
  ck_assert_int_eq(dua_inference_time(m, 0, 0, &tm), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_inference_time(m, 0, 2, &tm), DUA_SUCCESS);
  ck_assert(tm.forward_seconds > 0 && tm.attention_seconds > 0 && tm.batch == 2);
  dua_inference_model_destroy(NULL);
  dua_inference_model_destroy(m);
  teardown(&f);
}
END_TEST

START_TEST(forward_batches_agree) {
  fixture f;
  setup(&f);
  dua_inference_model *m = load(&f, f.ckpt, NULL);
  const int V = dua_inference_vocab_size(m), B = 5, T = 40;
  int32_t *tok = malloc((size_t)B * T * sizeof *tok), ex[S_LEN], tgt[S_LEN];
  for (int b = 0; b < B; b++) {
    ck_assert_int_eq(dua_inference_test_example(m, b, ex, tgt), DUA_SUCCESS);
    memcpy(tok + (size_t)b * T, ex, (size_t)T * sizeof *tok);
  }
  float *all = malloc((size_t)B * T * V * sizeof *all), *one = malloc((size_t)T * V * sizeof *one);
  ck_assert_int_eq(dua_inference_forward(m, tok, B, T, 0, all), DUA_SUCCESS); /* chunks of 2, 2, 1 */
  for (int b = 0; b < B; b++) {
    ck_assert_int_eq(dua_inference_forward(m, tok + (size_t)b * T, 1, T, 0, one), DUA_SUCCESS);
    double err;
    ck_assert(test_compare(all + (size_t)b * T * V, one, (size_t)T * V, 1e-4, 1e-4, &err) < 0);
  }
  /* causal: the logits of the first 10 positions do not depend on what follows */
  ck_assert_int_eq(dua_inference_forward(m, tok, 1, 10, 0, one), DUA_SUCCESS);
  double err;
  ck_assert(test_compare(one, all, (size_t)10 * V, 1e-4, 1e-4, &err) < 0);
  free(tok);
  free(all);
  free(one);
  dua_inference_model_destroy(m);
  teardown(&f);
}
END_TEST

int main(void) {
  Suite *s = suite_create("inference");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 600);
  tcase_add_test(tc, evaluation_equals_the_trainers_bit_for_bit);
  tcase_add_test(tc, greedy_decode_equals_recomputation);
  tcase_add_test(tc, sampling_is_seeded);
  tcase_add_test(tc, bad_files_and_arguments_are_refused);
  tcase_add_test(tc, forward_batches_agree);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
