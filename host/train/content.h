/* content.h: the trainer's and the inference model's side of content routing mode (DESIGN.md section 7):
 * router parameters and their AdamW moments, the per-layer routing state of the last forward (first-token
 * rows, paths, soft probabilities, nodes) that the backward needs, and the route callback the model calls
 * after each layer's first layer norm (model.h, dua_route_fn). The math is in router.c. */
#ifndef DUA_CONTENT_H
#define DUA_CONTENT_H

#include "dua_train.h"
#include "train/router.h"

typedef struct dua_content {
  dua_router_dims d;        /* d.C: the router's input width, width + (D * p positional features or 0) */
  int width;                /* the model's width C: the first-token rows the router's inputs start with */
  int B_max, B, nb, T, blk; /* B: blocks' batch of the current forward (<= B_max) */
  float *w, *wm, *wv, *dw;  /* [d.total] parameters, AdamW moments, gradient */
  float *x;                 /* [L][B_max][nb][d.C] the router's input rows of the last forward */
  float *row;               /* [d.C] scratch: one block's input row (dua_content_route_block) */
  uint8_t *paths;           /* [L][B_max][H][nb][D] */
  float *soft;              /* [L][B_max][H][nb][D][p] */
  int32_t *node;            /* [L][B_max][H][nb][D] */
  uint8_t *argmax;          /* [B_max][H][nb][D] scratch: one layer's noise-free paths */
  /* how the next forward routes: noise (training) with temperature tau at (seed, step), or argmax */
  int noise;
  float tau;
  uint64_t seed, step;
} dua_content;

/* Router state for config (layers, heads, arity, width, block, seq_len), tree depth D, batches of up to
 * B_max sequences; parameters initialized from config->seed when init is set. */
dua_status dua_content_create(const dua_trainer_config *config, int D, int B_max, int init,
                              dua_content **out);
void dua_content_destroy(dua_content *c);

/* dua_route_fn: routes layer `layer` of the current forward (user is the dua_content); x [B][nb][width] the
 * first-token rows, block n of each sequence at row n. */
dua_status dua_content_route(void *user, int layer, const float *x, uint8_t *paths);

/* Argmax paths of block `block` of layer `layer` from its first-token row x [width] (no noise): paths [H][D].
 * For the same x, the digits dua_content_route gives that block in a whole-sequence pass (blocks are routed
 * independently); in generation x comes from the decode's arithmetic, equal to the full forward's up to
 * rounding, so a near-tie between two logits could route differently. The routing state of the last forward
 * is left alone. For generation, when a block's first token arrives. */
void dua_content_route_block(dua_content *c, int layer, int32_t block, const float *x, uint8_t *paths);

/* Router gradient of the last (noisy) forward into c->dw (zeroed first): tiles [L][B][H][nb][nb] the
 * block-pair gradients, beta [L][H][D + 1] the level biases used; balance_weight scales the balance loss
 * (averaged over layers, heads and levels), balance_scope (dua_balance_scope) says over which blocks its
 * digit fractions are counted. Returns that average balance loss (1 = uniform). */
double dua_content_backward(dua_content *c, const float *tiles, const float *beta, float balance_weight,
                            int balance_scope);
/* Balance loss of the last forward without computing gradients. */
double dua_content_balance(dua_content *c, int balance_scope);
/* Sum of squares of c->dw. */
double dua_content_grad_sumsq(const dua_content *c);
/* AdamW (no weight decay) on the router with learning rate lr * router_lr_scale, step t >= 1. */
void dua_content_update(dua_content *c, const dua_trainer_config *config, float lr, int t, float grad_scale);
/* Per-head lca fractions of layer l's paths in the last forward, frac [H][D + 1]. */
void dua_content_lca_fractions(const dua_content *c, int l, double *frac);
/* The same for the argmax (noise-free) paths of the last forward's router inputs: the paths evaluation would
 * route those blocks to. frac [H][D + 1]. */
void dua_content_argmax_lca_fractions(dua_content *c, int l, double *frac);
/* The argmax paths themselves, [B][H][nb][D] (c->argmax, valid until the next call). */
const uint8_t *dua_content_argmax(dua_content *c, int l);

#endif
