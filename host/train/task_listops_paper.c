/* task_listops_paper.c: ListOps drawn the way the paper's generator draws it (PAPER-NOTES.md "Data"), so
 * that dua's accuracy on it compares with the paper's 62.7%. An argument at nesting level `level` (the root
 * is level 1) is a single digit 0-9 (uniform) when level >= 5, or, below the root, with probability 0.7;
 * otherwise it is "[ OP a1 .. an ]" with OP uniform over MIN/MAX/MED/SUMMOD and n uniform in 2..4, each
 * argument drawn at level + 1. The root is therefore always an operator, operators sit at levels 1-4 (at
 * most 4 nested brackets) and about 36% of the expressions are a single flat operator (the mean over n of
 * 0.7^n). '=' follows the expression; an example whose length with '=' exceeds seq_len (or is below 5, as
 * the paper's code also checks) is redrawn from the same stream. The target at '=' is the value's digit;
 * unlike the paper's left padding, PAD follows '=' (dua's causal model cannot see it). The longest
 * expression is 511 tokens (a full 4-ary tree of operators at levels 1-4), so seq_len >= 512 never redraws.
 */
#include "train/task_internal.h"

#define PAPER_MAX_LEVEL 5
#define PAPER_P_LEAF 0.7
#define PAPER_MAX_TOKENS 512 /* 511 for the longest expression, then '=' */

typedef struct paper_state {
  dua_task_rng *r;
  int32_t tokens[PAPER_MAX_TOKENS];
  int32_t pos;
} paper_state;

static int32_t paper_expr(paper_state *g, int32_t level) {
  dua_task_rng *r = g->r;
  if (level >= PAPER_MAX_LEVEL || (level > 1 && dua_task_rng_unit(r) < PAPER_P_LEAF)) {
    const int32_t digit = dua_task_rng_below(r, 10);
    g->tokens[g->pos++] = DUA_LISTOPS_DIGIT0 + digit;
    return digit;
  }
  const int32_t op = DUA_LISTOPS_MIN + dua_task_rng_below(r, 4);
  const int32_t n = 2 + dua_task_rng_below(r, 3);
  int32_t values[4];
  g->tokens[g->pos++] = DUA_LISTOPS_OPEN;
  g->tokens[g->pos++] = op;
  for (int32_t i = 0; i < n; i++)
    values[i] = paper_expr(g, level + 1);
  g->tokens[g->pos++] = DUA_LISTOPS_CLOSE;
  return dua_listops_apply(op, values, n);
}

void dua_listops_paper_generate(const dua_trainer_config *c, dua_task_rng *r, int32_t *tokens,
                                int32_t *targets) {
  const int32_t S = c->seq_len;
  paper_state g;
  g.r = r;
  int32_t value;
  do { /* a 2-argument flat expression (6 tokens with '=') fits every seq_len >= 8 */
    g.pos = 0;
    value = paper_expr(&g, 1);
    g.tokens[g.pos++] = DUA_LISTOPS_EQUALS;
  } while (g.pos > S || g.pos < 5);
  for (int32_t t = 0; t < S; t++) {
    tokens[t] = t < g.pos ? g.tokens[t] : 0;
    targets[t] = DUA_IGNORE;
  }
  targets[g.pos - 1] = DUA_LISTOPS_DIGIT0 + value;
}
