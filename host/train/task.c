/* task.c: the task object shared by the generators and the text corpus: the held-out test set (distinct
 * examples, drawn from a stream seeded by config->seed; for listops-paper the first test_size draws,
 * repeats kept, so that the test set follows the paper's distribution exactly; for text the held-out
 * windows of the corpus, repeats kept), an exact-match hash set over it, and training batches as a pure
 * function of (seed, step): example i of step s comes from a PRNG seeded with (seed, s, i) and is redrawn
 * from the same PRNG while it equals a test example. Creation refuses a test set that cannot be filled with
 * distinct examples, or that covers so much of the example distribution (over half of a probe sample) that
 * training would mostly be redraws. */
#include "train/file_util.h"
#include "train/task_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* stream domains, so test, probe and training draws never share a PRNG state */
#define DOMAIN_TEST 0x7465737473657421ull
#define DOMAIN_PROBE 0x70726f6265212121ull
#define DOMAIN_TRAIN 0x747261696e212121ull

#define PROBE_DRAWS 2000
#define MAX_REDRAWS (1 << 20) /* with a test-set hit rate below 1/2 this is never reached */

struct dua_task {
  dua_trainer_config config;
  int32_t seq_len, vocab;
  dua_task_generate_fn generate; /* synthetic tasks */
  dua_text_corpus *text;         /* DUA_TASK_TEXT */
  int test_repeats; /* 1: the test set is test_size i.i.d. draws, repeats kept (the paper's distribution) */
  int32_t test_count;
  int32_t *test_tokens, *test_targets; /* [test_size][seq_len] */
  int32_t *slot;                       /* hash set: test example index, -1 = empty */
  uint64_t *slot_hash;
  size_t mask; /* slots - 1 */
};

static uint64_t example_hash(const int32_t *tokens, int32_t n) {
  uint64_t h = 0x6475612d7461736bull;
  for (int32_t i = 0; i < n; i++)
    h = dua_task_mix64(h ^ (uint32_t)tokens[i]);
  return h;
}

/* Index of the test example equal to tokens, or -1; *where = the slot it is in, or the free slot where it
 * would go. */
static int32_t test_find(const dua_task *t, const int32_t *tokens, uint64_t h, size_t *where) {
  size_t i = (size_t)h & t->mask;
  while (t->slot[i] >= 0) {
    if (t->slot_hash[i] == h &&
        memcmp(t->test_tokens + (size_t)t->slot[i] * t->seq_len, tokens, (size_t)t->seq_len * 4) == 0) {
      if (where)
        *where = i;
      return t->slot[i];
    }
    i = (i + 1) & t->mask;
  }
  if (where)
    *where = i;
  return -1;
}

/* One example from r: a generator's, or a training window of the corpus. */
static void draw(const dua_task *t, dua_task_rng *r, int32_t *tokens, int32_t *targets) {
  if (t->text != NULL)
    dua_text_train_window(t->text, t->seq_len, r, tokens, targets);
  else
    t->generate(&t->config, r, tokens, targets);
}

static uint64_t stream_key(uint64_t seed, uint64_t domain, uint64_t step, uint64_t index) {
  uint64_t h = dua_task_mix64(seed ^ domain);
  h = dua_task_mix64(h ^ step);
  return dua_task_mix64(h ^ (index * 0xD1B54A32D192ED03ull));
}

