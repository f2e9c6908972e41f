/* task_internal.h: what task.c shares with the generators (task_dyck.c, task_listops.c,
 * task_listops_paper.c), the text corpus (task_text.c) and the loader: the seeded PRNG (xoshiro256** seeded
 * through splitmix64) and the generator entry points. Token ids of every synthetic task: 0 is PAD. */
#ifndef DUA_TASK_INTERNAL_H
#define DUA_TASK_INTERNAL_H

#include "train/task.h"

#include <stdint.h>

/* ---------------------------------------------------------------- PRNG */

typedef struct dua_task_rng {
  uint64_t s[4];
} dua_task_rng;

/* splitmix64 finalizer of x + golden ratio: a bijective 64-bit mix. */
static inline uint64_t dua_task_mix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static inline void dua_task_rng_seed(dua_task_rng *r, uint64_t key) {
  for (int i = 0; i < 4; i++) {
    key += 0x9E3779B97F4A7C15ull;
    r->s[i] = dua_task_mix64(key);
  }
}

static inline uint64_t dua_task_rng_rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

static inline uint64_t dua_task_rng_next(dua_task_rng *r) { /* xoshiro256** */
  uint64_t *s = r->s;
  uint64_t result = dua_task_rng_rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = dua_task_rng_rotl(s[3], 45);
  return result;
}

/* Uniform in [0, n), n >= 1 (multiply-shift; bias below 2^-32, irrelevant here). */
static inline int32_t dua_task_rng_below(dua_task_rng *r, int32_t n) {
  return (int32_t)(((dua_task_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* Uniform in [0, 1). */
static inline double dua_task_rng_unit(dua_task_rng *r) {
  return (double)(dua_task_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* seq_len of the task's config (for the loader) */
int32_t dua_task_seq_len(const dua_task *task);

/* ---------------------------------------------------------------- generators */

/* One example of config->seq_len tokens and targets (right-padded, DUA_IGNORE except at the answer). */
typedef void (*dua_task_generate_fn)(const dua_trainer_config *config, dua_task_rng *r, int32_t *tokens,
                                     int32_t *targets);

/* Dyck-k: PAD, openers 1..k, closers k+1..2k. */
void dua_dyck_generate(const dua_trainer_config *config, dua_task_rng *r, int32_t *tokens, int32_t *targets);
int32_t dua_dyck_vocab_size(const dua_trainer_config *config);
/* dyck-lm (same vocabulary, PAD unused): a balanced Dyck-k word of seq_len tokens, next-token targets. */
#define DUA_DYCK_LM_P_OPEN 0.5 /* probability of an opener where an opener and a closer are both allowed */
void dua_dyck_lm_generate(const dua_trainer_config *config, dua_task_rng *r, int32_t *tokens,
                          int32_t *targets);
const char *dua_dyck_token_name(const dua_trainer_config *config, int32_t id);

/* ListOps: PAD, digits 0-9 (ids 1..10), '[' MIN MAX MED SUMMOD ']' '=' (ids 11..17). */
enum {
  DUA_LISTOPS_DIGIT0 = 1,
  DUA_LISTOPS_OPEN = 11,
  DUA_LISTOPS_MIN = 12,
  DUA_LISTOPS_MAX = 13,
  DUA_LISTOPS_MED = 14,
  DUA_LISTOPS_SUMMOD = 15,
  DUA_LISTOPS_CLOSE = 16,
  DUA_LISTOPS_EQUALS = 17,
  DUA_LISTOPS_VOCAB = 18
};
#define DUA_LISTOPS_MAX_DEPTH 5
void dua_listops_generate(const dua_trainer_config *config, dua_task_rng *r, int32_t *tokens,
                          int32_t *targets);
const char *dua_listops_token_name(int32_t id);
/* Value of op over v[0..n) (MED sorts v in place). */
int32_t dua_listops_apply(int32_t op, int32_t *v, int32_t n);
/* ListOps as the paper's generator draws it (task_listops_paper.c); same vocabulary. */
void dua_listops_paper_generate(const dua_trainer_config *config, dua_task_rng *r, int32_t *tokens,
                                int32_t *targets);

/* ---------------------------------------------------------------- text corpus (task_text.c) */

typedef struct dua_text_corpus dua_text_corpus;
/* Reads, validates and splits the corpus of spec (path, or the recorded one) for config's seq_len and
 * test_size; with spec->verify, refuses a file that is not the recorded one. */
dua_status dua_text_corpus_load(const dua_trainer_config *config, const dua_task_corpus *spec,
                                dua_text_corpus **out, char *error, size_t error_size);
void dua_text_corpus_destroy(dua_text_corpus *corpus);
const char *dua_text_token_name(const dua_text_corpus *corpus, int32_t id);
/* A training window at an offset drawn from r; test window i of n. tokens, targets: [S]. */
void dua_text_train_window(const dua_text_corpus *corpus, int32_t S, dua_task_rng *r, int32_t *tokens,
                           int32_t *targets);
void dua_text_test_window(const dua_text_corpus *corpus, int32_t S, int32_t i, int32_t n, int32_t *tokens,
                          int32_t *targets);
void dua_text_info(const dua_text_corpus *corpus, dua_text_corpus_info *info);
/* The checkpoint record's payload (malloc'ed). */
dua_status dua_text_record(const dua_text_corpus *corpus, void **data, uint64_t *bytes);

#endif
