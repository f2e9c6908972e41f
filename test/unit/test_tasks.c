/* test_tasks.c: unit tests of the task generators, the text corpus and the batch loader. Every Dyck example
 * is checked by a stack-based recognizer written here, every ListOps example by a recursive evaluator written
 * here, every dyck-lm word by a recognizer of balanced Dyck-k words (all independent of the generators);
 * listops-paper's flat fraction and depth histogram are compared with the exact distribution derived here
 * from the paper's rule, dyck-lm's opener share and kinds with the documented probabilities; text windows are
 * located in the file written by the test (split, regions, spacing of the test windows), bad corpora
 * (invalid UTF-8 of every kind, too small, test set too large, missing) are refused with the offset or the
 * numbers, and the checkpoint record is round-tripped, verified, and refused truncated or malformed. Batches
 * are a pure function of (seed, step), never contain a test example (also in small example spaces and a
 * corpus that repeats its held-out text, where collisions are frequent), and the loader hands out exactly
 * what dua_task_train_batch computes. Length, depth and answer-class histograms are printed. */
#include "dua_train.h"
#include "test_util.h"
#include "train/task.h"
#include "train/task_internal.h" /* the raw generators, to show how often a draw hits the test set */

#include <check.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Check records every passing ck_assert (a write to the parent per call): in loops over many thousands of
 * examples, test with a plain if and report only failures. */
#define REQUIRE(cond, ...)                                                                                   \
  do {                                                                                                       \
    if (!(cond))                                                                                             \
      ck_abort_msg(__VA_ARGS__);                                                                             \
  } while (0)

static dua_trainer_config dyck_config(int32_t seq_len, int32_t kinds, int32_t max_depth, int32_t test_size,
                                      uint64_t seed) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.task = DUA_TASK_DYCK;
  c.seq_len = seq_len;
  c.dyck_kinds = kinds;
  c.dyck_max_depth = max_depth;
  c.test_size = test_size;
  c.seed = seed;
  return c;
}

static dua_trainer_config listops_config(int32_t seq_len, int32_t test_size, uint64_t seed) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.task = DUA_TASK_LISTOPS;
  c.seq_len = seq_len;
  c.test_size = test_size;
  c.seed = seed;
  return c;
}

static dua_task *make_task(const dua_trainer_config *c) {
  dua_task *t = NULL;
  char err[512] = "";
  dua_status st = dua_task_create(c, NULL, &t, err, sizeof err);
  REQUIRE(st == DUA_SUCCESS, "dua_task_create: %s", err);
  ck_assert_ptr_nonnull(t);
  return t;
}

/* ---------------------------------------------------------------- histograms */

#define HMAX 160
typedef struct histo {
  long length[HMAX], depth[HMAX], cls[HMAX];
  long examples, nested, closer_last;
} histo;

static void print_histo(const char *title, const histo *h, const dua_task *t, int32_t seq_len) {
  fprintf(stderr, "%s: %ld examples\n  length:", title, h->examples);
  for (int i = 0; i <= seq_len && i < HMAX; i++)
    if (h->length[i])
      fprintf(stderr, " %d:%ld", i, h->length[i]);
  fprintf(stderr, "\n  depth:");
  for (int i = 0; i < HMAX; i++)
    if (h->depth[i])
      fprintf(stderr, " %d:%ld", i, h->depth[i]);
  fprintf(stderr, "\n  answer class:");
  for (int i = 0; i < HMAX; i++)
    if (h->cls[i])
      fprintf(stderr, " %s:%ld (%.1f%%)", dua_task_token_name(t, i), h->cls[i],
              100.0 * h->cls[i] / h->examples);
  if (h->nested)
    fprintf(stderr, "\n  nested (depth >= 2): %.1f%%", 100.0 * h->nested / h->examples);
  if (h->closer_last)
    fprintf(stderr, "\n  prefix ends on a closer: %.1f%%", 100.0 * h->closer_last / h->examples);
  fprintf(stderr, "\n");
}

/* ---------------------------------------------------------------- Dyck checker */

/* Checks one Dyck-k example from first principles; adds it to h. */
static void check_dyck(const int32_t *tok, const int32_t *tgt, int32_t S, int32_t k, int32_t max_depth,
                       histo *h, const char *where) {
  int32_t answer_pos = -1;
  for (int32_t i = 0; i < S; i++)
    if (tgt[i] != DUA_IGNORE) {
      REQUIRE(answer_pos < 0, "%s: two scored positions (%d and %d)", where, answer_pos, i);
      answer_pos = i;
    }
  REQUIRE(answer_pos >= 0, "%s: no scored position", where);
  int32_t len = answer_pos + 1;
  REQUIRE(len <= S - 1, "%s: prefix of %d tokens exceeds seq_len - 1 = %d", where, len, S - 1);
  for (int32_t i = len; i < S; i++)
    REQUIRE(tok[i] == 0, "%s: token %d after the answer is %d, not PAD", where, i, tok[i]);
  int32_t stack[1024], depth = 0, deepest = 0;
  for (int32_t i = 0; i < len; i++) {
    int32_t x = tok[i];
    REQUIRE(x >= 1 && x <= 2 * k, "%s: token %d = %d is not a bracket", where, i, x);
    if (x <= k) { /* opener of kind x - 1 */
      REQUIRE(depth < 1024, "%s: nesting beyond the checker's stack", where);
      stack[depth++] = x - 1;
      if (depth > deepest)
        deepest = depth;
    } else {
      REQUIRE(depth > 0, "%s: closer at %d with nothing open", where, i);
      REQUIRE(stack[depth - 1] == x - k - 1, "%s: closer %d at %d does not match the open kind %d", where, x,
              i, stack[depth - 1]);
      depth--;
    }
  }
  REQUIRE(depth >= 1, "%s: no bracket open at the end", where);
  REQUIRE(deepest <= max_depth, "%s: nesting %d exceeds dyck_max_depth %d", where, deepest, max_depth);
  int32_t want = k + 1 + stack[depth - 1];
  REQUIRE(tgt[answer_pos] == want, "%s: target %d, the required closer is %d", where, tgt[answer_pos], want);
  if (h) {
    h->examples++;
    h->length[len < HMAX ? len : HMAX - 1]++;
    h->depth[deepest < HMAX ? deepest : HMAX - 1]++;
    h->cls[want]++;
    h->closer_last += tok[answer_pos] > k;
  }
}

/* ---------------------------------------------------------------- Dyck-LM recognizer */

/* Statistics of dyck-lm words: where an opener and a closer were both possible, how often an opener came;
 * opener kinds; the distance from each opener to its closer. */
typedef struct lm_stats {
  long free_positions, free_opens, forced;
  long kinds[8];
  long words, deepest_hits;
  long dist[32];       /* closer distance, bucket floor(log2) */
  double best_correct; /* expected correct argmax predictions of the generator's own predictor */
  long targets;
} lm_stats;

/* Checks one dyck-lm example from first principles: S brackets (no PAD), every closer matches the innermost
 * open bracket, nesting <= max_depth, balanced at the end; targets are the next tokens, the last ignored. */
static void check_dyck_lm(const int32_t *tok, const int32_t *tgt, int32_t S, int32_t k, int32_t max_depth,
                          lm_stats *st, const char *where) {
  static int32_t stack[65536], open_at[65536];
  int32_t depth = 0, deepest = 0;
  const int32_t m = max_depth < S / 2 ? max_depth : S / 2;
  for (int32_t i = 0; i < S; i++) {
    int32_t x = tok[i];
    REQUIRE(x >= 1 && x <= 2 * k, "%s: token %d = %d is not a bracket", where, i, x);
    if (st) { /* the choices the documented rule leaves at this position */
      const int can_open = depth < m && depth + 1 <= S - i - 1, can_close = depth > 0;
      if (can_open && can_close) {
        st->free_positions++;
        st->free_opens += x <= k;
      } else {
        st->forced++;
      }
      if (i > 0) { /* the predictor that knows the rule: P(its argmax is the token at i) */
        st->targets++;
        if (can_open && can_close)
          st->best_correct += x > k ? (k == 1 ? 0.5 : 1.0) : (k == 1 ? 0.5 : 0.0);
        else if (can_close)
          st->best_correct += 1.0;
        else
          st->best_correct += 1.0 / k;
      }
    }
    if (x <= k) {
      stack[depth] = x - 1;
      open_at[depth++] = i;
      if (depth > deepest)
        deepest = depth;
      if (st)
        st->kinds[x - 1]++;
    } else {
      REQUIRE(depth > 0, "%s: closer at %d with nothing open", where, i);
      REQUIRE(stack[depth - 1] == x - k - 1, "%s: closer %d at %d does not match the open kind %d", where, x,
              i, stack[depth - 1]);
      depth--;
      if (st) {
        int b = 0;
        for (int32_t d = i - open_at[depth]; d > 1; d >>= 1)
          b++;
        st->dist[b]++;
      }
    }
    REQUIRE(depth <= max_depth, "%s: nesting %d at %d exceeds dyck_max_depth %d", where, depth, i, max_depth);
  }
  REQUIRE(depth == 0, "%s: %d brackets still open at the end", where, depth);
  for (int32_t i = 0; i + 1 < S; i++)
    REQUIRE(tgt[i] == tok[i + 1], "%s: target %d = %d, the next token is %d", where, i, tgt[i], tok[i + 1]);
  REQUIRE(tgt[S - 1] == DUA_IGNORE, "%s: the last position is scored (%d)", where, tgt[S - 1]);
  if (st) {
    st->words++;
    st->deepest_hits += deepest == m;
  }
}