dua_status dua_task_create(const dua_trainer_config *config, const dua_task_corpus *corpus, dua_task **out,
                           char *error, size_t error_size) {
  if (out == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT, "dua_task_create: out is NULL");
  *out = NULL;
  dua_status st = dua_trainer_config_validate(config, error, error_size);
  if (st != DUA_SUCCESS)
    return st;
  const int have_corpus = corpus != NULL && (corpus->path != NULL || corpus->recorded[0] != '\0');
  if (config->task == DUA_TASK_TEXT && !have_corpus)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "config.task = text needs a corpus file (dua_trainer_create_with_corpus; dua-train "
                          "--text FILE)");
  if (config->task != DUA_TASK_TEXT && have_corpus)
    return dua_train_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT,
                          "a text corpus (%s) was given, but config.task = %s reads none (--text is for task "
                          "text)",
                          corpus->path ? corpus->path : corpus->recorded, dua_task_kind_name(config->task));
  dua_task *t = calloc(1, sizeof *t);
  if (t == NULL)
    return dua_train_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "dua_task_create: out of memory");
  t->config = *config;
  t->seq_len = config->seq_len;
  switch (config->task) {
  case DUA_TASK_DYCK:
    t->generate = dua_dyck_generate;
    t->vocab = dua_dyck_vocab_size(config);
    break;
  case DUA_TASK_LISTOPS:
    t->generate = dua_listops_generate;
    t->vocab = DUA_LISTOPS_VOCAB;
    break;
  case DUA_TASK_LISTOPS_PAPER:
    t->generate = dua_listops_paper_generate;
    t->vocab = DUA_LISTOPS_VOCAB;
    t->test_repeats = 1;
    break;
  case DUA_TASK_DYCK_LM:
    t->generate = dua_dyck_lm_generate;
    t->vocab = dua_dyck_vocab_size(config);
    break;
  default: /* DUA_TASK_TEXT; validated above */
    if ((st = dua_text_corpus_load(config, corpus, &t->text, error, error_size)) != DUA_SUCCESS) {
      dua_task_destroy(t);
      return st;
    }
    t->vocab = 256;
    t->test_repeats = 1;
    break;
  }
  const size_t n = (size_t)config->test_size, S = (size_t)config->seq_len;
  size_t slots = 16;
  while (slots < 2 * n)
    slots *= 2;
  t->mask = slots - 1;
  t->test_tokens = malloc(n * S * sizeof(int32_t));
  t->test_targets = malloc(n * S * sizeof(int32_t));
  t->slot = malloc(slots * sizeof(int32_t));
  t->slot_hash = malloc(slots * sizeof(uint64_t));
  if (!t->test_tokens || !t->test_targets || !t->slot || !t->slot_hash) {
    dua_task_destroy(t);
    return dua_train_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY,
                          "dua_task_create: out of memory for %zu test examples", n);
  }
  memset(t->slot, 0xff, slots * sizeof(int32_t));

  /* test set: draw until test_size distinct examples or the draw budget is spent (test_repeats: the first
   * test_size draws, a repeat kept as a second copy and entered into the hash set once) */
  dua_task_rng r;
  dua_task_rng_seed(&r, stream_key(config->seed, DOMAIN_TEST, 0, 0));
  const long long max_draws = 1000000 + 20ll * (long long)n;
  long long draws = 0;
  while ((size_t)t->test_count < n && draws < max_draws) {
    int32_t *tok = t->test_tokens + (size_t)t->test_count * S,
            *tgt = t->test_targets + (size_t)t->test_count * S;
    if (t->text != NULL) /* the held-out windows, in order */
      dua_text_test_window(t->text, (int32_t)S, t->test_count, (int32_t)n, tok, tgt);
    else
      t->generate(config, &r, tok, tgt);
    draws++;
    uint64_t h = example_hash(tok, (int32_t)S);
    size_t where;
    if (test_find(t, tok, h, &where) < 0) {
      t->slot[where] = t->test_count;
      t->slot_hash[where] = h;
    } else if (!t->test_repeats) {
      continue;
    }
    t->test_count++;
  }
  if ((size_t)t->test_count < n) {
    int32_t found = t->test_count;
    dua_task_destroy(t);
    return dua_train_fail(
        error, error_size, DUA_ERROR_INVALID_ARGUMENT,
        "config.test_size = %d: only %d distinct examples found in %lld draws (seq_len %d); lower "
        "test_size or lengthen the examples",
        (int)n, (int)found, draws, (int)S);
  }

  /* the share of fresh draws that land in the test set: training redraws those */
  int32_t *tok = malloc(2 * S * sizeof(int32_t));
  if (tok == NULL) {
    dua_task_destroy(t);
    return dua_train_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "dua_task_create: out of memory");
  }
  dua_task_rng_seed(&r, stream_key(config->seed, DOMAIN_PROBE, 0, 0));
  int hits = 0;
  for (int i = 0; i < PROBE_DRAWS; i++) {
    draw(t, &r, tok, tok + S);
    hits += test_find(t, tok, example_hash(tok, (int32_t)S), NULL) >= 0;
  }
  free(tok);
  if (2 * hits > PROBE_DRAWS) {
    const int text = t->text != NULL;
    dua_task_destroy(t);
    return dua_train_fail(
        error, error_size, DUA_ERROR_INVALID_ARGUMENT,
        "config.test_size = %d: the test set holds %d of %d fresh draws, so training would rarely see "
        "an example of its own; %s",
        (int)n, hits, PROBE_DRAWS,
        text ? "the corpus repeats its held-out text throughout (use a less repetitive corpus)"
             : "lower test_size or lengthen the examples");
  }
  if (error != NULL && error_size > 0)
    error[0] = '\0';
  *out = t;
  return DUA_SUCCESS;
}

