/* content.c: content routing state for the trainer and inference (content.h): allocation, the router's
 * input rows (first-token rows, with the block's positional digits when config->router_input asks), the route
 * callback (router forward per layer), the router's backward over all layers with the balance loss, and its
 * AdamW update. */
#include "train/content.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

dua_status dua_content_create(const dua_trainer_config *cfg, int D, int B_max, int init, dua_content **out) {
  dua_content *c = calloc(1, sizeof *c);
  if (!c)
    return DUA_ERROR_OUT_OF_MEMORY;
  c->width = cfg->width;
  const int position = cfg->router_input == DUA_ROUTER_TOKEN_POSITION ? D * cfg->arity : 0;
  c->d = dua_router_dims_of(cfg->layers, cfg->heads, D, cfg->arity, cfg->width + position);
  c->B_max = c->B = B_max;
  c->T = cfg->seq_len;
  c->blk = cfg->block;
  c->nb = (cfg->seq_len + cfg->block - 1) / cfg->block;
  const size_t L = (size_t)cfg->layers, H = (size_t)cfg->heads, nb = (size_t)c->nb, Dz = D ? (size_t)D : 1;
  const size_t blocks = L * (size_t)B_max * H * nb * Dz, n = c->d.total ? c->d.total : 1;
  c->w = calloc(n, sizeof *c->w);
  c->wm = calloc(n, sizeof *c->wm);
  c->wv = calloc(n, sizeof *c->wv);
  c->dw = calloc(n, sizeof *c->dw);
  c->x = malloc(L * (size_t)B_max * nb * (size_t)c->d.C * sizeof *c->x);
  c->row = malloc((size_t)c->d.C * sizeof *c->row);
  c->paths = calloc(blocks, 1);
  c->soft = calloc(blocks * (size_t)cfg->arity, sizeof *c->soft);
  c->node = calloc(blocks, sizeof *c->node);
  c->argmax = calloc(blocks / L, 1);
  if (!c->w || !c->wm || !c->wv || !c->dw || !c->x || !c->row || !c->paths || !c->soft || !c->node ||
      !c->argmax) {
    dua_content_destroy(c);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  if (init)
    dua_router_init(&c->d, cfg->seed, c->w);
  c->tau = 1.0f;
  c->seed = cfg->seed;
  *out = c;
  return DUA_SUCCESS;
}

void dua_content_destroy(dua_content *c) {
  if (!c)
    return;
  free(c->w);
  free(c->wm);
  free(c->wv);
  free(c->dw);
  free(c->x);
  free(c->row);
  free(c->paths);
  free(c->soft);
  free(c->node);
  free(c->argmax);
  free(c);
}

/* per-layer strides of the routing state */
static size_t layer_blocks(const dua_content *c) {
  return (size_t)c->B_max * c->d.H * c->nb * (c->d.D ? c->d.D : 1);
}

/* The router's input row of block `block` from its first-token row x [width]: out [d.C] = x, then (when
 * d.C > width) for each level j = 0..D-1, p features: 1 at the block index's base-p digit j (root first), 0
 * elsewhere. */
static void router_row(const dua_content *c, const float *x, int32_t block, float *out) {
  const int D = c->d.D, p = c->d.p;
  memcpy(out, x, (size_t)c->width * sizeof *x);
  if (c->d.C == c->width)
    return;
  float *pos = out + c->width; /* [D][p] */
  memset(pos, 0, (size_t)D * p * sizeof *pos);
  int32_t rest = block;
  for (int j = D - 1; j >= 0; j--, rest /= p)
    pos[j * p + rest % p] = 1.0f;
}

dua_status dua_content_route(void *user, int layer, const float *x, uint8_t *paths) {
  dua_content *c = user;
  const size_t lb = layer_blocks(c), C = (size_t)c->d.C;
  float *xl = c->x + (size_t)layer * c->B_max * c->nb * C;
  for (size_t r = 0; r < (size_t)c->B * c->nb; r++) /* x [B][nb][width] -> xl [B][nb][C] */
    router_row(c, x + r * c->width, (int32_t)(r % (size_t)c->nb), xl + r * C);
  uint8_t *pl = c->paths + (size_t)layer * lb;
  dua_router_forward(&c->d, c->w + (size_t)layer * c->d.H * c->d.per_head, xl, c->B, c->nb, c->tau, c->noise,
                     c->seed, c->step, layer, pl, c->soft + (size_t)layer * lb * c->d.p,
                     c->node + (size_t)layer * lb);
  memcpy(paths, pl, (size_t)c->B * c->d.H * c->nb * c->d.D);
  return DUA_SUCCESS;
}

void dua_content_route_block(dua_content *c, int layer, int32_t block, const float *x, uint8_t *paths) {
  if (c->d.D == 0)
    return;
  router_row(c, x, block, c->row);
  dua_router_forward(&c->d, c->w + (size_t)layer * c->d.H * c->d.per_head, c->row, 1, 1, 1.0f, 0, 0, 0, layer,
                     paths, NULL, NULL);
}

double dua_content_backward(dua_content *c, const float *tiles, const float *beta, float balance_weight,
                            int balance_scope) {
  const dua_router_dims *d = &c->d;
  const size_t lb = layer_blocks(c), tiles_per_layer = (size_t)c->B * d->H * c->nb * c->nb;
  memset(c->dw, 0, d->total * sizeof *c->dw);
  if (d->D == 0)
    return 0.0;
  const double scale = (double)balance_weight / ((double)d->L * d->H * d->D);
  double total = 0.0;
  for (int l = 0; l < d->L; l++) {
    const size_t wl = (size_t)l * d->H * d->per_head;
    total += dua_router_backward(d, c->x + (size_t)l * c->B_max * c->nb * d->C, c->B, c->nb,
                                 c->paths + (size_t)l * lb, c->soft + (size_t)l * lb * d->p,
                                 c->node + (size_t)l * lb, tiles + (size_t)l * tiles_per_layer,
                                 beta + (size_t)l * d->H * (d->D + 1), c->tau, 0, scale,
                                 balance_scope == DUA_BALANCE_SEQUENCE, c->dw + wl);
  }
  return total / ((double)d->L * d->H * d->D);
}

double dua_content_balance(dua_content *c, int balance_scope) {
  const dua_router_dims *d = &c->d;
  if (d->D == 0)
    return 0.0;
  const size_t lb = layer_blocks(c);
  double total = 0.0;
  float *scratch = calloc(d->H * d->per_head, sizeof *scratch);
  float *g = calloc((size_t)c->B * d->H * c->nb * c->nb, sizeof *g);
  float *beta = calloc((size_t)d->H * (d->D + 1), sizeof *beta);
  if (!scratch || !g || !beta) {
    free(scratch);
    free(g);
    free(beta);
    return NAN;
  }
  for (int l = 0; l < d->L; l++) /* zero pair gradients and zero scale: only the loss is computed */
    total += dua_router_backward(d, c->x + (size_t)l * c->B_max * c->nb * d->C, c->B, c->nb,
                                 c->paths + (size_t)l * lb, c->soft + (size_t)l * lb * d->p,
                                 c->node + (size_t)l * lb, g, beta, c->tau, 0, 0.0,
                                 balance_scope == DUA_BALANCE_SEQUENCE, scratch);
  free(scratch);
  free(g);
  free(beta);
  return total / ((double)d->L * d->H * d->D);
}

double dua_content_grad_sumsq(const dua_content *c) {
  double ss = 0.0;
  for (size_t i = 0; i < c->d.total; i++)
    ss += (double)c->dw[i] * c->dw[i];
  return ss;
}

void dua_content_update(dua_content *c, const dua_trainer_config *cfg, float lr, int t, float grad_scale) {
  const double b1c = 1.0 - pow(cfg->beta1, t), b2c = 1.0 - pow(cfg->beta2, t);
  for (size_t i = 0; i < c->d.total; i++) {
    float g = c->dw[i] * grad_scale;
    c->wm[i] = cfg->beta1 * c->wm[i] + (1.0f - cfg->beta1) * g;
    c->wv[i] = cfg->beta2 * c->wv[i] + (1.0f - cfg->beta2) * g * g;
    c->w[i] -=
        (float)(lr * cfg->router_lr_scale * ((c->wm[i] / b1c) / (sqrt(c->wv[i] / b2c) + cfg->adam_eps)));
  }
}

void dua_content_lca_fractions(const dua_content *c, int l, double *frac) {
  dua_router_lca_fractions(c->paths + (size_t)l * layer_blocks(c), c->B, c->d.H, c->nb, c->d.D, c->T, c->blk,
                           frac);
}

const uint8_t *dua_content_argmax(dua_content *c, int l) {
  const dua_router_dims *d = &c->d;
  dua_router_forward(d, c->w + (size_t)l * d->H * d->per_head, c->x + (size_t)l * c->B_max * c->nb * d->C,
                     c->B, c->nb, 1.0f, 0, 0, 0, l, c->argmax, NULL, NULL);
  return c->argmax;
}

void dua_content_argmax_lca_fractions(dua_content *c, int l, double *frac) {
  dua_router_lca_fractions(dua_content_argmax(c, l), c->B, c->d.H, c->nb, c->d.D, c->T, c->blk, frac);
}
