/* router.h: content routing mode's router on the host (DESIGN.md section 7, "content mode").
 *
 * Per layer and head a block m gets a path r[0..D) in [0,p)^D, root first, chosen level by level from
 * x_m, the layer-normed hidden state (the layer's ln1 output) of the block's FIRST token: level j (0-based)
 * is decided at the tree node n = (level j, prefix r[0..j)) by the logits W[n] x + b[n] (p of them; every
 * node has its own weights). Training: hard Gumbel-Softmax (the digit is argmax(logits + Gumbel), the soft
 * probabilities softmax((logits + Gumbel) / tau) carry the gradient: straight-through). Evaluation: argmax of
 * the logits, no noise.
 *
 * Causality: every query of block m is at or after m's first token, and every key block n <= m it may see
 * starts before that query, so the paths a query's attention depends on are functions of visible tokens.
 *
 * Gradient: with the native gates' c[l] = log(1 - g[l]) = beta[l-1] - beta[l] (l = 1..D), the level bias of
 * a block pair is bias(m, n) = sum_l c[l] (1 - prod_{i <= l} a_i(m, n)), a_i = y_m,i . y_n,i (the agreement
 * of the two blocks' digits at level i; 1 or 0 with the hard one-hot digits, which is beta[lca(m, n)]).
 * Given G[m][n] = dLoss/dbias(m, n) (dua_attention_params.tile_grad), the chain rule gives dLoss/dy for both
 * blocks of every pair m != n (a block's pair with itself shares every level whatever its path: no
 * gradient), evaluated at the hard digits (straight-through), then through the soft probabilities to the
 * logits, W and b. The gradient is stopped at x (the router does not train the layers below it).
 *
 * Load balancing (Switch-Transformer style, per tree node): at node n with N_n of the layer-head's
 * blocks (batch included), f_k = fraction of them whose digit is k, P_k = their mean soft probability of k;
 * loss_n = p sum_k f_k P_k (1 when uniform); a level's loss is sum_n (N_n / N) loss_n; the reported
 * balance loss is the mean over layers, heads and levels; the objective adds balance_weight times it.
 * Per-sequence scope (per_sequence = 1, DUA_BALANCE_SEQUENCE): the same loss with the statistics of each
 * sequence's blocks alone, averaged over the batch; it is 1 only when every sequence spreads its own blocks
 * evenly, so it also acts against blocks of one sequence sharing a path. */
#ifndef DUA_ROUTER_H
#define DUA_ROUTER_H

#include <stddef.h>
#include <stdint.h>

/* Shape of one trainer's routers. nodes = (p^D - 1) / (p - 1) per (layer, head); each node holds p rows
 * of C weights then 1 bias: p * (C + 1) floats. */
typedef struct dua_router_dims {
  int L, H, D, p, C;
  int nodes;       /* per (layer, head) */
  size_t per_head; /* nodes * p * (C + 1) */
  size_t total;    /* L * H * per_head */
} dua_router_dims;

dua_router_dims dua_router_dims_of(int L, int H, int D, int p, int C);

/* Initial router parameters from seed: weights N(0, 0.02), biases 0. w [total]. */
void dua_router_init(const dua_router_dims *d, uint64_t seed, float *w);

/* One layer's routing of B * nb blocks. x [B][nb][C] (first-token rows), w the layer's parameters
 * ([H][per_head]). noise = 1 adds Gumbel noise, a pure function of (seed, step, layer, b, h, block, level).
 * Writes paths [B][H][nb][D] (digits), and when not NULL soft [B][H][nb][D][p] (softmax((logits+noise)/tau))
 * and node [B][H][nb][D] (the node index used at each level). */
void dua_router_forward(const dua_router_dims *d, const float *w, const float *x, int B, int nb, float tau,
                        int noise, uint64_t seed, uint64_t step, int layer, uint8_t *paths, float *soft,
                        int32_t *node);

/* Derivative of bias(m, n) = sum_l c[l] (1 - prod_{i <= l} a[i]) w.r.t. a[j], j = 0..D-1 (levels 1..D).
 * c [D], a [D], out [D]. */
void dua_router_bias_grad(const float *c, const double *a, int D, double *out);

/* Gradient of one layer: g [B][H][nb][nb] = dLoss/dbias per block pair (m query, n key), beta [H][D + 1]
 * the level bias used (c derived from it). soft_agreement = 0: the agreements and their derivative use the
 * hard digits (straight-through, training); 1: the soft probabilities (the smooth surrogate, for tests).
 * Adds balance_scale times the balance-loss gradient when balance_scale != 0 (see above; balance_scale =
 * balance_weight / (L * H * D) for the trainer's objective), per_sequence the scope. Accumulates into dw
 * [H][per_head]. Returns the layer's balance loss summed over heads and levels (each level's loss is 1 when
 * uniform). */
double dua_router_backward(const dua_router_dims *d, const float *x, int B, int nb, const uint8_t *paths,
                           const float *soft, const int32_t *node, const float *g, const float *beta,
                           float tau, int soft_agreement, double balance_scale, int per_sequence, float *dw);

/* The smooth surrogate the backward differentiates with soft_agreement = 1 (for tests): sum over block pairs
 * m != n of g[m][n] * bias_soft(m, n), plus balance_scale times the summed balance loss, with the soft
 * probabilities recomputed from w (no noise, nodes fixed to `node`) and the digit fractions from paths. */
double dua_router_surrogate(const dua_router_dims *d, const float *w, const float *x, int B, int nb,
                            const uint8_t *paths, const int32_t *node, const float *g, const float *beta,
                            float tau, double balance_scale, int per_sequence);

/* Per-head fractions of causal token pairs (j <= i < T) whose blocks share exactly k leading path digits,
 * averaged over the batch: frac [H][D + 1]. paths [B][H][nb][D]. */
void dua_router_lca_fractions(const uint8_t *paths, int B, int H, int nb, int D, int T, int blk,
                              double *frac);

/* Expected density of a layer with per-head fractions (as dua_gates_density, frac [H][D + 1]); adds the
 * budget penalty's gradient to dbeta when dbeta != NULL. Returns the mean over heads. */
double dua_router_density(const float *beta, const double *frac, int H, int D, float weight, float target,
                          float *dbeta);

#endif
