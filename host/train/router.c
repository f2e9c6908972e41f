/* router.c: content routing mode's per-node router on the host: path sampling (hard Gumbel-Softmax or
 * argmax), the straight-through gradient from the block-pair gradients of the attention backward, the
 * per-node load-balancing loss, and the path-dependent lca fractions for the density budget (router.h).
 * Few numbers (B * nb blocks per layer and head): computed here in double, deterministic. */
#include "train/router.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double unit(uint64_t r) {
  return ((double)(r >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

dua_router_dims dua_router_dims_of(int L, int H, int D, int p, int C) {
  dua_router_dims d;
  d.L = L, d.H = H, d.D = D, d.p = p, d.C = C;
  long nodes = 0, level = 1;
  for (int j = 0; j < D; j++, level *= p)
    nodes += level;
  d.nodes = (int)nodes;
  d.per_head = (size_t)nodes * (size_t)p * (size_t)(C + 1);
  d.total = (size_t)L * (size_t)H * d.per_head;
  return d;
}

void dua_router_init(const dua_router_dims *d, uint64_t seed, float *w) {
  uint64_t s = mix(seed ^ 0xC0A7E27ull);
  for (size_t i = 0; i < d->total; i++) {
    size_t c = i % (size_t)(d->C + 1);
    if (c == (size_t)d->C) {
      w[i] = 0.0f; /* bias */
      continue;
    }
    s = mix(s);
    double u1 = unit(s);
    s = mix(s);
    double u2 = unit(s);
    w[i] = (float)(0.02 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
  }
}

/* first node index of level j (0-based): (p^j - 1) / (p - 1) */
static int level_offset(int p, int j) {
  int off = 0, pw = 1;
  for (int i = 0; i < j; i++, pw *= p)
    off += pw;
  return off;
}

/* logits of node nd for input x: out [p]. Four partial sums (columns c mod 4), added in a fixed order: a
 * single chain of dependent double adds made the router's forward latency-bound (3 ms per layer at B 16,
 * nb 32, H 4, D 5, C 128 on one CPU core; 4 chains: see bench/RESULTS.md). */
static void node_logits(const dua_router_dims *d, const float *wh, int nd, const float *x, double *out) {
  const size_t row = (size_t)d->C + 1;
  const float *wn = wh + (size_t)nd * d->p * row;
  for (int k = 0; k < d->p; k++) {
    const float *wk = wn + k * row;
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    int c = 0;
    for (; c + 4 <= d->C; c += 4)
      for (int u = 0; u < 4; u++)
        acc[u] += (double)wk[c + u] * x[c + u];
    for (; c < d->C; c++)
      acc[c & 3] += (double)wk[c] * x[c];
    out[k] = wk[d->C] + ((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
}

static void softmax_tau(const double *z, int p, float tau, double *y) {
  double mx = z[0], sum = 0.0;
  for (int k = 1; k < p; k++)
    mx = z[k] > mx ? z[k] : mx;
  for (int k = 0; k < p; k++)
    sum += (y[k] = exp((z[k] - mx) / tau));
  for (int k = 0; k < p; k++)
    y[k] /= sum;
}

void dua_router_forward(const dua_router_dims *d, const float *w, const float *x, int B, int nb, float tau,
                        int noise, uint64_t seed, uint64_t step, int layer, uint8_t *paths, float *soft,
                        int32_t *node) {
  const int H = d->H, D = d->D, p = d->p;
  double z[256], y[256];
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int m = 0; m < nb; m++) {
        const float *xm = x + ((size_t)b * nb + m) * d->C;
        const size_t blk = ((size_t)b * H + h) * nb + m;
        int prefix = 0;
        for (int j = 0; j < D; j++) {
          const int nd = level_offset(p, j) + prefix;
          node_logits(d, w + (size_t)h * d->per_head, nd, xm, z);
          if (noise) {
            uint64_t r = mix(mix(mix(mix(mix(seed ^ 0x9A7B5ull) + step) + (uint64_t)layer) + blk * 64 + j) +
                             (uint64_t)b);
            for (int k = 0; k < p; k++) {
              r = mix(r);
              z[k] += -log(-log(unit(r))); /* Gumbel(0, 1) */
            }
          }
          int best = 0;
          for (int k = 1; k < p; k++)
            if (z[k] > z[best])
              best = k;
          paths[blk * D + j] = (uint8_t)best;
          if (soft) {
            softmax_tau(z, p, tau, y);
            for (int k = 0; k < p; k++)
              soft[(blk * D + j) * p + k] = (float)y[k];
          }
          if (node)
            node[blk * D + j] = nd;
          prefix = prefix * p + best;
        }
      }
}

void dua_router_bias_grad(const float *c, const double *a, int D, double *out) {
  /* d/da[j] = -prefix[j] * tail[j] with prefix[j] = prod_{i < j} a[i] and tail[j] = sum_{l >= j} c[l]
   * prod_{j < i <= l} a[i] = c[j] + a[j + 1] tail[j + 1]: O(D) instead of the O(D^3) of the sum as written */
  double tail = 0.0;
  for (int j = D - 1; j >= 0; j--) {
    tail = c[j] + (j + 1 < D ? a[j + 1] * tail : 0.0);
    out[j] = tail; /* the prefix products are applied below */
  }
  double prefix = 1.0;
  for (int j = 0; j < D; j++) {
    out[j] = -prefix * out[j];
    prefix *= a[j];
  }
}

/* c [D] of head h from beta [H][D + 1] */
static void bias_steps(const float *beta, int h, int D, float *c) {
  for (int l = 0; l < D; l++)
    c[l] = beta[h * (D + 1) + l] - beta[h * (D + 1) + l + 1];
}

/* Balance statistics of head h: counts [nodes][p] of hard digits and sums [nodes][p] of soft probabilities
 * over the blocks of sequences b0 .. b1 - 1, per node. */
static void node_stats(const dua_router_dims *d, int b0, int b1, int nb, int h, const uint8_t *paths,
                       const float *soft, const int32_t *node, double *counts, double *sums) {
  const int D = d->D, p = d->p, H = d->H;
  memset(counts, 0, (size_t)d->nodes * p * sizeof *counts);
  memset(sums, 0, (size_t)d->nodes * p * sizeof *sums);
  for (int b = b0; b < b1; b++)
    for (int m = 0; m < nb; m++) {
      const size_t blk = ((size_t)b * H + h) * nb + m;
      for (int j = 0; j < D; j++) {
        const int nd = node[blk * D + j];
        counts[nd * p + paths[blk * D + j]] += 1.0;
        for (int k = 0; k < p; k++)
          sums[nd * p + k] += soft[(blk * D + j) * p + k];
      }
    }
}

/* balance loss of head h summed over levels: sum_j sum_nd (N_nd / N) p sum_k f_k P_k
 * = p / N sum_nd sum_k (count_k / N_nd) sum_soft_k, N = B nb. With the statistics of one sequence
 * (per-sequence scope) it is that sequence's loss divided by B, so the sequences' calls add up to their mean.
 */
static double balance_loss(const dua_router_dims *d, int B, int nb, const double *counts,
                           const double *sums) {
  const int p = d->p;
  const double N = (double)B * nb;
  double loss = 0.0;
  for (int nd = 0; nd < d->nodes; nd++) {
    double n_nd = 0.0;
    for (int k = 0; k < p; k++)
      n_nd += counts[nd * p + k];
    if (n_nd == 0.0)
      continue;
    for (int k = 0; k < p; k++)
      loss += p / N * (counts[nd * p + k] / n_nd) * sums[nd * p + k];
  }
  return loss;
}

/* dLoss/dy at the hard digits of one (sequence, head) for the training gradient: a_i(m, n) = 1 before the
 * first disagreement s of the two paths and 0 at s, so with csum[j] = sum_{l >= j} c[l]:
 *   j < s: da[j] = -(csum[j] - csum[s]), on the digit both blocks share;
 *   j = s < D: da[s] = -(csum[s] - csum[s2]), s2 the next disagreement after s (or D), on the other's digit.
 * A pair (m, n) and its mirror (n, m) have the same s and s2, so they go together with g[m][n] + g[n][m]. The
 * j < s terms of block m only depend on s: wsum [nb][2][D + 1] gathers, per s, the pair gradients and those
 * times csum[s], and a suffix sum over s turns them into every level's term. paths [nb][D], g [nb][nb], dy
 * [nb][D][p] (zeroed by the caller). */
static void hard_pair_grads(const float *g, const uint8_t *paths, int nb, int D, int p, const double *csum,
                            double *wsum, double *dy) {
  memset(wsum, 0, (size_t)nb * 2 * (D + 1) * sizeof *wsum);
  for (int m = 0; m < nb; m++)
    for (int n = m + 1; n < nb; n++) {
      const double gs = (double)g[(size_t)m * nb + n] + g[(size_t)n * nb + m];
      if (gs == 0.0)
        continue;
      const uint8_t *pm = paths + (size_t)m * D, *pn = paths + (size_t)n * D;
      int s = 0, s2;
      while (s < D && pm[s] == pn[s])
        s++;
      for (s2 = s + 1; s2 < D && pm[s2] == pn[s2]; s2++) /* read only when s < D, so s2 <= D */
        ;
      double *wm = wsum + (size_t)m * 2 * (D + 1), *wn = wsum + (size_t)n * 2 * (D + 1);
      wm[s] += gs, wn[s] += gs;
      wm[D + 1 + s] += gs * csum[s], wn[D + 1 + s] += gs * csum[s];
      if (s < D) {
        const double coef = -gs * (csum[s] - csum[s2]);
        dy[((size_t)m * D + s) * p + pn[s]] += coef;
        dy[((size_t)n * D + s) * p + pm[s]] += coef;
      }
    }
  for (int m = 0; m < nb; m++) { /* j < s: -sum_{s > j} W[s] (csum[j] - csum[s]) */
    const double *w = wsum + (size_t)m * 2 * (D + 1);
    double tw = 0.0, twc = 0.0; /* sums over s > j of W[s] and of W[s] csum[s] */
    for (int j = D - 1; j >= 0; j--) {
      tw += w[j + 1], twc += w[D + 1 + j + 1];
      dy[((size_t)m * D + j) * p + paths[(size_t)m * D + j]] -= csum[j] * tw - twc;
    }
  }
}

double dua_router_backward(const dua_router_dims *d, const float *x, int B, int nb, const uint8_t *paths,
                           const float *soft, const int32_t *node, const float *g, const float *beta,
                           float tau, int soft_agreement, double balance_scale, int per_sequence, float *dw) {
  const int H = d->H, D = d->D, p = d->p;
  const size_t row = (size_t)d->C + 1;
  double *dy = calloc((size_t)nb * D * p, sizeof *dy);
  double *wsum = malloc((size_t)nb * (D + 1) * 2 * sizeof *wsum);
  double *counts = malloc((size_t)d->nodes * p * sizeof *counts);
  double *sums = malloc((size_t)d->nodes * p * sizeof *sums);
  double a[64], da[64];
  float c[64];
  double total = 0.0;
  if (!dy || !wsum || !counts || !sums || D > 64) {
    free(dy);
    free(wsum);
    free(counts);
    free(sums);
    return NAN;
  }
  const double N = (double)B * nb;
  for (int h = 0; h < H; h++) {
    bias_steps(beta, h, D, c);
    if (!per_sequence) {
      node_stats(d, 0, B, nb, h, paths, soft, node, counts, sums);
      total += balance_loss(d, B, nb, counts, sums);
    }
    double csum[65]; /* csum[j] = sum_{l >= j} c[l] */
    csum[D] = 0.0;
    for (int j = D - 1; j >= 0; j--)
      csum[j] = csum[j + 1] + c[j];
    float *dwh = dw + (size_t)h * d->per_head;
    for (int b = 0; b < B; b++) {
      const size_t base = ((size_t)b * H + h) * nb;
      if (per_sequence) {
        node_stats(d, b, b + 1, nb, h, paths, soft, node, counts, sums);
        total += balance_loss(d, B, nb, counts, sums);
      }
      memset(dy, 0, (size_t)nb * D * p * sizeof *dy);
      const float *gbh = g + base * nb;
      if (!soft_agreement) /* training: the hard digits (straight-through) */
        hard_pair_grads(gbh, paths + base * D, nb, D, p, csum, wsum, dy);
      else /* the smooth surrogate (tests): agreements a_j = y_m,j . y_n,j of the soft probabilities */
        for (int m = 0; m < nb; m++)
          for (int n = 0; n < nb; n++) {
            const double gv = gbh[(size_t)m * nb + n];
            if (m == n || gv == 0.0)
              continue;
            const float *sm = soft + (base + m) * D * p, *sn = soft + (base + n) * D * p;
            for (int j = 0; j < D; j++) {
              double s = 0.0;
              for (int k = 0; k < p; k++)
                s += (double)sm[j * p + k] * sn[j * p + k];
              a[j] = s;
            }
            dua_router_bias_grad(c, a, D, da);
            for (int j = 0; j < D; j++) {
              const double coef = gv * da[j];
              if (coef == 0.0)
                continue;
              double *dym = dy + ((size_t)m * D + j) * p, *dyn = dy + ((size_t)n * D + j) * p;
              for (int k = 0; k < p; k++) {
                dym[k] += coef * sn[j * p + k];
                dyn[k] += coef * sm[j * p + k];
              }
            }
          }
      for (int m = 0; m < nb; m++) {
        const float *xm = x + ((size_t)b * nb + m) * d->C;
        for (int j = 0; j < D; j++) {
          const size_t at = (base + m) * D + j;
          const int nd = node[at];
          double *dyj = dy + ((size_t)m * D + j) * p;
          if (balance_scale != 0.0) {
            double n_nd = 0.0;
            for (int k = 0; k < p; k++)
              n_nd += counts[nd * p + k];
            for (int k = 0; k < p; k++)
              dyj[k] += balance_scale * p / N * (counts[nd * p + k] / n_nd);
          }
          const float *y = soft + at * p;
          double dot = 0.0;
          for (int k = 0; k < p; k++)
            dot += y[k] * dyj[k];
          float *wn = dwh + (size_t)nd * p * row;
          for (int k = 0; k < p; k++) {
            const double dz = y[k] * (dyj[k] - dot) / tau; /* softmax((z + noise) / tau) */
            if (dz == 0.0)
              continue;
            for (int cc = 0; cc < d->C; cc++)
              wn[k * row + cc] += (float)(dz * xm[cc]);
            wn[k * row + d->C] += (float)dz;
          }
        }
      }
    }
  }
  free(dy);
  free(wsum);
  free(counts);
  free(sums);
  return total;
}

double dua_router_surrogate(const dua_router_dims *d, const float *w, const float *x, int B, int nb,
                            const uint8_t *paths, const int32_t *node, const float *g, const float *beta,
                            float tau, double balance_scale, int per_sequence) {
  const int H = d->H, D = d->D, p = d->p;
  const size_t nsoft = (size_t)B * H * nb * D * p;
  float *soft = malloc(nsoft * sizeof *soft);    /* for the balance statistics */
  double *dsoft = malloc(nsoft * sizeof *dsoft); /* unrounded, for the agreements */
  double *counts = malloc((size_t)d->nodes * p * sizeof *counts);
  double *sums = malloc((size_t)d->nodes * p * sizeof *sums);
  double z[256], y[256];
  float c[64];
  double f = 0.0;
  if (!soft || !dsoft || !counts || !sums || D > 64) {
    free(soft);
    free(dsoft);
    free(counts);
    free(sums);
    return NAN;
  }
  for (int b = 0; b < B; b++) /* soft probabilities at the fixed nodes, no noise */
    for (int h = 0; h < H; h++)
      for (int m = 0; m < nb; m++) {
        const size_t blk = ((size_t)b * H + h) * nb + m;
        for (int j = 0; j < D; j++) {
          node_logits(d, w + (size_t)h * d->per_head, node[blk * D + j], x + ((size_t)b * nb + m) * d->C, z);
          softmax_tau(z, p, tau, y);
          for (int k = 0; k < p; k++) {
            soft[(blk * D + j) * p + k] = (float)y[k];
            dsoft[(blk * D + j) * p + k] = y[k];
          }
        }
      }
  for (int h = 0; h < H; h++) {
    bias_steps(beta, h, D, c);
    for (int s0 = 0; s0 < B; s0 += per_sequence ? 1 : B) { /* the sequences one statistic covers */
      const int s1 = per_sequence ? s0 + 1 : B;
      node_stats(d, s0, s1, nb, h, paths, soft, node, counts, sums);
      /* the balance loss from unrounded probabilities */
      memset(sums, 0, (size_t)d->nodes * p * sizeof *sums);
      for (int b = s0; b < s1; b++)
        for (int m = 0; m < nb; m++)
          for (int j = 0; j < D; j++) {
            const size_t at = (((size_t)b * H + h) * nb + m) * D + j;
            for (int k = 0; k < p; k++)
              sums[node[at] * p + k] += dsoft[at * p + k];
          }
      f += balance_scale * balance_loss(d, B, nb, counts, sums);
    }
    for (int b = 0; b < B; b++) {
      const size_t base = ((size_t)b * H + h) * nb;
      for (int m = 0; m < nb; m++)
        for (int n = 0; n < nb; n++) {
          const double gv = g[(base + m) * nb + n];
          if (m == n || gv == 0.0)
            continue;
          double prod = 1.0, bias = 0.0;
          for (int j = 0; j < D; j++) {
            double s = 0.0;
            for (int k = 0; k < p; k++)
              s += dsoft[((base + m) * D + j) * p + k] * dsoft[((base + n) * D + j) * p + k];
            prod *= s;
            bias += c[j] * (1.0 - prod);
          }
          f += gv * bias;
        }
    }
  }
  free(soft);
  free(dsoft);
  free(counts);
  free(sums);
  return f;
}

static int common_prefix(const uint8_t *a, const uint8_t *b, int D) {
  int k = 0;
  while (k < D && a[k] == b[k])
    k++;
  return k;
}

void dua_router_lca_fractions(const uint8_t *paths, int B, int H, int nb, int D, int T, int blk,
                              double *frac) {
  memset(frac, 0, (size_t)H * (D + 1) * sizeof *frac);
  double total = 0.0;
  for (int m = 0; m < nb; m++)
    for (int n = 0; n <= m; n++) {
      int q0 = m * blk, q1 = q0 + blk < T ? q0 + blk : T, k0 = n * blk, k1 = k0 + blk < T ? k0 + blk : T;
      double pairs = 0.0;
      for (int i = q0; i < q1; i++) {
        int hi = i + 1 < k1 ? i + 1 : k1;
        pairs += hi > k0 ? hi - k0 : 0;
      }
      total += pairs;
      for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
          const uint8_t *base = paths + ((size_t)b * H + h) * nb * D;
          frac[h * (D + 1) + common_prefix(base + (size_t)m * D, base + (size_t)n * D, D)] += pairs / B;
        }
    }
  for (int i = 0; i < H * (D + 1); i++)
    frac[i] /= total;
}

double dua_router_density(const float *beta, const double *frac, int H, int D, float weight, float target,
                          float *dbeta) {
  double mean = 0.0;
  for (int h = 0; h < H; h++)
    for (int k = 0; k <= D; k++)
      mean += frac[h * (D + 1) + k] * exp((double)beta[h * (D + 1) + k]) / H;
  if (dbeta && weight > 0 && mean > target)
    for (int h = 0; h < H; h++)
      for (int k = 0; k <= D; k++)
        dbeta[h * (D + 1) + k] +=
            (float)(weight / H * frac[h * (D + 1) + k] * exp((double)beta[h * (D + 1) + k]));
  return mean;
}
