/* gates.h: native routing mode's gate math on the host (DESIGN.md section 7). Per layer and head, gates
 * g[1..D] = sigmoid(x), x = (z + logistic noise) / tau; gate l "on" cuts every block pair whose lowest common
 * ancestor level lca < l. The kernels add beta[lca] = sum_{l > lca} log(1 - g[l]) = -sum softplus(x[l]) to
 * each score, so a head has D + 1 bias numbers. Few numbers: computed here, not on the device. */
#ifndef DUA_GATES_H
#define DUA_GATES_H

#include <stdint.h>

/* x [H][D] and beta [H][D + 1] for one layer at one step; the noise is a pure function of
 * (seed, step, layer, head, level). noise = 0 gives the deterministic (evaluation) values. */
void dua_gates_sample(const float *z, int H, int D, float tau, uint64_t seed, uint64_t step, int layer,
                      int noise, float *x, float *beta);
/* Smallest k with beta[k] >= cutoff: block pairs with lca < k have weight < e^cutoff and are skipped. */
int dua_gates_skip_depth(const float *beta, int D, float cutoff);
/* Chain rule: dz[h][l-1] += sum_{k < l} dbeta[h][k] * (-sigmoid(x[h][l-1])) / tau. */
void dua_gates_backward(const float *x, const float *dbeta, int H, int D, float tau, float *dz);
/* Fraction of causal token pairs (j <= i < T) whose blocks share exactly k leading levels, k = 0..D, for the
 * positional tree with block size blk, arity p and block shift s. frac [D + 1]. */
void dua_gates_lca_fractions(int T, int blk, int p, int D, int s, double *frac);
/* Block-level fractions (kernel units: visited key blocks over a dense causal layout's) of the causal block
 * pairs n <= m < nb of each head, averaged over the batch: base[h] the fraction visited whatever the tree
 * (the diagonal, pairs the token window W or the sink S reaches), frac [H][D + 1] the fraction of the others
 * whose blocks share exactly k levels. paths [B][H][nb][D] (content tree), or NULL for the positional tree of
 * arity p and shift s (B ignored; every head alike). A head of depth d visits base[h] + sum_{k >= d}
 * frac[h][k]. */
void dua_gates_block_fractions(const uint8_t *paths, int B, int H, int nb, int D, int p, int s, int blk,
                               int window, int sink, double *frac, double *base);
/* Expected density of a layer, mean over heads of sum_k frac[k] exp(beta[h][k]); adds the gradient of the
 * budget penalty weight * max(0, mean - target) to dbeta (when dbeta != NULL). Returns the mean. */
double dua_gates_density(const float *beta, const double *frac, int H, int D, float weight, float target,
                         float *dbeta);
/* One layer's expected density (dua_gates_density or dua_router_density on that layer's gates), adding the
 * gradient of weight * max(0, density - target) to its gates' dbeta when weight > 0. */
typedef double (*dua_layer_density_fn)(void *user, int layer, float weight, float target);
/* The density budget of L layers at `scope` (dua_density_scope): per layer, weight / L * max(0, density_l -
 * target) for each layer; for the model, weight * max(0, mean_l density_l - target), which pushes every
 * layer by weight / L exactly when the mean exceeds the target (each layer is handed a target below any
 * density, -1, or above any, 2). Returns the mean of the layers' densities. */
double dua_density_budget(int scope, int L, float weight, float target, dua_layer_density_fn density,
                          void *user);
/* Hard depth of a head: the deepest level whose gate is on (z > 0), 0 when none is. */
int dua_gates_extract_depth(const float *z_head, int D);

#endif
