/* task_dyck.c: Dyck-k examples (task dyck) and whole Dyck-k words for next-token LM (task dyck-lm, at the
 * end of the file). A dyck example is a valid-so-far bracket prefix (nesting at most dyck_max_depth, at
 * most seq_len - 1 tokens) that ends with at least one bracket open; the target at its last token is the
 * closer the innermost open bracket needs next. Lengths are drawn uniformly, the open probability per
 * example (so shallow and deep prefixes both occur), and three prefixes in four end on a closer, so the
 * answer usually depends on a bracket opened far back, not on the last token. */
#include "train/task_internal.h"

int32_t dua_dyck_vocab_size(const dua_trainer_config *c) {
  return 1 + 2 * c->dyck_kinds;
}

const char *dua_dyck_token_name(const dua_trainer_config *c, int32_t id) {
  static const char *const open[8] = {"(", "[", "{", "<", "(5", "(6", "(7", "(8"};
  static const char *const close[8] = {")", "]", "}", ">", ")5", ")6", ")7", ")8"};
  int32_t k = c->dyck_kinds;
  if (id == 0)
    return "PAD";
  if (id >= 1 && id <= k)
    return open[id - 1];
  if (id > k && id <= 2 * k)
    return close[id - k - 1];
  return "?";
}

void dua_dyck_generate(const dua_trainer_config *c, dua_task_rng *r, int32_t *tokens, int32_t *targets) {
  const int32_t S = c->seq_len, k = c->dyck_kinds;
  const int32_t max_depth = c->dyck_max_depth < S - 1 ? c->dyck_max_depth : S - 1;
  int32_t *stack = targets; /* scratch until the end: stack[d] = kind open at depth d + 1 (d < S - 1) */
  const int32_t len = 1 + dua_task_rng_below(r, S - 1); /* walk length in [1, S - 1] */
  const double p_open = 0.35 + 0.3 * dua_task_rng_unit(r);
  const int want_closer = dua_task_rng_unit(r) < 0.75;
  /* the cut goes after the last token that leaves a bracket open (and is a closer, when wanted and
   * possible); token 0 is an opener leaving depth 1, so some cut always exists */
  int32_t depth = 0, last_open = -1, last_closer = -1;
  for (int32_t t = 0; t < len; t++) {
    int open = depth == 0 ? 1 : depth == max_depth ? 0 : dua_task_rng_unit(r) < p_open;
    if (open) {
      int32_t kind = dua_task_rng_below(r, k);
      stack[depth++] = kind;
      tokens[t] = 1 + kind;
    } else {
      tokens[t] = 1 + k + stack[--depth];
    }
    if (depth >= 1) {
      last_open = t;
      if (!open)
        last_closer = t;
    }
  }
  const int32_t cut = want_closer && last_closer >= 0 ? last_closer : last_open;
  /* replay the prefix [0, cut] to find the innermost open bracket */
  depth = 0;
  for (int32_t t = 0; t <= cut; t++) {
    if (tokens[t] <= k)
      stack[depth++] = tokens[t] - 1;
    else
      depth--;
  }
  const int32_t answer = 1 + k + stack[depth - 1];
  for (int32_t t = 0; t < S; t++)
    targets[t] = DUA_IGNORE;
  for (int32_t t = cut + 1; t < S; t++)
    tokens[t] = 0;
  targets[cut] = answer;
}

/* dyck-lm: a whole Dyck-k word of exactly seq_len tokens (seq_len even), balanced at its last token, nesting
 * at most m = min(dyck_max_depth, seq_len / 2). Token t is drawn at depth d (brackets open before it) with
 * seq_len - t - 1 positions after it: an opener is allowed iff d < m and d + 1 <= seq_len - t - 1 (the
 * positions after it can still close everything), a closer iff d > 0. When both are allowed the token is an
 * opener with probability DUA_DYCK_LM_P_OPEN (0.5), else the closer of the innermost open bracket; an
 * opener's kind is uniform over the k kinds. (d and t have the same parity, so at least one is always
 * allowed, and the word ends at depth 0.) Targets: the next token at every position t < seq_len - 1; the
 * last position is ignored. */
void dua_dyck_lm_generate(const dua_trainer_config *c, dua_task_rng *r, int32_t *tokens, int32_t *targets) {
  const int32_t S = c->seq_len, k = c->dyck_kinds;
  const int32_t m = c->dyck_max_depth < S / 2 ? c->dyck_max_depth : S / 2;
  int32_t *stack = targets; /* scratch: stack[d] = kind open at depth d + 1; d < m <= S / 2 < S */
  int32_t depth = 0;
  for (int32_t t = 0; t < S; t++) {
    const int32_t left_after = S - t - 1;
    const int can_open = depth < m && depth + 1 <= left_after, can_close = depth > 0;
    const int open = can_open && (!can_close || dua_task_rng_unit(r) < DUA_DYCK_LM_P_OPEN);
    if (open) {
      const int32_t kind = dua_task_rng_below(r, k);
      stack[depth++] = kind;
      tokens[t] = 1 + kind;
    } else {
      tokens[t] = 1 + k + stack[--depth];
    }
  }
  for (int32_t t = 0; t + 1 < S; t++)
    targets[t] = tokens[t + 1];
  targets[S - 1] = DUA_IGNORE;
}