/* ---------------------------------------------------------------- ListOps evaluator */

enum {
  L_PAD = 0,
  L_D0 = 1,
  L_OPEN = 11,
  L_MIN = 12,
  L_MAX = 13,
  L_MED = 14,
  L_SUMMOD = 15,
  L_CLOSE = 16,
  L_EQ = 17
};

typedef struct parser {
  const int32_t *tok;
  int32_t len, pos, depth, deepest;
  const char *where;
} parser;

static int cmp_int(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

static int32_t parse_value(parser *p) {
  REQUIRE(p->pos < p->len, "%s: expression runs off the end", p->where);
  int32_t x = p->tok[p->pos++];
  if (x >= L_D0 && x < L_D0 + 10)
    return x - L_D0;
  REQUIRE(x == L_OPEN, "%s: token %d at %d is neither a digit nor '['", p->where, x, p->pos - 1);
  p->depth++;
  if (p->depth > p->deepest)
    p->deepest = p->depth;
  REQUIRE(p->pos < p->len, "%s: '[' at the end", p->where);
  int32_t op = p->tok[p->pos++];
  REQUIRE(op >= L_MIN && op <= L_SUMMOD, "%s: '[' followed by %d, not an operator", p->where, op);
  int32_t v[64], n = 0;
  while (p->pos < p->len && p->tok[p->pos] != L_CLOSE) {
    REQUIRE(n < 64, "%s: more than 64 arguments", p->where);
    v[n++] = parse_value(p);
  }
  REQUIRE(p->pos < p->len, "%s: missing ']'", p->where);
  p->pos++;
  p->depth--;
  REQUIRE(n >= 2 && n <= 4, "%s: operator with %d arguments", p->where, n);
  int32_t r = 0;
  switch (op) {
  case L_MIN:
    r = 9;
    for (int32_t i = 0; i < n; i++)
      r = v[i] < r ? v[i] : r;
    break;
  case L_MAX:
    r = 0;
    for (int32_t i = 0; i < n; i++)
      r = v[i] > r ? v[i] : r;
    break;
  case L_MED:
    qsort(v, (size_t)n, sizeof v[0], cmp_int);
    r = v[(n - 1) / 2];
    break;
  default:
    for (int32_t i = 0; i < n; i++)
      r += v[i];
    r %= 10;
  }
  return r;
}

static void check_listops(const int32_t *tok, const int32_t *tgt, int32_t S, histo *h, const char *where) {
  int32_t eq = -1;
  for (int32_t i = 0; i < S; i++)
    if (tok[i] == L_EQ) {
      REQUIRE(eq < 0, "%s: two '='", where);
      eq = i;
    }
  REQUIRE(eq >= 0, "%s: no '='", where);
  REQUIRE(tok[0] == L_OPEN, "%s: does not start with '['", where);
  parser p = {tok, eq, 0, 0, 0, where};
  int32_t value = parse_value(&p);
  REQUIRE(p.pos == eq, "%s: tokens between the expression's end (%d) and '=' (%d)", where, p.pos, eq);
  REQUIRE(p.deepest <= 5, "%s: depth %d > 5", where, p.deepest);
  for (int32_t i = eq + 1; i < S; i++)
    REQUIRE(tok[i] == L_PAD, "%s: token %d after '=' is %d, not PAD", where, i, tok[i]);
  for (int32_t i = 0; i < S; i++)
    REQUIRE(tgt[i] == (i == eq ? L_D0 + value : DUA_IGNORE), "%s: target %d = %d (value %d at '=' %d)", where,
            i, tgt[i], value, eq);
  if (h) {
    h->examples++;
    h->length[eq + 1 < HMAX ? eq + 1 : HMAX - 1]++;
    h->depth[p.deepest]++;
    h->cls[L_D0 + value]++;
    h->nested += p.deepest >= 2;
  }
}

/* ---------------------------------------------------------------- checks over a task */

static void check_example(const dua_trainer_config *c, const int32_t *tok, const int32_t *tgt, histo *h,
                          const char *where) {
  switch (c->task) {
  case DUA_TASK_DYCK:
    check_dyck(tok, tgt, c->seq_len, c->dyck_kinds, c->dyck_max_depth, h, where);
    break;
  case DUA_TASK_LISTOPS:
    check_listops(tok, tgt, c->seq_len, h, where);
    break;
  case DUA_TASK_DYCK_LM:
    check_dyck_lm(tok, tgt, c->seq_len, c->dyck_kinds, c->dyck_max_depth, NULL, where);
    if (h) {
      h->examples++;
      h->length[c->seq_len < HMAX ? c->seq_len : HMAX - 1]++;
    }
    break;
  case DUA_TASK_LISTOPS_PAPER: { /* the same grammar; operators only at levels 1-4 */
    histo one;
    memset(&one, 0, sizeof one);
    check_listops(tok, tgt, c->seq_len, &one, where);
    int32_t depth = 0;
    while (one.depth[depth] == 0)
      depth++;
    REQUIRE(depth >= 1 && depth <= 4, "%s: bracket depth %d is not in 1..4", where, depth);
    if (h) {
      h->examples++;
      for (int i = 0; i < HMAX; i++) {
        h->length[i] += one.length[i];
        h->depth[i] += one.depth[i];
        h->cls[i] += one.cls[i];
      }
      h->nested += one.nested;
    }
    break;
  }
  default:
    ck_abort_msg("%s: task %d has no checker", where, (int)c->task);
  }
}

static void raw_generate(const dua_trainer_config *c, dua_task_rng *r, int32_t *tok, int32_t *tgt) {
  switch (c->task) {
  case DUA_TASK_DYCK:
    dua_dyck_generate(c, r, tok, tgt);
    break;
  case DUA_TASK_LISTOPS:
    dua_listops_generate(c, r, tok, tgt);
    break;
  case DUA_TASK_LISTOPS_PAPER:
    dua_listops_paper_generate(c, r, tok, tgt);
    break;
  default:
    dua_dyck_lm_generate(c, r, tok, tgt);
    break;
  }
}

/* Sorted copy of the test set, for membership by binary search. */
static int32_t sort_len;
static int cmp_row(const void *a, const void *b) {
  return memcmp(a, b, (size_t)sort_len * 4);
}

/* Checks the test set (distinct, every example valid) and `steps` training batches (valid, none in the
 * test set); returns the number of training examples that were in the test set (0) and fills histograms. */
static void check_task(const dua_trainer_config *c, int steps, int32_t batch, histo *test_h, histo *train_h,
                       double *raw_hit_rate) {
  dua_task *t = make_task(c);
  const int32_t S = c->seq_len, n = dua_task_test_size(t);
  ck_assert_int_eq(n, c->test_size);
  int32_t *tt = malloc((size_t)n * S * 4), *tg = malloc((size_t)n * S * 4);
  int32_t *bt = malloc((size_t)batch * S * 4), *bg = malloc((size_t)batch * S * 4);
  REQUIRE(tt && tg && bt && bg, "out of memory");
  /* in two pieces, to exercise first/count */
  dua_task_test_examples(t, 0, n / 2, tt, tg);
  dua_task_test_examples(t, n / 2, n - n / 2, tt + (size_t)(n / 2) * S, tg + (size_t)(n / 2) * S);
  char where[96];
  for (int32_t i = 0; i < n; i++) {
    snprintf(where, sizeof where, "test example %d", i);
    check_example(c, tt + (size_t)i * S, tg + (size_t)i * S, test_h, where);
  }
  sort_len = S;
  qsort(tt, (size_t)n, (size_t)S * 4, cmp_row);
  if (c->task != DUA_TASK_LISTOPS_PAPER) /* listops-paper keeps the repeats of its i.i.d. test set */
    for (int32_t i = 1; i < n; i++)
      REQUIRE(memcmp(tt + (size_t)(i - 1) * S, tt + (size_t)i * S, (size_t)S * 4) != 0,
              "the test set holds an example twice");
  for (int step = 0; step < steps; step++) {
    dua_task_train_batch(t, (uint64_t)step, batch, bt, bg);
    for (int32_t i = 0; i < batch; i++) {
      snprintf(where, sizeof where, "step %d example %d", step, i);
      check_example(c, bt + (size_t)i * S, bg + (size_t)i * S, train_h, where);
      REQUIRE(bsearch(bt + (size_t)i * S, tt, (size_t)n, (size_t)S * 4, cmp_row) == NULL,
              "%s equals a test example", where);
    }
  }
  if (raw_hit_rate) { /* the share of undeduplicated draws that are test examples */
    dua_task_rng r;
    dua_task_rng_seed(&r, test_seed());
    int hits = 0;
    for (int i = 0; i < 20000; i++) {
      raw_generate(c, &r, bt, bg);
      hits += bsearch(bt, tt, (size_t)n, (size_t)S * 4, cmp_row) != NULL;
    }
    *raw_hit_rate = hits / 20000.0;
  }
  free(tt);
  free(tg);
  free(bt);
  free(bg);
  dua_task_destroy(t);
}

START_TEST(test_dyck_default) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.seed = test_seed();
  static histo test_h, train_h;
  memset(&test_h, 0, sizeof test_h);
  memset(&train_h, 0, sizeof train_h);
  check_task(&c, 2000, 64, &test_h, &train_h, NULL); /* a whole default run */
  dua_task *t = make_task(&c);
  ck_assert_int_eq(dua_task_vocab_size(t), 5);
  ck_assert_str_eq(dua_task_token_name(t, 0), "PAD");
  ck_assert_str_eq(dua_task_token_name(t, 1), "(");
  ck_assert_str_eq(dua_task_token_name(t, 4), "]");
  ck_assert_str_eq(dua_task_token_name(t, 5), "?");
  print_histo("Dyck-2 S=32 max depth 8, test set", &test_h, t, c.seq_len);
  print_histo("Dyck-2 S=32 max depth 8, 2000 train batches of 64", &train_h, t, c.seq_len);
  dua_task_destroy(t);
  /* varied: many lengths and depths, both answers common, most prefixes end on a closer */
  int lengths = 0, depths = 0;
  for (int i = 0; i < HMAX; i++) {
    lengths += train_h.length[i] > 0;
    depths += train_h.depth[i] > 0;
  }
  ck_assert_int_ge(lengths, 25);
  ck_assert_int_ge(depths, 7);
  ck_assert(train_h.cls[3] > train_h.examples / 3 && train_h.cls[4] > train_h.examples / 3);
  ck_assert(train_h.closer_last > train_h.examples / 2);
}
END_TEST

