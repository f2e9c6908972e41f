/* mask_model.h: an independent model of DESIGN.md section 2 for the tests: which token pairs a layout makes
 * visible, written from the formulas without the library's helpers, so a layout bug cannot hide in both. */
#ifndef DUA_TEST_MASK_MODEL_H
#define DUA_TEST_MASK_MODEL_H

#include "dua.h"
#include "test_util.h"

#include <stdint.h>

typedef struct model {
  dua_layout_desc desc;
  int32_t nb, dmax;
  int32_t arities[8], depths[8]; /* [heads] */
  uint8_t *paths;                /* [B][H][nb][dmax] or NULL */
  const int32_t *lcounts;        /* list model: [B*H*nb] or NULL */
  const int32_t *lindices;       /* [B*H*nb][nb] */
} model;

int32_t m_arity(const model *md, int32_t h);
/* D = smallest d with p^d >= nb, counted by repeated multiplication */
int32_t m_tree_depth(int32_t nb, int32_t p);
int32_t m_depth(const model *md, int32_t h);
int64_t m_pow(int64_t p, int32_t e);
/* do blocks bm and bn share the depth-d subtree of head h? */
int m_share(const model *md, int32_t b, int32_t h, int32_t bm, int32_t bn, int32_t d);
/* number of leading levels blocks bm and bn share */
int32_t m_lca(const model *md, int32_t b, int32_t h, int32_t bm, int32_t bn);
/* tree (or listed) pair, window/sink pair, visible pair */
int m_tree(const model *md, int32_t b, int32_t h, int32_t i, int32_t j);
int m_extra(const model *md, int32_t i, int32_t j);
int m_visible(const model *md, int32_t b, int32_t h, int32_t i, int32_t j);
/* Per head of md (nb, heads and arities set): md->depths[h] drawn in -1..D (D its tree depth), md->dmax the
 * largest D; returns the largest p^D (the range of a useful shift). One draw per head, in head order. */
int64_t m_random_depths(model *md, test_rng *r);
/* A random rule layout into *md (zeroed first): block 16, 1 to 15 or 17 to max_len tokens, batch 1-2, heads
 * 1-4, GQA in half the draws, per-head arities in half, depths -1..D, and shift, window, sink, causal and
 * random content paths (md->paths, malloc'ed: the caller frees it) each in some. */
void m_random_rule_model(model *md, test_rng *r, int32_t max_len);
/* mask [B][H][N][N] (malloc'ed) */
uint8_t *m_mask(const model *md);

#endif
