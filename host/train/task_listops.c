/* task_listops.c: ListOps examples: "[ MAX 2 9 [ MIN 4 7 ] 0 ] =" with the value's digit as the target
 * at '='. Operators MIN, MAX, MED (lower median: sorted[(n - 1) / 2]) and SUMMOD (sum mod 10) take 2-4
 * arguments; nesting depth <= 5; length including '=' <= seq_len. Unlike the paper's generator (36% a
 * single flat operator), each example first draws the depth it must reach (1 with probability 0.1,
 * else uniform over 2..5 as far as seq_len allows) and a length budget (uniform from the shortest
 * expression of that depth to seq_len - 1), so most examples are nested and lengths spread over the
 * sequence. */
#include "train/task_internal.h"

static const char *const names[DUA_LISTOPS_VOCAB] = {
    "PAD", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "[", "MIN", "MAX", "MED", "SUMMOD", "]", "="};

const char *dua_listops_token_name(int32_t id) {
  return id >= 0 && id < DUA_LISTOPS_VOCAB ? names[id] : "?";
}

/* Shortest expression of depth d: a chain of 2-argument operators, "[ op x [ ... ] ]" = 4 d + 1. */
static int32_t min_len(int32_t d) {
  return 4 * d + 1;
}

#define P_NEST 0.6 /* probability that an unforced argument with room for it is an expression */

typedef struct gen_state {
  dua_task_rng *r;
  int32_t *tokens;
  int32_t pos;
} gen_state;

int32_t dua_listops_apply(int32_t op, int32_t *v, int32_t n) {
  int32_t out = v[0];
  switch (op) {
  case DUA_LISTOPS_MIN:
    for (int32_t i = 1; i < n; i++)
      out = v[i] < out ? v[i] : out;
    return out;
  case DUA_LISTOPS_MAX:
    for (int32_t i = 1; i < n; i++)
      out = v[i] > out ? v[i] : out;
    return out;
  case DUA_LISTOPS_MED:
    for (int32_t i = 1; i < n; i++) /* insertion sort of <= 4 values */
      for (int32_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
        int32_t t = v[j];
        v[j] = v[j - 1];
        v[j - 1] = t;
      }
    return v[(n - 1) / 2];
  default: /* SUMMOD */
    out = 0;
    for (int32_t i = 0; i < n; i++)
      out += v[i];
    return out % 10;
  }
}

/* Writes an expression of at most `budget` tokens (budget >= min_len(must)) whose depth is at least `must`
 * and at most `depth_left`; returns its value. The room left after '[', op and ']' is split at random among
 * the arguments (each gets at least what it needs); an argument whose share can hold an expression becomes
 * one with probability P_NEST (always, for the one that must reach the depth), so lengths follow the
 * budget. */
static int32_t gen_expr(gen_state *g, int32_t budget, int32_t must, int32_t depth_left) {
  dua_task_rng *r = g->r;
  const int32_t op = DUA_LISTOPS_MIN + dua_task_rng_below(r, 4);
  const int32_t forced_len = must > 1 ? min_len(must - 1) : 0; /* least room the forced argument needs */
  int32_t n_max = budget - 3 - (must > 1 ? forced_len - 1 : 0);
  if (n_max > 4)
    n_max = 4;
  const int32_t n = 2 + dua_task_rng_below(r, n_max - 1);
  const int32_t forced = must > 1 ? dua_task_rng_below(r, n) : -1;
  /* argument i gets its own minimum plus a random part (weight[i] / the weights of i..n-1) of the room
   * the later arguments do not need; room a digit leaves unused passes on to the later arguments */
  int32_t weight[4], wsum = 0;
  for (int32_t i = 0; i < n; i++) {
    weight[i] = 1 + dua_task_rng_below(r, 16);
    wsum += weight[i];
  }
  int32_t values[4] = {0, 0, 0, 0};
  int32_t remaining = budget - 3; /* for the arguments: '[', op and ']' are counted */
  g->tokens[g->pos++] = DUA_LISTOPS_OPEN;
  g->tokens[g->pos++] = op;
  for (int32_t i = 0; i < n; i++) {
    int32_t need_later = 0;
    for (int32_t j = i + 1; j < n; j++)
      need_later += j == forced ? forced_len : 1;
    const int32_t own = i == forced ? forced_len : 1;
    const int32_t spare = remaining - need_later - own; /* >= 0 */
    const int32_t share = own + (int32_t)((int64_t)spare * weight[i] / wsum);
    wsum -= weight[i];
    const int32_t start = g->pos;
    if (i == forced)
      values[i] = gen_expr(g, share, must - 1, depth_left - 1);
    else if (depth_left > 1 && share >= min_len(1) && dua_task_rng_unit(r) < P_NEST)
      values[i] = gen_expr(g, share, 1, depth_left - 1);
    else {
      values[i] = dua_task_rng_below(r, 10);
      g->tokens[g->pos++] = DUA_LISTOPS_DIGIT0 + values[i];
    }
    remaining -= g->pos - start;
  }
  g->tokens[g->pos++] = DUA_LISTOPS_CLOSE;
  return dua_listops_apply(op, values, n);
}

void dua_listops_generate(const dua_trainer_config *c, dua_task_rng *r, int32_t *tokens, int32_t *targets) {
  const int32_t S = c->seq_len, room = S - 1; /* tokens before '=' */
  int32_t feasible = (room - 1) / 4;          /* deepest d with min_len(d) <= room (seq_len >= 8: >= 1) */
  if (feasible > DUA_LISTOPS_MAX_DEPTH)
    feasible = DUA_LISTOPS_MAX_DEPTH;
  int32_t must = 1;
  if (feasible >= 2 && dua_task_rng_unit(r) >= 0.1)
    must = 2 + dua_task_rng_below(r, feasible - 1);
  const int32_t budget = min_len(must) + dua_task_rng_below(r, room - min_len(must) + 1);
  gen_state g = {r, tokens, 0};
  const int32_t value = gen_expr(&g, budget, must, DUA_LISTOPS_MAX_DEPTH);
  for (int32_t t = 0; t < S; t++)
    targets[t] = DUA_IGNORE;
  tokens[g.pos] = DUA_LISTOPS_EQUALS;
  targets[g.pos] = DUA_LISTOPS_DIGIT0 + value;
  for (int32_t t = g.pos + 1; t < S; t++)
    tokens[t] = 0;
}
