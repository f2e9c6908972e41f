/* gates.c: Gumbel-Sigmoid gates of native routing mode: sampling, level bias, gradients, expected
 * density and depth extraction (see gates.h). softplus/sigmoid are written in their stable forms so a
 * saturated gate gives a large finite negative bias, never -inf or NaN. */
#include "train/gates.h"
#include "dua_train.h"

#include <math.h>
#include <string.h>

static uint64_t mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double softplus(double x) {
  return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}
static double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

void dua_gates_sample(const float *z, int H, int D, float tau, uint64_t seed, uint64_t step, int layer,
                      int noise, float *x, float *beta) {
  for (int h = 0; h < H; h++) {
    for (int l = 0; l < D; l++) {
      double n = 0.0;
      if (noise) {
        uint64_t r = mix(mix(mix(mix(seed ^ 0x6A7E5ull) + step) + (uint64_t)layer) + (uint64_t)(h * 64 + l));
        double u = ((double)(r >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        n = log(u) - log1p(-u); /* logistic = difference of two Gumbels */
      }
      x[h * D + l] = (float)((z[h * D + l] + n) / tau);
    }
    double acc = 0.0;
    beta[h * (D + 1) + D] = 0.0f;
    for (int k = D - 1; k >= 0; k--) {
      acc -= softplus(x[h * D + k]); /* gate level k + 1 */
      beta[h * (D + 1) + k] = (float)acc;
    }
  }
}

int dua_gates_skip_depth(const float *beta, int D, float cutoff) {
  for (int k = 0; k <= D; k++)
    if (beta[k] >= cutoff)
      return k;
  return D;
}

void dua_gates_backward(const float *x, const float *dbeta, int H, int D, float tau, float *dz) {
  for (int h = 0; h < H; h++) {
    double prefix = 0.0; /* sum_{k < l} dbeta[k] */
    for (int l = 1; l <= D; l++) {
      prefix += dbeta[h * (D + 1) + l - 1];
      dz[h * D + l - 1] += (float)(prefix * -sigmoid(x[h * D + l - 1]) / tau);
    }
  }
}

static int lca_level(int m, int n, int p, int D, int s) {
  long long g = 1; /* p^(D - d) for d = 1 */
  for (int i = 1; i < D; i++)
    g *= p;
  for (int d = 1; d <= D; d++, g /= p) /* d = 0 (the root) is shared by every pair, whatever the shift */
    if ((m + s) / g != (n + s) / g)
      return d - 1;
  return D;
}

void dua_gates_lca_fractions(int T, int blk, int p, int D, int s, double *frac) {
  for (int k = 0; k <= D; k++)
    frac[k] = 0.0;
  const int nb = (T + blk - 1) / blk;
  double total = 0.0;
  for (int m = 0; m < nb; m++)
    for (int n = 0; n <= m; n++) {
      /* causal token pairs between query block m and key block n */
      int q0 = m * blk, q1 = q0 + blk < T ? q0 + blk : T, k0 = n * blk, k1 = k0 + blk < T ? k0 + blk : T;
      double pairs = 0.0;
      for (int i = q0; i < q1; i++) {
        int hi = i + 1 < k1 ? i + 1 : k1;
        pairs += hi > k0 ? hi - k0 : 0;
      }
      frac[lca_level(m, n, p, D, s)] += pairs;
      total += pairs;
    }
  for (int k = 0; k <= D; k++)
    frac[k] /= total;
}

void dua_gates_block_fractions(const uint8_t *paths, int B, int H, int nb, int D, int p, int s, int blk,
                               int window, int sink, double *frac, double *base) {
  if (!paths)
    B = 1;
  const double scale = 1.0 / ((double)B * nb * (nb + 1) / 2);
  for (int h = 0; h < H; h++) {
    double *fh = frac + (size_t)h * (D + 1);
    if (!paths && h > 0) { /* the positional tree: every head alike */
      memcpy(fh, frac, (size_t)(D + 1) * sizeof *fh);
      base[h] = base[0];
      continue;
    }
    for (int k = 0; k <= D; k++)
      fh[k] = 0.0;
    base[h] = 0.0;
    for (int b = 0; b < B; b++) {
      const uint8_t *ph = paths ? paths + ((size_t)b * H + h) * nb * D : NULL; /* [nb][D] */
      for (int m = 0; m < nb; m++)
        for (int n = 0; n <= m; n++) {
          const int extra = n == m || (window > 0 && (m - n - 1) * blk + 1 <= window) ||
                            (sink > 0 && n * blk < sink); /* some token pair visible whatever the tree */
          if (extra) {
            base[h] += scale;
            continue;
          }
          int k = 0;
          if (ph)
            while (k < D && ph[(size_t)m * D + k] == ph[(size_t)n * D + k])
              k++;
          else
            k = lca_level(m, n, p, D, s);
          fh[k] += scale;
        }
    }
  }
}

double dua_gates_density(const float *beta, const double *frac, int H, int D, float weight, float target,
                         float *dbeta) {
  double mean = 0.0;
  for (int h = 0; h < H; h++)
    for (int k = 0; k <= D; k++)
      mean += frac[k] * exp((double)beta[h * (D + 1) + k]) / H;
  if (dbeta && weight > 0 && mean > target) /* the layer's budget: heads share it, so some may stay dense */
    for (int h = 0; h < H; h++)
      for (int k = 0; k <= D; k++)
        dbeta[h * (D + 1) + k] += (float)(weight / H * frac[k] * exp((double)beta[h * (D + 1) + k]));
  return mean;
}

double dua_density_budget(int scope, int L, float weight, float target, dua_layer_density_fn density,
                          void *user) {
  double mean = 0.0;
  for (int l = 0; l < L; l++)
    mean += density(user, l, 0.0f, 0.0f) / L;
  const float layer_target = scope != DUA_DENSITY_MODEL ? target : mean > target ? -1.0f : 2.0f;
  for (int l = 0; l < L; l++)
    density(user, l, weight / L, layer_target);
  return mean;
}

int dua_gates_extract_depth(const float *z_head, int D) {
  for (int l = D; l >= 1; l--)
    if (z_head[l - 1] > 0.0f)
      return l;
  return 0;
}