void dua_task_destroy(dua_task *t) {
  if (t == NULL)
    return;
  free(t->test_tokens);
  free(t->test_targets);
  free(t->slot);
  free(t->slot_hash);
  dua_text_corpus_destroy(t->text);
  free(t);
}

int32_t dua_task_seq_len(const dua_task *t) {
  return t ? t->seq_len : 0;
}

int32_t dua_task_vocab_size(const dua_task *t) {
  return t ? t->vocab : 0;
}

const char *dua_task_token_name(const dua_task *t, int32_t id) {
  if (t == NULL)
    return "?";
  switch (t->config.task) {
  case DUA_TASK_DYCK:
  case DUA_TASK_DYCK_LM:
    return dua_dyck_token_name(&t->config, id);
  case DUA_TASK_TEXT:
    return dua_text_token_name(t->text, id);
  default: /* the ListOps tasks */
    return dua_listops_token_name(id);
  }
}

void dua_task_train_batch(const dua_task *t, uint64_t step, int32_t batch, int32_t *tokens,
                          int32_t *targets) {
  if (t == NULL || batch <= 0 || tokens == NULL || targets == NULL)
    return;
  const size_t S = (size_t)t->seq_len;
  for (int32_t i = 0; i < batch; i++) {
    int32_t *tok = tokens + (size_t)i * S, *tgt = targets + (size_t)i * S;
    dua_task_rng r;
    dua_task_rng_seed(&r, stream_key(t->config.seed, DOMAIN_TRAIN, step, (uint64_t)i));
    for (int redraw = 0; redraw < MAX_REDRAWS; redraw++) {
      draw(t, &r, tok, tgt);
      if (test_find(t, tok, example_hash(tok, t->seq_len), NULL) < 0)
        break;
    }
  }
}

int32_t dua_task_test_size(const dua_task *t) {
  return t ? t->test_count : 0;
}

void dua_task_test_examples(const dua_task *t, int32_t first, int32_t count, int32_t *tokens,
                            int32_t *targets) {
  if (t == NULL || first < 0 || count <= 0 || count > t->test_count - first)
    return;
  const size_t S = (size_t)t->seq_len;
  if (tokens)
    memcpy(tokens, t->test_tokens + (size_t)first * S, (size_t)count * S * sizeof(int32_t));
  if (targets)
    memcpy(targets, t->test_targets + (size_t)first * S, (size_t)count * S * sizeof(int32_t));
}

dua_status dua_task_text_corpus(const dua_task *t, dua_text_corpus_info *info) {
  if (t == NULL || info == NULL || t->text == NULL)
    return DUA_ERROR_INVALID_ARGUMENT;
  dua_text_info(t->text, info);
  return DUA_SUCCESS;
}

dua_status dua_task_corpus_record(const dua_task *t, void **data, uint64_t *bytes) {
  *data = NULL;
  *bytes = 0;
  return t != NULL && t->text != NULL ? dua_text_record(t->text, data, bytes) : DUA_SUCCESS;
}