/* Other shapes: Dyck-1, Dyck-8 with deep nesting, the shortest sequences. */
START_TEST(test_dyck_shapes) {
  static const int32_t shapes[][4] = {/* seq_len, kinds, max depth, test size */
                                      {16, 1, 4, 25},
                                      {64, 8, 20, 1000},
                                      {8, 2, 7, 12},
                                      {128, 3, 1, 500},
                                      {256, 4, 64, 300}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    dua_trainer_config c =
        dyck_config(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], test_seed() + s);
    check_task(&c, 40, 32, NULL, NULL, NULL);
  }
}
END_TEST

START_TEST(test_listops) {
  static const int32_t lengths[] = {128, 32, 8, 512};
  for (size_t s = 0; s < sizeof lengths / sizeof lengths[0]; s++) {
    /* S = 8 only has room for flat expressions: a few thousand, mostly of 2 arguments */
    dua_trainer_config c = listops_config(lengths[s], lengths[s] == 8 ? 200 : 2000, test_seed() + 7 * s);
    static histo test_h, train_h;
    memset(&test_h, 0, sizeof test_h);
    memset(&train_h, 0, sizeof train_h);
    check_task(&c, lengths[s] >= 128 ? 300 : 1000, 64, &test_h, &train_h, NULL);
    dua_task *t = make_task(&c);
    ck_assert_int_eq(dua_task_vocab_size(t), 18);
    ck_assert_str_eq(dua_task_token_name(t, 15), "SUMMOD");
    ck_assert_str_eq(dua_task_token_name(t, 17), "=");
    ck_assert_str_eq(dua_task_token_name(t, -1), "?");
    char title[96];
    snprintf(title, sizeof title, "ListOps S=%d, train batches", (int)lengths[s]);
    print_histo(title, &train_h, t, c.seq_len);
    dua_task_destroy(t);
    if (lengths[s] >= 32) /* room to nest: most examples are nested, all depths occur */
      ck_assert(train_h.nested > train_h.examples * 3 / 4);
    if (lengths[s] >= 32)
      for (int d = 1; d <= 5; d++)
        ck_assert_int_gt(train_h.depth[d], 0);
    for (int v = 0; v < 10; v++) /* every answer occurs */
      ck_assert_int_gt(train_h.cls[1 + v], 0);
  }
}
END_TEST

/* ---------------------------------------------------------------- listops-paper: exact distribution */

/* The paper's generator in words: an argument at level L (root L = 1) is a digit when L >= 5 or, for L > 1,
 * with probability 0.7, else an operator with n = 2..4 (uniform) arguments at level L + 1. dist[k][len] =
 * P(bracket depth <= k and length len) of the root expression (without '='), from the recursion
 *   G_L[k][len] = leaf_L [len == 1] + (1 - leaf_L) [k >= 1] mean_n conv^n(G_{L+1}[k - 1])[len - 3],
 * derived here from that description, not from the generator's code. */
#define PAPER_LEN 512
static double paper_dist[5][PAPER_LEN]; /* root, [k = 0..4][len] */

static void conv_power_mean(const double *g,
                            double *out) { /* out = mean over n = 2..4 of g^{*n}, shifted 3 */
  static double p1[PAPER_LEN], p2[PAPER_LEN];
  memcpy(p1, g, sizeof p1);
  memset(out, 0, PAPER_LEN * sizeof *out);
  for (int n = 2; n <= 4; n++) {
    memset(p2, 0, sizeof p2);
    for (int a = 0; a < PAPER_LEN; a++)
      if (p1[a] != 0.0)
        for (int b = 0; a + b < PAPER_LEN; b++)
          p2[a + b] += p1[a] * g[b];
    memcpy(p1, p2, sizeof p1);
    for (int len = 3; len < PAPER_LEN; len++)
      out[len] += p1[len - 3] / 3.0;
  }
}

static void paper_distribution(void) {
  static double arg[6][5][PAPER_LEN]; /* [level 2..5][k][len] */
  static double tmp[PAPER_LEN];
  memset(arg, 0, sizeof arg);
  for (int k = 0; k <= 4; k++)
    arg[5][k][1] = 1.0; /* level 5: always a digit */
  for (int L = 4; L >= 2; L--)
    for (int k = 0; k <= 4; k++) {
      arg[L][k][1] = 0.7;
      if (k >= 1) {
        conv_power_mean(arg[L + 1][k - 1], tmp);
        for (int len = 0; len < PAPER_LEN; len++)
          arg[L][k][len] += 0.3 * tmp[len];
      }
    }
  memset(paper_dist, 0, sizeof paper_dist);
  for (int k = 1; k <= 4; k++)
    conv_power_mean(arg[2][k - 1], paper_dist[k]);
}

/* P(depth == k | length with '=' <= S) for k = 1..4, and P(length with '=' <= S). */
static double paper_depth_given(int k, int32_t S, double *accept) {
  double in = 0.0, below = 0.0, all = 0.0;
  for (int len = 0; len < PAPER_LEN && len + 1 <= S; len++) {
    in += paper_dist[k][len];
    below += paper_dist[k - 1][len];
    all += paper_dist[4][len];
  }
  if (accept)
    *accept = all;
  return (in - below) / all;
}

/* The flat fraction and the depth histogram of 20000 examples of the task's test set (i.i.d. draws for
 * listops-paper) against the exact values, at seq_len 512 (never redrawn), 128 (the paper's; 6 draws in
 * 10^6 are redrawn) and 24 (a quarter redrawn, so the exact values are conditional on the length); every
 * example checked by the evaluator above. The tolerance is 5 binomial standard deviations, sqrt(p (1 - p) /
 * 20000) <= 0.0035, i.e. at most 0.018 (a false failure about once in 3.5 million checks); a generator with
 * leaf probability 0.6 instead of 0.7 (flat 0.235) or 2-3 arguments instead of 2-4 (flat 0.417) is off by 35
 * or 17 standard deviations. */
START_TEST(test_listops_paper_distribution) {
  paper_distribution();
  double total = 0.0;
  for (int len = 0; len < PAPER_LEN; len++)
    total += paper_dist[4][len];
  ck_assert_msg(fabs(total - 1.0) < 1e-12, "the exact distribution sums to %.15f", total);
  const double flat = (0.7 * 0.7 + 0.7 * 0.7 * 0.7 + 0.7 * 0.7 * 0.7 * 0.7) / 3.0; /* 0.3577 */
  ck_assert_msg(fabs(paper_depth_given(1, 512, NULL) - flat) < 1e-12, "flat %.6f vs mean 0.7^n %.6f",
                paper_depth_given(1, 512, NULL), flat);
  static const int32_t lengths[] = {512, 128, 24};
  for (int s = 0; s < 3; s++) {
    const int32_t S = lengths[s], N = 20000;
    dua_trainer_config c = listops_config(S, N, test_seed() + 11 * s);
    c.task = DUA_TASK_LISTOPS_PAPER;
    dua_task *t = make_task(&c);
    ck_assert_int_eq(dua_task_test_size(t), N);
    ck_assert_int_eq(dua_task_vocab_size(t), 18);
    int32_t *tt = malloc((size_t)N * S * 4), *tg = malloc((size_t)N * S * 4);
    ck_assert(tt && tg);
    dua_task_test_examples(t, 0, N, tt, tg);
    static histo h;
    memset(&h, 0, sizeof h);
    char where[64];
    for (int32_t i = 0; i < N; i++) {
      snprintf(where, sizeof where, "S=%d test example %d", (int)S, (int)i);
      check_example(&c, tt + (size_t)i * S, tg + (size_t)i * S, &h, where);
    }
    double accept;
    paper_depth_given(1, S, &accept);
    fprintf(stderr, "listops-paper S=%d: %d test examples (i.i.d.), P(length <= S) = %.6f\n  depth:", (int)S,
            (int)N, accept);
    for (int k = 1; k <= 4; k++) {
      const double want = paper_depth_given(k, S, NULL), got = (double)h.depth[k] / N;
      const double tol = 5.0 * sqrt(want * (1.0 - want) / N);
      fprintf(stderr, " %d: %.4f (exact %.4f +- %.4f)", k, got, want, tol);
      ck_assert_msg(fabs(got - want) <= tol,
                    "S=%d: depth %d in %.4f of the examples, exact %.4f (tolerance %.4f)", (int)S, k, got,
                    want, tol);
    }
    fprintf(stderr, "\n  flat (a single operator): %.4f\n", (double)h.depth[1] / N);
    ck_assert_int_eq(h.depth[0] + h.depth[5], 0);
    /* repeats are kept: the 400 two-argument flat expressions make up 16% of the draws */
    sort_len = S;
    qsort(tt, (size_t)N, (size_t)S * 4, cmp_row);
    int repeats = 0;
    for (int32_t i = 1; i < N; i++)
      repeats += memcmp(tt + (size_t)(i - 1) * S, tt + (size_t)i * S, (size_t)S * 4) == 0;
    fprintf(stderr, "  repeated test examples (kept): %d\n", repeats);
    ck_assert_int_gt(repeats, 1000);
    /* training never sees a test example */
    int32_t *bt = malloc((size_t)64 * S * 4), *bg = malloc((size_t)64 * S * 4);
    ck_assert(bt && bg);
    for (int step = 0; step < 100; step++) {
      dua_task_train_batch(t, (uint64_t)step, 64, bt, bg);
      for (int32_t i = 0; i < 64; i++) {
        snprintf(where, sizeof where, "S=%d step %d example %d", (int)S, step, (int)i);
        check_example(&c, bt + (size_t)i * S, bg + (size_t)i * S, NULL, where);
        REQUIRE(bsearch(bt + (size_t)i * S, tt, (size_t)N, (size_t)S * 4, cmp_row) == NULL,
                "%s equals a test example", where);
      }
    }
    free(bt);
    free(bg);
    free(tt);
    free(tg);
    dua_task_destroy(t);
  }
}
END_TEST

/* ---------------------------------------------------------------- dyck-lm */

static dua_trainer_config dyck_lm_config(int32_t seq_len, int32_t kinds, int32_t max_depth, int32_t test_size,
                                         uint64_t seed) {
  dua_trainer_config c = dyck_config(seq_len, kinds, max_depth, test_size, seed);
  c.task = DUA_TASK_DYCK_LM;
  return c;
}

/* Every example of the test set and of training batches is a balanced Dyck-k word of exactly S tokens
 * within the depth bound, with the shifted tokens as targets (the recognizer above), over long and short
 * sequences; training never holds a test example. At the positions where the rule allows both an opener and
 * a closer, openers come with probability 0.5 and opener kinds are uniform (5 binomial standard
 * deviations); a depth bound up to sqrt(S) is reached. Prints the closer-distance histogram and the accuracy
 * the generator's own predictor would get (the ceiling of the all-target accuracy). */
START_TEST(test_dyck_lm) {
  static const int32_t shapes[][5] = {/* seq_len, kinds, max depth, test size, train steps */
                                      {1024, 2, 8, 200, 20}, {4096, 2, 64, 40, 6}, {2048, 8, 1024, 40, 6},
                                      {8, 1, 4, 3, 200},     {64, 3, 1, 100, 100}, {128, 1, 64, 200, 50}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const int32_t S = shapes[s][0], k = shapes[s][1], depth = shapes[s][2];
    dua_trainer_config c = dyck_lm_config(S, k, depth, shapes[s][3], test_seed() + 13 * s);
    check_task(&c, shapes[s][4], 16, NULL, NULL, NULL);
    dua_task *t = make_task(&c);
    ck_assert_int_eq(dua_task_vocab_size(t), 1 + 2 * k);
    ck_assert_str_eq(dua_task_token_name(t, 1), "(");
    ck_assert_str_eq(dua_task_token_name(t, 1 + k), ")");
    /* statistics over test examples and training batches */
    static lm_stats st;
    memset(&st, 0, sizeof st);
    const int32_t n = dua_task_test_size(t), B = 16;
    int32_t *tok = malloc((size_t)(n > B ? n : B) * S * 4), *tgt = malloc((size_t)(n > B ? n : B) * S * 4);
    ck_assert(tok && tgt);
    dua_task_test_examples(t, 0, n, tok, tgt);
    char where[64];
    for (int32_t i = 0; i < n; i++) {
      snprintf(where, sizeof where, "S=%d test example %d", (int)S, (int)i);
      check_dyck_lm(tok + (size_t)i * S, tgt + (size_t)i * S, S, k, depth, &st, where);
    }
    for (int step = 0; step < 200 && st.free_positions < 200000; step++) {
      dua_task_train_batch(t, (uint64_t)step, B, tok, tgt);
      for (int32_t i = 0; i < B; i++) {
        snprintf(where, sizeof where, "S=%d step %d example %d", (int)S, step, (int)i);
        check_dyck_lm(tok + (size_t)i * S, tgt + (size_t)i * S, S, k, depth, &st, where);
      }
    }
    free(tok);
    free(tgt);
    fprintf(stderr,
            "dyck-lm S=%d k=%d depth <= %d: %ld words, %ld free positions (opener share %.4f), %ld forced, "
            "%.1f%% of the words reach the depth bound; best possible accuracy %.4f\n  closer distance "
            "(2^b..2^(b+1)-1):",
            (int)S, (int)k, (int)depth, st.words, st.free_positions,
            (double)st.free_opens / (double)(st.free_positions ? st.free_positions : 1), st.forced,
            100.0 * st.deepest_hits / st.words, st.best_correct / (double)st.targets);
    for (int b = 0; b < 32; b++)
      if (st.dist[b])
        fprintf(stderr, " %d:%ld", b, st.dist[b]);
    fprintf(stderr, "\n");
    if (S >= 64 &&
        st.free_positions >
            0) { /* (at S = 8 the 14 words of Dyck-1 are few: redrawing the 3 test words skews them) */
      const double p = (double)st.free_opens / st.free_positions;
      const double tol = 5.0 * sqrt(0.25 / st.free_positions);
      ck_assert_msg(fabs(p - 0.5) <= tol, "S=%d: opener share %.4f at free positions, want 0.5 +- %.4f",
                    (int)S, p, tol);
      long openers = 0;
      for (int i = 0; i < k; i++)
        openers += st.kinds[i];
      for (int i = 0; i < k; i++) {
        const double q = 1.0 / k, got = (double)st.kinds[i] / openers;
        const double kt = 5.0 * sqrt(q * (1 - q) / openers);
        ck_assert_msg(fabs(got - q) <= kt, "S=%d: opener kind %d has share %.4f, want %.4f +- %.4f", (int)S,
                      i, got, q, kt);
      }
    }
    if ((long)depth * depth <= S) /* a bound within the walk's reach (about sqrt(S)) is reached */
      ck_assert_int_gt(st.deepest_hits, 0);
    dua_task_destroy(t);
  }
}
END_TEST

/* A small example space: the test set is a large share of it, so training draws hit test examples often
 * and must be redrawn; none may get through. */
START_TEST(test_disjoint_small_space) {
  double rate[4];
  dua_trainer_config c = dyck_config(16, 1, 4, 25, test_seed());
  check_task(&c, 1000, 64, NULL, NULL, &rate[0]);
  c = dyck_config(8, 2, 7, 12, test_seed());
  check_task(&c, 1000, 64, NULL, NULL, &rate[1]);
  c = listops_config(8, 200, test_seed());
  check_task(&c, 1000, 64, NULL, NULL, &rate[2]);
  c.task = DUA_TASK_LISTOPS_PAPER; /* 4400 flat expressions fit S = 8 */
  check_task(&c, 1000, 64, NULL, NULL, &rate[3]);
  fprintf(stderr,
          "share of raw draws in the test set (all redrawn): Dyck-1 S=16 %.1f%%, Dyck-2 S=8 %.1f%%, ListOps "
          "S=8 %.1f%%, listops-paper S=8 %.1f%%\n",
          100 * rate[0], 100 * rate[1], 100 * rate[2], 100 * rate[3]);
  for (int i = 0; i < 4; i++)
    ck_assert(rate[i] > 0.05);
}
END_TEST

/* Test sets that cannot be filled, or that would leave training almost nothing, are refused. */
START_TEST(test_test_set_too_large) {
  dua_task *t = (dua_task *)1;
  char err[512] = "";
  dua_trainer_config c = dyck_config(8, 1, 3, 2000, test_seed());
  ck_assert_int_eq(dua_task_create(&c, NULL, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_null(t);
  ck_assert_msg(strstr(err, "test_size") != NULL, "%s", err);
  fprintf(stderr, "refused: %s\n", err);
  c = dyck_config(10, 1, 3, 100, test_seed()); /* fillable, but most draws are test examples */
  ck_assert_int_eq(dua_task_create(&c, NULL, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "test_size") != NULL, "%s", err);
  fprintf(stderr, "refused: %s\n", err);
  c.seq_len = 4; /* bad config: named */
  ck_assert_int_eq(dua_task_create(&c, NULL, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "seq_len") != NULL, "%s", err);
  ck_assert_int_eq(dua_task_create(NULL, NULL, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_task_create(&c, NULL, NULL, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  dua_task_destroy(NULL);
}
END_TEST

/* Batches are a pure function of (seed, step): same inputs give the same batch from two task objects, in
 * any order; different steps or seeds differ; the test set depends on the seed only. */
START_TEST(test_determinism) {
  for (int task = 0; task < 4; task++) {
    dua_trainer_config c = task == 0 || task == 3 ? dyck_config(32, 2, 8, 500, test_seed())
                                                  : listops_config(64, 500, test_seed());
    c.task = task; /* dyck, listops, listops-paper, dyck-lm */
    dua_task *a = make_task(&c), *b = make_task(&c);
    const int32_t S = c.seq_len, B = 16;
    size_t n = (size_t)B * S;
    int32_t *t1 = malloc(n * 4), *g1 = malloc(n * 4), *t2 = malloc(n * 4), *g2 = malloc(n * 4);
    int32_t *tt1 = malloc(500 * (size_t)S * 4), *tt2 = malloc(500 * (size_t)S * 4);
    ck_assert(t1 && g1 && t2 && g2 && tt1 && tt2);
    dua_task_test_examples(a, 0, 500, tt1, NULL);
    dua_task_test_examples(b, 0, 500, tt2, NULL);
    ck_assert(memcmp(tt1, tt2, 500 * (size_t)S * 4) == 0);
    static const uint64_t steps[] = {0, 1, 2, 1000, 123456789, UINT64_MAX};
    for (int i = 0; i < 6; i++) {
      dua_task_train_batch(a, steps[i], B, t1, g1);
      dua_task_train_batch(b, steps[5 - i], B, t2, g2); /* other order: no hidden state */
      dua_task_train_batch(b, steps[i], B, t2, g2);
      ck_assert(memcmp(t1, t2, n * 4) == 0 && memcmp(g1, g2, n * 4) == 0);
      /* a smaller batch is a prefix of the larger one */
      dua_task_train_batch(b, steps[i], B / 2, t2, g2);
      ck_assert(memcmp(t1, t2, n * 2) == 0);
    }
    int same_rows = 0;
    dua_task_train_batch(a, 7, B, t1, g1);
    dua_task_train_batch(a, 8, B, t2, g2);
    ck_assert(memcmp(t1, t2, n * 4) != 0);
    for (int32_t i = 0; i < B; i++)
      same_rows += memcmp(t1 + (size_t)i * S, t2 + (size_t)i * S, (size_t)S * 4) == 0;
    ck_assert_int_le(same_rows, 2);
    /* another seed: other batches and another test set */
    dua_trainer_config c2 = c;
    c2.seed = c.seed + 1;
    dua_task *d = make_task(&c2);
    dua_task_train_batch(d, 7, B, t2, g2);
    ck_assert(memcmp(t1, t2, n * 4) != 0);
    dua_task_test_examples(d, 0, 500, tt2, NULL);
    ck_assert(memcmp(tt1, tt2, 500 * (size_t)S * 4) != 0);
    /* out-of-range requests write nothing */
    memset(tt2, 0x7f, (size_t)S * 4);
    dua_task_test_examples(d, 499, 2, tt2, NULL);
    dua_task_test_examples(d, -1, 1, tt2, NULL);
    ck_assert_int_eq(tt2[0], 0x7f7f7f7f);
    free(t1);
    free(g1);
    free(t2);
    free(g2);
    free(tt1);
    free(tt2);
    dua_task_destroy(a);
    dua_task_destroy(b);
    dua_task_destroy(d);
  }
}
END_TEST

/* The loader gives exactly dua_task_train_batch's batches, from any first step, for NUMA nodes known,
 * unknown and "all"; requests out of order are refused. */
START_TEST(test_loader) {
  dua_trainer_config c =
      _i == 0 ? dyck_config(32, 2, 8, 300, test_seed()) : listops_config(128, 300, test_seed());
  dua_task *t = make_task(&c);
  const int32_t S = c.seq_len, B = 24;
  size_t n = (size_t)B * S;
  int32_t *t1 = malloc(n * 4), *g1 = malloc(n * 4), *t2 = malloc(n * 4), *g2 = malloc(n * 4);
  ck_assert(t1 && g1 && t2 && g2);
  static const int nodes[] = {-1, 0, 999};
  for (int k = 0; k < 3; k++) {
    uint64_t first = k == 0 ? 0 : 1000 + (uint64_t)k;
    dua_loader *l = NULL;
    ck_assert_int_eq(dua_loader_create(t, B, nodes[k], first, &l), DUA_SUCCESS);
    ck_assert_int_eq(dua_loader_next(l, first + 1, t1, g1), DUA_ERROR_INVALID_ARGUMENT); /* out of order */
    for (uint64_t s = first; s < first + 60; s++) {
      ck_assert_int_eq(dua_loader_next(l, s, t1, g1), DUA_SUCCESS);
      dua_task_train_batch(t, s, B, t2, g2);
      ck_assert_msg(memcmp(t1, t2, n * 4) == 0 && memcmp(g1, g2, n * 4) == 0, "loader step %llu differs",
                    (unsigned long long)s);
    }
    ck_assert_int_eq(dua_loader_next(l, first, t1, g1), DUA_ERROR_INVALID_ARGUMENT); /* again */
    ck_assert_int_eq(dua_loader_next(l, first + 60, NULL, g1), DUA_ERROR_INVALID_ARGUMENT);
    dua_loader_destroy(l);
  }
  /* destroyed while the producer is ahead or busy */
  dua_loader *l = NULL;
  ck_assert_int_eq(dua_loader_create(t, B, -1, 5, &l), DUA_SUCCESS);
  dua_loader_destroy(l);
  ck_assert_int_eq(dua_loader_create(t, B, -1, 5, &l), DUA_SUCCESS);
  ck_assert_int_eq(dua_loader_next(l, 5, t1, g1), DUA_SUCCESS);
  dua_loader_destroy(l);
  dua_loader_destroy(NULL);
  ck_assert_int_eq(dua_loader_create(NULL, B, -1, 0, &l), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_loader_create(t, 0, -1, 0, &l), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(dua_loader_create(t, B, -1, 0, NULL), DUA_ERROR_INVALID_ARGUMENT);
  free(t1);
  free(g1);
  free(t2);
  free(g2);
  dua_task_destroy(t);
}
END_TEST

/* ---------------------------------------------------------------- text corpus */

static char text_dir[256];

static void text_dir_make(void) {
  const char *base = getenv("TMPDIR");
  snprintf(text_dir, sizeof text_dir, "%s/dua_text_XXXXXX", base && *base ? base : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(text_dir));
}

static void text_dir_remove(void) {
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", text_dir);
  ck_assert_int_eq(system(cmd), 0);
}

static void text_path(char *out, size_t size, const char *name) {
  snprintf(out, size, "%s/%s", text_dir, name);
}

static void write_file(const char *path, const unsigned char *data, size_t n) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f != NULL, "cannot write %s", path);
  REQUIRE(n == 0 || fwrite(data, 1, n, f) == n, "short write");
  REQUIRE(fclose(f) == 0, "close");
}

/* A UTF-8 text of about n bytes (never more): seeded random words of 1-, 2-, 3- and 4-byte characters
 * ("ab", "é", "日本", "𝄞") with spaces and newlines, so windows rarely repeat. Returns the length. */
static size_t make_text(unsigned char *out, size_t n, uint64_t seed) {
  static const char *const pieces[] = {"a",
                                       "b",
                                       "c",
                                       "d",
                                       "e",
                                       "t",
                                       "s",
                                       "\xC3\xA9",
                                       "\xC3\xBC",
                                       "\xE6\x97\xA5",
                                       "\xE6\x9C\xAC",
                                       "\xF0\x9D\x84\x9E",
                                       "\xE2\x82\xAC",
                                       "o",
                                       "n",
                                       "r"};
  test_rng r = test_rng_make(seed);
  size_t len = 0;
  for (;;) {
    const char *p = test_rng_int(&r, 0, 9) == 0 ? (test_rng_int(&r, 0, 7) == 0 ? "\n" : " ")
                                                : pieces[test_rng_int(&r, 0, 15)];
    size_t k = strlen(p);
    if (len + k > n)
      break;
    memcpy(out + len, p, k);
    len += k;
  }
  return len;
}

static dua_trainer_config text_config(int32_t seq_len, int32_t test_size, uint64_t seed) {
  dua_trainer_config c;
  dua_trainer_config_init(&c);
  c.task = DUA_TASK_TEXT;
  c.seq_len = seq_len;
  c.test_size = test_size;
  c.seed = seed;
  return c;
}

/* dua_task_create on the corpus at path (or a record); returns the status, the message in err. */
static dua_status text_task(const dua_trainer_config *c, const char *path, dua_task **t, char *err,
                            size_t err_size) {
  dua_task_corpus corpus;
  memset(&corpus, 0, sizeof corpus);
  corpus.path = path;
  *t = NULL;
  err[0] = '\0';
  return dua_task_create(c, &corpus, t, err, err_size);
}

/* Offset of window (tokens [S], targets [S]) in data: the unique o with tokens = data[o, o + S) and targets
 * = data[o + 1, o + S] inside [lo, hi - S - 1]; -1 if none. */
static long find_window(const unsigned char *data, size_t lo, size_t hi, const int32_t *tok,
                        const int32_t *tgt, int32_t S) {
  for (size_t o = lo; o + (size_t)S + 1 <= hi; o++) {
    int32_t i = 0;
    while (i < S && tok[i] == data[o + i] && tgt[i] == data[o + i + 1])
      i++;
    if (i == S)
      return (long)o;
  }
  return -1;
}

/* Windows of a multi-byte UTF-8 corpus: the split (last tenth, moved back to a character start) computed
 * here; every training window is S + 1 consecutive bytes of the training region, tokens then next bytes;
 * the test windows lie in the held-out region, spread from its start to the file's end, their targets
 * disjoint; training is a pure function of (seed, step), the test set depends on the file only; no
 * training window equals a test window; token names are the bytes, escaped. */
START_TEST(test_text_windows) {
  text_dir_make();
  static unsigned char data[40000];
  char path[512], err[1024];
  /* the naive cut lands inside a 4-byte character: the split must move back to its first byte */
  size_t n = make_text(data, 30000, 77);
  size_t cut = n - n / 10;
  while ((data[cut] & 0xC0) != 0x80 || (data[cut - 1] & 0xC0) != 0x80) { /* a cut inside a 3/4-byte char */
    data[n++] = 'x';
    cut = n - n / 10;
  }
  text_path(path, sizeof path, "corpus.txt");
  write_file(path, data, n);
  size_t want_train = cut;
  while ((data[want_train] & 0xC0) == 0x80)
    want_train--;
  const int32_t S = 64, N = 40;
  dua_trainer_config c = text_config(S, N, test_seed());
  dua_task *t = NULL;
  ck_assert_msg(text_task(&c, path, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  ck_assert_int_eq(dua_task_vocab_size(t), 256);
  dua_text_corpus_info info;
  ck_assert_int_eq(dua_task_text_corpus(t, &info), DUA_SUCCESS);
  ck_assert_uint_eq(info.bytes, n);
  ck_assert_uint_eq(info.train_bytes, want_train);
  ck_assert_uint_eq(info.heldout_bytes, n - want_train);
  ck_assert_msg(want_train < cut, "the test corpus does not exercise the move to a character start");
  ck_assert(info.path[0] == '/' && strstr(info.path, "corpus.txt") != NULL);
  /* SHA-256 of the file, computed here */
  {
    unsigned char d[32];
    unsigned int dl = 32;
    ck_assert_int_eq(EVP_Digest(data, n, d, &dl, EVP_sha256(), NULL), 1);
    ck_assert(memcmp(d, info.sha256, 32) == 0);
  }
  ck_assert_str_eq(dua_task_token_name(t, 'a'), "a");
  ck_assert_str_eq(dua_task_token_name(t, ' '), " ");
  ck_assert_str_eq(dua_task_token_name(t, '\n'), "\\n");
  ck_assert_str_eq(dua_task_token_name(t, '\\'), "\\\\");
  ck_assert_str_eq(dua_task_token_name(t, 0xC3), "\\xC3");
  ck_assert_str_eq(dua_task_token_name(t, 0), "\\x00");
  ck_assert_str_eq(dua_task_token_name(t, 256), "?");
  /* test set */
  ck_assert_int_eq(dua_task_test_size(t), N);
  int32_t *tt = malloc((size_t)N * S * 4), *tg = malloc((size_t)N * S * 4);
  ck_assert(tt && tg);
  dua_task_test_examples(t, 0, N, tt, tg);
  long prev = -1;
  for (int32_t i = 0; i < N; i++) {
    long o = find_window(data, want_train, n, tt + (size_t)i * S, tg + (size_t)i * S, S);
    REQUIRE(o >= 0, "test window %d is not S + 1 bytes of the held-out region", (int)i);
    REQUIRE(i == 0 || o >= prev + S, "test windows %d and %d overlap in their targets (%ld, %ld)", (int)i - 1,
            (int)i, prev, o);
    if (i == 0)
      ck_assert_int_eq(o, (long)want_train);
    if (i == N - 1)
      ck_assert_int_eq(o + S + 1, (long)n);
    prev = o;
  }
  /* training windows: in the training region, seeded by (seed, step), never a test window */
  sort_len = S;
  qsort(tt, (size_t)N, (size_t)S * 4, cmp_row);
  const int32_t B = 16;
  int32_t *bt = malloc((size_t)B * S * 4), *bg = malloc((size_t)B * S * 4), *bt2 = malloc((size_t)B * S * 4),
          *bg2 = malloc((size_t)B * S * 4);
  ck_assert(bt && bg && bt2 && bg2);
  long lowest = (long)n, highest = -1;
  for (int step = 0; step < 40; step++) {
    dua_task_train_batch(t, (uint64_t)step, B, bt, bg);
    for (int32_t i = 0; i < B; i++) {
      long o = find_window(data, 0, want_train, bt + (size_t)i * S, bg + (size_t)i * S, S);
      REQUIRE(o >= 0, "step %d window %d is not S + 1 bytes of the training region", step, (int)i);
      lowest = o < lowest ? o : lowest;
      highest = o > highest ? o : highest;
      REQUIRE(bsearch(bt + (size_t)i * S, tt, (size_t)N, (size_t)S * 4, cmp_row) == NULL,
              "step %d window %d equals a test window", step, (int)i);
    }
  }
  ck_assert_int_lt(lowest, (long)want_train / 10); /* the offsets cover the region */
  ck_assert_int_gt(highest, (long)want_train * 9 / 10);
  /* determinism: another task on the same file and seed gives the same batches and test set; another seed
   * other batches and the same test set */
  dua_task *t2 = NULL;
  ck_assert_msg(text_task(&c, path, &t2, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_task_train_batch(t, 123456789, B, bt, bg);
  dua_task_train_batch(t2, 5, B, bt2, bg2);
  dua_task_train_batch(t2, 123456789, B, bt2, bg2);
  ck_assert(memcmp(bt, bt2, (size_t)B * S * 4) == 0 && memcmp(bg, bg2, (size_t)B * S * 4) == 0);
  dua_task_destroy(t2);
  c.seed++;
  ck_assert_msg(text_task(&c, path, &t2, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_task_train_batch(t2, 123456789, B, bt2, bg2);
  ck_assert(memcmp(bt, bt2, (size_t)B * S * 4) != 0);
  int32_t *tt2 = malloc((size_t)N * S * 4);
  ck_assert_ptr_nonnull(tt2);
  dua_task_test_examples(t, 0, N, tt, NULL);
  dua_task_test_examples(t2, 0, N, tt2, NULL);
  ck_assert(memcmp(tt, tt2, (size_t)N * S * 4) == 0);
  free(tt2);
  dua_task_destroy(t2);
  free(bt);
  free(bg);
  free(bt2);
  free(bg2);
  free(tt);
  free(tg);
  dua_task_destroy(t);
  text_dir_remove();
}
END_TEST

/* A corpus whose held-out text also occurs in the training region: training draws hit test windows and are
 * redrawn; none gets through. */
START_TEST(test_text_disjoint_repeated) {
  text_dir_make();
  static unsigned char data[4000];
  char path[512], err[1024];
  const int32_t S = 16;
  size_t n = make_text(data, 1800, 78);
  for (size_t i = 0; i < n; i++) /* ASCII, so that copies cut no character */
    if (data[i] >= 0x80)
      data[i] = (unsigned char)('f' + data[i] % 8);
  n = (size_t)(n / 9) * 9; /* 9 tenths of training text, then a copy of a piece of it as the held-out tenth */
  const size_t tenth = n / 9;
  memcpy(data + n, data + 100, tenth);
  n += tenth;
  text_path(path, sizeof path, "repeat.txt");
  write_file(path, data, n);
  dua_trainer_config c = text_config(S, 8, test_seed());
  dua_task *t = NULL;
  ck_assert_msg(text_task(&c, path, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  const int32_t N = dua_task_test_size(t), B = 64;
  int32_t *tt = malloc((size_t)N * S * 4), *bt = malloc((size_t)B * S * 4), *bg = malloc((size_t)B * S * 4);
  ck_assert(tt && bt && bg);
  dua_task_test_examples(t, 0, N, tt, NULL);
  sort_len = S;
  qsort(tt, (size_t)N, (size_t)S * 4, cmp_row);
  /* raw draws: how many training offsets give a test window */
  dua_text_corpus_info info;
  ck_assert_int_eq(dua_task_text_corpus(t, &info), DUA_SUCCESS);
  long hits_possible = 0;
  for (size_t o = 0; o + (size_t)S + 1 <= info.train_bytes; o++) {
    int32_t w[64];
    for (int32_t i = 0; i < S; i++)
      w[i] = data[o + i];
    hits_possible += bsearch(w, tt, (size_t)N, (size_t)S * 4, cmp_row) != NULL;
  }
  fprintf(stderr, "text: %ld of %llu training offsets hold a test window (all redrawn)\n", hits_possible,
          (unsigned long long)(info.train_bytes - (uint64_t)S));
  ck_assert_int_ge(hits_possible, N);
  for (int step = 0; step < 300; step++) {
    dua_task_train_batch(t, (uint64_t)step, B, bt, bg);
    for (int32_t i = 0; i < B; i++)
      REQUIRE(bsearch(bt + (size_t)i * S, tt, (size_t)N, (size_t)S * 4, cmp_row) == NULL,
              "step %d window %d equals a test window", step, (int)i);
  }
  free(tt);
  free(bt);
  free(bg);
  dua_task_destroy(t);
  text_dir_remove();
}
END_TEST

/* Bad corpora: every kind of invalid UTF-8 refused with the byte offset of its first byte and the reason;
 * a file one byte too small and a test_size one window too large refused with the numbers, the boundary
 * cases accepted; a missing file or a directory, a corpus for another task, and text without a corpus. */
START_TEST(test_text_bad_files) {
  text_dir_make();
  static const struct {
    const char *bytes;
    size_t len;
    const char *why;
  } bad[] = {{"\xC3\x28", 2, "continuation bytes"},
             {"\x80", 1, "no lead byte"},
             {"\xBF", 1, "no lead byte"},
             {"\xC0\xAF", 2, "overlong"},
             {"\xC1\xBF", 2, "overlong"},
             {"\xE0\x80\xAF", 3, "overlong"},
             {"\xF0\x80\x80\xAF", 4, "overlong"},
             {"\xED\xA0\x80", 3, "surrogate"},
             {"\xED\xBF\xBF", 3, "surrogate"},
             {"\xF4\x90\x80\x80", 4, "above U+10FFFF"},
             {"\xF5\x80\x80\x80", 4, "never occurs"},
             {"\xFF", 1, "never occurs"},
             {"\xE6\x97\x41", 3, "continuation bytes"},
             {"\xF0\x9D\x84", 3, "end of the file"}};
  static unsigned char data[8000];
  char path[512], err[1024];
  text_path(path, sizeof path, "bad.txt");
  dua_trainer_config c = text_config(32, 4, test_seed());
  dua_task *t = NULL;
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    size_t n = make_text(data, 4000, 90 + k);
    const int at_end = strstr(bad[k].why, "end of the file") != NULL;
    size_t off = at_end ? n : 1000 + 37 * k;
    if (!at_end)
      while ((data[off] & 0xC0) == 0x80) /* put it at a character boundary */
        off++;
    memcpy(data + off, bad[k].bytes, bad[k].len);
    if (at_end)
      n += bad[k].len;
    else /* keep what follows valid: the rest of a character it overwrote becomes 'z' */
      for (size_t i = off + bad[k].len; i < n && (data[i] & 0xC0) == 0x80; i++)
        data[i] = 'z';
    write_file(path, data, n);
    ck_assert_int_eq(text_task(&c, path, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_null(t);
    char want[64];
    snprintf(want, sizeof want, "byte offset %zu ", off);
    ck_assert_msg(strstr(err, want) != NULL && strstr(err, bad[k].why) != NULL && strstr(err, "UTF-8"),
                  "case %zu: want \"%s\" and \"%s\" in \"%s\"", k, want, bad[k].why, err);
  }
  fprintf(stderr, "refused: %s\n", err);
  /* sizes: 10 (S + 1) bytes hold one test window; one byte less is too small */
  const int32_t S = 32;
  size_t n = 10 * (S + 1);
  memset(data, 'a', n);
  for (size_t i = 0; i < n; i++)
    data[i] = (unsigned char)('a' + (i * 7 + i / 26) % 26);
  write_file(path, data, n);
  c = text_config(S, 1, test_seed());
  ck_assert_msg(text_task(&c, path, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_task_destroy(t);
  c.test_size = 2; /* (33 - 1) / 32 = 1 window */
  ck_assert_int_eq(text_task(&c, path, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "config.test_size = 2") && strstr(err, "at most 1 test window"), "%s", err);
  fprintf(stderr, "refused: %s\n", err);
  write_file(path, data, n - 1);
  c.test_size = 1;
  ck_assert_int_eq(text_task(&c, path, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "too small") && strstr(err, "329 bytes") && strstr(err, "seq_len = 32"), "%s",
                err);
  fprintf(stderr, "refused: %s\n", err);
  write_file(path, data, 0);
  ck_assert_int_eq(text_task(&c, path, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "too small"), "%s", err);
  /* missing, a directory */
  text_path(path, sizeof path, "missing.txt");
  ck_assert_int_eq(text_task(&c, path, &t, err, sizeof err), DUA_ERROR_IO);
  ck_assert_msg(strstr(err, "missing.txt") && strstr(err, "cannot open"), "%s", err);
  ck_assert_int_eq(text_task(&c, text_dir, &t, err, sizeof err), DUA_ERROR_IO);
  ck_assert_msg(strstr(err, "regular file"), "%s", err);
  /* a corpus for another task; text without one */
  dua_trainer_config d = dyck_config(32, 2, 8, 100, test_seed());
  ck_assert_int_eq(text_task(&d, path, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "config.task = dyck") && strstr(err, "--text"), "%s", err);
  ck_assert_int_eq(dua_task_create(&c, NULL, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "config.task = text needs a corpus"), "%s", err);
  ck_assert_int_eq(text_task(&c, NULL, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_ptr_null(t);
  text_dir_remove();
}
END_TEST

/* The checkpoint record: written, read back and verified against the file; the same file under another
 * path accepted; a changed byte, a truncation or an appended byte refused naming both identities; a moved
 * file refused at the recorded path with the hint to give its new path; malformed records refused as
 * corrupt; a record for another task, a missing one, and a path override for another task refused. */
START_TEST(test_text_record) {
  text_dir_make();
  static unsigned char data[20000];
  char path[512], moved[512], err[1024];
  size_t n = make_text(data, 12000, 5);
  text_path(path, sizeof path, "c.txt");
  text_path(moved, sizeof moved, "moved.txt");
  write_file(path, data, n);
  dua_trainer_config c = text_config(32, 10, test_seed());
  dua_task *t = NULL;
  ck_assert_msg(text_task(&c, path, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  void *rec = NULL;
  uint64_t rec_bytes = 0;
  ck_assert_int_eq(dua_task_corpus_record(t, &rec, &rec_bytes), DUA_SUCCESS);
  ck_assert_ptr_nonnull(rec);
  dua_text_corpus_info info;
  ck_assert_int_eq(dua_task_text_corpus(t, &info), DUA_SUCCESS);
  static char abs_path[4096]; /* info.path lives as long as the task */
  snprintf(abs_path, sizeof abs_path, "%s", info.path);
  info.path = abs_path;
  /* the documented layout */
  const unsigned char *p = rec;
  const size_t plen = strlen(info.path);
  ck_assert_uint_eq(rec_bytes, 56 + plen);
  ck_assert(p[0] == 1 && p[1] == 0 && p[2] == 0 && p[3] == 0);
  uint64_t b = 0, tb = 0;
  for (int i = 7; i >= 0; i--) {
    b = (b << 8) | p[4 + i];
    tb = (tb << 8) | p[12 + i];
  }
  ck_assert_uint_eq(b, n);
  ck_assert_uint_eq(tb, info.train_bytes);
  ck_assert(memcmp(p + 20, info.sha256, 32) == 0);
  ck_assert(p[52] == (plen & 0xff) && p[53] == (plen >> 8) && p[54] == 0 && p[55] == 0);
  ck_assert(memcmp(p + 56, info.path, plen) == 0);
  int32_t *ta = malloc(32 * 10 * 4), *tb2 = malloc(32 * 10 * 4);
  ck_assert(ta && tb2);
  dua_task_test_examples(t, 0, 10, ta, NULL);
  dua_task_destroy(t);
  /* verified reload from the record, at the recorded path */
  dua_task_corpus corpus;
  ck_assert_int_eq(dua_task_corpus_from_record(&c, rec, rec_bytes, NULL, &corpus, err, sizeof err),
                   DUA_SUCCESS);
  ck_assert(corpus.verify == 1 && corpus.path == NULL && strcmp(corpus.recorded, info.path) == 0);
  ck_assert_msg(dua_task_create(&c, &corpus, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_task_test_examples(t, 0, 10, tb2, NULL);
  ck_assert(memcmp(ta, tb2, 32 * 10 * 4) == 0);
  dua_task_destroy(t);
  /* moved: the recorded path fails with the hint, the new path given works */
  ck_assert_int_eq(rename(path, moved), 0);
  ck_assert_int_eq(dua_task_create(&c, &corpus, &t, err, sizeof err), DUA_ERROR_IO);
  ck_assert_msg(strstr(err, "the path the checkpoint records") && strstr(err, "--text FILE"), "%s", err);
  fprintf(stderr, "refused: %s\n", err);
  ck_assert_int_eq(dua_task_corpus_from_record(&c, rec, rec_bytes, moved, &corpus, err, sizeof err),
                   DUA_SUCCESS);
  ck_assert_msg(dua_task_create(&c, &corpus, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_task_destroy(t);
  /* changed files at the given path: one ASCII byte changed (same size, still UTF-8), one byte less, one
   * byte more */
  static unsigned char alt[20001];
  for (int k = 0; k < 3; k++) {
    memcpy(alt, data, n);
    size_t len = k == 1 ? n - 1 : k == 2 ? n + 1 : n;
    if (k == 2)
      alt[n] = '\n';
    for (size_t i = n / 2; k == 0 && i < n; i++)
      if (alt[i] < 0x80) {
        alt[i] = alt[i] == 'a' ? 'b' : 'a';
        break;
      }
    write_file(moved, alt, len);
    ck_assert_int_eq(dua_task_create(&c, &corpus, &t, err, sizeof err), DUA_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_null(t);
    char want[64];
    snprintf(want, sizeof want, "with %zu bytes", n);
    ck_assert_msg(strstr(err, "is not the file the checkpoint was trained on") && strstr(err, info.path) &&
                      strstr(err, want),
                  "case %d: %s", k, err);
    if (k == 0)
      fprintf(stderr, "refused: %s\n", err);
  }
  write_file(moved, data, n);
  ck_assert_msg(dua_task_create(&c, &corpus, &t, err, sizeof err) == DUA_SUCCESS, "%s", err);
  dua_task_destroy(t);
  /* malformed records: each truncation, bad version, bad path length, NUL in the path, bad split */
  unsigned char *m = malloc((size_t)rec_bytes + 8);
  ck_assert_ptr_nonnull(m);
  for (uint64_t len = 0; len < rec_bytes; len++) {
    memcpy(m, rec, (size_t)len);
    REQUIRE(dua_task_corpus_from_record(&c, m, len, NULL, &corpus, err, sizeof err) == DUA_ERROR_CORRUPT_FILE,
            "a record truncated to %llu bytes was accepted", (unsigned long long)len);
  }
  memcpy(m, rec, (size_t)rec_bytes);
  m[rec_bytes] = 'x'; /* one byte more than the path length says */
  ck_assert_int_eq(dua_task_corpus_from_record(&c, m, rec_bytes + 1, NULL, &corpus, err, sizeof err),
                   DUA_ERROR_CORRUPT_FILE);
  static const int offsets[] = {0, 52, 53, 56, 12};
  for (int k = 0; k < 5; k++) {
    memcpy(m, rec, (size_t)rec_bytes);
    if (offsets[k] == 56)
      m[60] = 0; /* NUL in the path */
    else if (offsets[k] == 12)
      memcpy(m + 12, m + 4, 8); /* training region = the whole file */
    else
      m[offsets[k]] ^= 0x40;
    ck_assert_int_eq(dua_task_corpus_from_record(&c, m, rec_bytes, NULL, &corpus, err, sizeof err),
                     DUA_ERROR_CORRUPT_FILE);
    ck_assert_msg(strstr(err, "text_corpus"), "%s", err);
  }
  ck_assert_int_eq(dua_task_corpus_from_record(&c, NULL, 0, NULL, &corpus, err, sizeof err),
                   DUA_ERROR_CORRUPT_FILE);
  ck_assert_msg(strstr(err, "missing"), "%s", err);
  dua_trainer_config d = dyck_config(32, 2, 8, 100, test_seed());
  ck_assert_int_eq(dua_task_corpus_from_record(&d, rec, rec_bytes, NULL, &corpus, err, sizeof err),
                   DUA_ERROR_CORRUPT_FILE);
  ck_assert_int_eq(dua_task_corpus_from_record(&d, NULL, 0, moved, &corpus, err, sizeof err),
                   DUA_ERROR_INVALID_ARGUMENT);
  ck_assert_msg(strstr(err, "task dyck reads none"), "%s", err);
  ck_assert_int_eq(dua_task_corpus_from_record(&d, NULL, 0, NULL, &corpus, err, sizeof err), DUA_SUCCESS);
  /* no record for other tasks */
  dua_task *dt = make_task(&d);
  void *none = (void *)1;
  uint64_t none_bytes = 7;
  ck_assert_int_eq(dua_task_corpus_record(dt, &none, &none_bytes), DUA_SUCCESS);
  ck_assert(none == NULL && none_bytes == 0);
  ck_assert_int_eq(dua_task_text_corpus(dt, &info), DUA_ERROR_INVALID_ARGUMENT);
  dua_task_destroy(dt);
  free(m);
  free(ta);
  free(tb2);
  free(rec);
  text_dir_remove();
}
END_TEST

int main(void) {
  Suite *s = suite_create("tasks");
  TCase *tc = tcase_create("tasks");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_dyck_default);
  tcase_add_test(tc, test_dyck_shapes);
  tcase_add_test(tc, test_listops);
  tcase_add_test(tc, test_listops_paper_distribution);
  tcase_add_test(tc, test_dyck_lm);
  tcase_add_test(tc, test_text_windows);
  tcase_add_test(tc, test_text_disjoint_repeated);
  tcase_add_test(tc, test_text_bad_files);
  tcase_add_test(tc, test_text_record);
  tcase_add_test(tc, test_disjoint_small_space);
  tcase_add_test(tc, test_test_set_too_large);
  tcase_add_test(tc, test_determinism);
  tcase_add_loop_test(tc, test_loader, 0, 2);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
