/* paper.c: paper routing mode's depth controller, Gumbel-Sigmoid gates and learned amplitudes (paper.h):
 * the z-normalized token-tree table, the controller's forward and backward on the train ops, the gates'
 * chain rule on the host, AdamW, and the state copies for checkpoints. */
#include "train/paper.h"
#include "dua.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int dua_paper_token_table(int n, float *table) {
  const int D = dua_token_tree_depth(n);
  /* causal pairs j <= i per level: the diagonal at D; for j < i, bit_length(i ^ j) = k (level D - k) holds
   * for the 2^(k-1) keys of the lower half of i's 2^k-aligned block when bit k-1 of i is set, else none */
  double count[40] = {0}, total = 0, mean = 0, var = 0;
  for (int i = 0; i < n; i++) {
    count[D] += 1;
    for (int k = 1; k <= D; k++)
      if ((i >> (k - 1)) & 1)
        count[D - k] += (double)(1 << (k - 1));
  }
  for (int v = 0; v <= D; v++) {
    total += count[v];
    mean += count[v] * v;
  }
  mean /= total;
  for (int v = 0; v <= D; v++)
    var += count[v] * (v - mean) * (v - mean);
  var /= total;
  const double sd = var > 0 ? sqrt(var) : 1.0; /* N = 1: one level, table 0 */
  for (int v = 0; v <= D; v++)
    table[v] = (float)((v - mean) / sd);
  return D + 1;
}

static uint64_t mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double sigmoid(double x) {
  return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

static dua_span span(dua_buffer *b, size_t off) {
  dua_span s = {b, off};
  return s;
}

void dua_paper_destroy(dua_paper *p) {
  if (!p)
    return;
  dua_buffer *bufs[] = {p->params, p->grads, p->adam_m, p->adam_v, p->acts, p->scale, p->dscale, p->table};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    dua_buffer_destroy(bufs[i]);
  free(p->alpha);
  free(p->alpha_m);
  free(p->alpha_v);
  free(p->dalpha);
  free(p->z);
  free(p->g);
  free(p->buf);
  free(p->gate_sum);
  free(p);
}

/* Activation offsets of layer l (hid, hidg, z) and of the shared gradient scratch. */
static size_t act_hid(const dua_paper *p, int l) {
  return (size_t)l * (size_t)p->R * (2 * (size_t)p->hidden + (size_t)p->H);
}
static size_t act_hidg(const dua_paper *p, int l) {
  return act_hid(p, l) + (size_t)p->R * (size_t)p->hidden;
}
static size_t act_z(const dua_paper *p, int l) {
  return act_hidg(p, l) + (size_t)p->R * (size_t)p->hidden;
}
static size_t act_dz(const dua_paper *p) {
  return act_hid(p, p->L);
}
static size_t act_dhidg(const dua_paper *p) {
  return act_dz(p) + (size_t)p->R * (size_t)p->H;
}
static size_t act_dhid(const dua_paper *p) {
  return act_dhidg(p) + (size_t)p->R * (size_t)p->hidden;
}

dua_status dua_paper_create(dua_context *ctx, dua_ops *ops, const dua_trainer_config *c, dua_paper **out) {
  dua_paper *p = calloc(1, sizeof *p);
  if (!p)
    return DUA_ERROR_OUT_OF_MEMORY;
  p->ctx = ctx, p->ops = ops;
  p->L = c->layers, p->H = c->heads, p->C = c->width, p->B = c->batch, p->T = c->seq_len;
  p->R = p->B * p->T, p->hidden = c->ctrl_hidden;
  p->levels = dua_paper_token_table(p->T, p->table_host);
  const size_t C = (size_t)p->C, Hc = (size_t)p->hidden, H = (size_t)p->H, R = (size_t)p->R;
  const size_t LH = (size_t)p->L * H;
  p->off_w1 = 0;
  p->off_b1 = Hc * C;
  p->off_w2 = p->off_b1 + Hc;
  p->off_b2 = p->off_w2 + H * (Hc ? Hc : C);
  p->per_layer = p->off_b2 + H;
  p->n_params = p->per_layer * (size_t)p->L;
  const size_t acts = act_dhid(p) + R * Hc;
  dua_status st = DUA_SUCCESS;
  dua_buffer **arenas[4] = {&p->params, &p->grads, &p->adam_m, &p->adam_v};
  for (int i = 0; i < 4 && st == DUA_SUCCESS; i++)
    st = dua_buffer_create(ctx, p->n_params * 4, arenas[i]);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, acts * 4, &p->acts);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, (size_t)p->L * R * H * 4, &p->scale);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, R * H * 4, &p->dscale);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, (size_t)p->levels * 4, &p->table);
  if (st == DUA_SUCCESS)
    st = dua_buffer_write(p->table, 0, (size_t)p->levels * 4, p->table_host);
  p->alpha = malloc(LH * 4), p->alpha_m = calloc(LH, 4), p->alpha_v = calloc(LH, 4),
  p->dalpha = calloc(LH, 4);
  p->z = malloc((size_t)p->L * R * H * 4), p->g = malloc((size_t)p->L * R * H * 4),
  p->buf = malloc(R * H * 4);
  p->gate_sum = calloc(LH, sizeof *p->gate_sum);
  float *init = malloc(p->n_params * 4);
  if (st == DUA_SUCCESS && (!p->alpha || !p->alpha_m || !p->alpha_v || !p->dalpha || !p->z || !p->g ||
                            !p->buf || !p->gate_sum || !init))
    st = DUA_ERROR_OUT_OF_MEMORY;
  if (st == DUA_SUCCESS) {
    uint64_t s = c->seed ^ 0xB1A5C0DEull;
    for (size_t i = 0; i < p->n_params; i++) {
      size_t in_layer = i % p->per_layer;
      int is_weight = in_layer < p->off_b1 || (in_layer >= p->off_w2 && in_layer < p->off_b2);
      double u1 = ((double)(mix(s += 2) >> 11) + 0.5) / 9007199254740992.0;
      double u2 = ((double)(mix(s + 1) >> 11) + 0.5) / 9007199254740992.0;
      init[i] = is_weight ? (float)(0.02 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2)) : 0.0f;
    }
    for (size_t i = 0; i < LH; i++)
      p->alpha[i] = 1.0f;
    st = dua_buffer_write(p->params, 0, p->n_params * 4, init);
  }
  free(init);
  if (st == DUA_SUCCESS)
    st = dua_op_fill(ops, span(p->adam_m, 0), p->n_params, 0.0f);
  if (st == DUA_SUCCESS)
    st = dua_op_fill(ops, span(p->adam_v, 0), p->n_params, 0.0f);
  if (st != DUA_SUCCESS) {
    dua_paper_destroy(p);
    return st;
  }
  *out = p;
  return DUA_SUCCESS;
}

#define TRY(call)                                                                                            \
  do {                                                                                                       \
    dua_status st_ = (call);                                                                                 \
    if (st_ != DUA_SUCCESS)                                                                                  \
      return st_;                                                                                            \
  } while (0)

static dua_span layer_param(const dua_paper *p, dua_buffer *arena, int l, size_t off) {
  return span(arena, (size_t)l * p->per_layer + off);
}

dua_status dua_paper_forward_layer(dua_paper *p, int l, dua_span ln1, dua_tensor *scale, dua_tensor *table) {
  const int R = p->R, H = p->H, T = p->T;
  dua_buffer *P = p->params, *A = p->acts;
  if (p->hidden > 0) {
    TRY(dua_op_matmul_forward(p->ops, span(A, act_hid(p, l)), ln1, layer_param(p, P, l, p->off_w1),
                              layer_param(p, P, l, p->off_b1), R, p->C, p->hidden));
    TRY(dua_op_gelu_forward(p->ops, span(A, act_hidg(p, l)), span(A, act_hid(p, l)), (size_t)R * p->hidden));
    TRY(dua_op_matmul_forward(p->ops, span(A, act_z(p, l)), span(A, act_hidg(p, l)),
                              layer_param(p, P, l, p->off_w2), layer_param(p, P, l, p->off_b2), R, p->hidden,
                              H));
  } else {
    TRY(dua_op_matmul_forward(p->ops, span(A, act_z(p, l)), ln1, layer_param(p, P, l, p->off_w2),
                              layer_param(p, P, l, p->off_b2), R, p->C, H));
  }
  float *z = p->z + (size_t)l * R * H, *g = p->g + (size_t)l * R * H;
  TRY(dua_buffer_read(A, 4 * act_z(p, l), (size_t)R * H * 4, z));
  for (int row = 0; row < R; row++)
    for (int h = 0; h < H; h++) {
      const size_t i = (size_t)row * H + h;
      double gate;
      if (p->gate == DUA_PAPER_TRAIN) {
        uint64_t r = mix(mix(mix(mix(mix(p->seed ^ 0x9A9E5ull) + p->step) + (uint64_t)l) + (uint64_t)row) +
                         (uint64_t)h);
        double u = ((double)(r >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        gate = sigmoid(((double)z[i] + log(u) - log1p(-u)) / p->tau); /* logistic = G1 - G2 */
      } else {
        gate = z[i] > 0.0f ? 1.0 : 0.0;
      }
      g[i] = (float)gate;
      if (row < p->collect_rows)
        p->gate_sum[(size_t)l * H + h] += sigmoid((double)z[i]);
      const int b = row / T, t = row % T;
      p->buf[((size_t)b * H + h) * T + t] = p->alpha[(size_t)l * H + h] * g[i]; /* (B, H, T) */
    }
  if (l == 0)
    p->gate_count += p->collect_rows;
  TRY(dua_buffer_write(p->scale, (size_t)l * R * H * 4, (size_t)R * H * 4, p->buf));
  dua_paper_layer_tensors(p, l, scale, table);
  return DUA_SUCCESS;
}

void dua_paper_layer_tensors(dua_paper *p, int l, dua_tensor *scale, dua_tensor *table) {
  *scale = dua_tensor_contiguous(p->scale, (size_t)l * p->R * p->H * 4, DUA_F32, p->B, p->H, p->T, 1);
  *table = dua_tensor_contiguous(p->table, 0, DUA_F32, 1, p->levels, 1, 1);
}

dua_tensor dua_paper_dscale_view(dua_paper *p) {
  return dua_tensor_contiguous(p->dscale, 0, DUA_F32, p->B, p->H, p->T, 1);
}

dua_status dua_paper_backward_layer(dua_paper *p, int l, dua_span ln1, dua_span dln) {
  const int R = p->R, H = p->H, T = p->T;
  if (p->gate != DUA_PAPER_TRAIN)
    return dua_fail(p->ctx, DUA_ERROR_INVALID_ARGUMENT, "paper backward: the gate is not the training gate");
  float *dr = p->buf, *dz = malloc((size_t)R * H * 4);
  if (!dz)
    return DUA_ERROR_OUT_OF_MEMORY;
  dua_status st = dua_buffer_read(p->dscale, 0, (size_t)R * H * 4, dr); /* (B, H, T) */
  const float *g = p->g + (size_t)l * R * H;
  for (int h = 0; h < H && st == DUA_SUCCESS; h++) {
    const double a = p->alpha[(size_t)l * H + h];
    double da = 0.0;
    for (int row = 0; row < R; row++) {
      const int b = row / T, t = row % T;
      const double d = dr[((size_t)b * H + h) * T + t], gi = g[(size_t)row * H + h];
      da += d * gi;                                                        /* r = alpha g */
      dz[(size_t)row * H + h] = (float)(d * a * gi * (1.0 - gi) / p->tau); /* g = sigmoid((z + n) / tau) */
    }
    p->dalpha[(size_t)l * H + h] += (float)da;
  }
  dua_buffer *A = p->acts, *P = p->params, *G = p->grads;
  if (st == DUA_SUCCESS)
    st = dua_buffer_write(A, 4 * act_dz(p), (size_t)R * H * 4, dz);
  free(dz);
  if (st != DUA_SUCCESS)
    return st;
  if (p->hidden > 0) {
    TRY(dua_op_fill(p->ops, span(A, act_dhidg(p)), (size_t)R * p->hidden, 0.0f));
    TRY(dua_op_matmul_backward(p->ops, span(A, act_dhidg(p)), layer_param(p, G, l, p->off_w2),
                               layer_param(p, G, l, p->off_b2), span(A, act_dz(p)), span(A, act_hidg(p, l)),
                               layer_param(p, P, l, p->off_w2), R, p->hidden, H));
    TRY(dua_op_fill(p->ops, span(A, act_dhid(p)), (size_t)R * p->hidden, 0.0f));
    TRY(dua_op_gelu_backward(p->ops, span(A, act_dhid(p)), span(A, act_hid(p, l)), span(A, act_dhidg(p)),
                             (size_t)R * p->hidden));
    TRY(dua_op_matmul_backward(p->ops, dln, layer_param(p, G, l, p->off_w1), layer_param(p, G, l, p->off_b1),
                               span(A, act_dhid(p)), ln1, layer_param(p, P, l, p->off_w1), R, p->C,
                               p->hidden));
  } else {
    TRY(dua_op_matmul_backward(p->ops, dln, layer_param(p, G, l, p->off_w2), layer_param(p, G, l, p->off_b2),
                               span(A, act_dz(p)), ln1, layer_param(p, P, l, p->off_w2), R, p->C, H));
  }
  return DUA_SUCCESS;
}

dua_status dua_paper_zero_grads(dua_paper *p) {
  memset(p->dalpha, 0, (size_t)p->L * p->H * 4);
  return dua_op_fill(p->ops, span(p->grads, 0), p->n_params, 0.0f);
}

dua_status dua_paper_grad_sumsq(dua_paper *p, double *ss) {
  float dev = 0.0f;
  TRY(dua_op_sumsq(p->ops, span(p->grads, 0), p->n_params, &dev));
  double s = dev;
  for (size_t i = 0; i < (size_t)p->L * p->H; i++)
    s += (double)p->dalpha[i] * p->dalpha[i];
  *ss = s;
  return DUA_SUCCESS;
}

dua_status dua_paper_update(dua_paper *p, const dua_trainer_config *c, float lr, int t, float grad_scale) {
  for (int l = 0; l < p->L; l++) {
    const size_t base = (size_t)l * p->per_layer;
    const size_t parts[4][2] = {{p->off_w1, p->off_b1 - p->off_w1},
                                {p->off_b1, p->off_w2 - p->off_b1},
                                {p->off_w2, p->off_b2 - p->off_w2},
                                {p->off_b2, p->per_layer - p->off_b2}};
    for (int k = 0; k < 4; k++) {
      if (parts[k][1] == 0)
        continue;
      const size_t off = base + parts[k][0];
      TRY(dua_op_adamw(p->ops, span(p->params, off), span(p->grads, off), span(p->adam_m, off),
                       span(p->adam_v, off), parts[k][1], lr, c->beta1, c->beta2, c->adam_eps,
                       (k == 0 || k == 2) ? c->weight_decay : 0.0f, t, grad_scale));
    }
  }
  const double b1c = 1.0 - pow(c->beta1, t), b2c = 1.0 - pow(c->beta2, t);
  for (size_t i = 0; i < (size_t)p->L * p->H; i++) {
    float g = p->dalpha[i] * grad_scale;
    p->alpha_m[i] = c->beta1 * p->alpha_m[i] + (1.0f - c->beta1) * g;
    p->alpha_v[i] = c->beta2 * p->alpha_v[i] + (1.0f - c->beta2) * g * g;
    p->alpha[i] -= (float)(lr * ((p->alpha_m[i] / b1c) / (sqrt(p->alpha_v[i] / b2c) + c->adam_eps)));
  }
  return DUA_SUCCESS;
}

dua_status dua_paper_state_read(dua_paper *p, float *dev, float *alpha) {
  const size_t n = p->n_params, LH = (size_t)p->L * p->H;
  TRY(dua_buffer_read(p->params, 0, n * 4, dev));
  TRY(dua_buffer_read(p->adam_m, 0, n * 4, dev + n));
  TRY(dua_buffer_read(p->adam_v, 0, n * 4, dev + 2 * n));
  memcpy(alpha, p->alpha, LH * 4);
  memcpy(alpha + LH, p->alpha_m, LH * 4);
  memcpy(alpha + 2 * LH, p->alpha_v, LH * 4);
  return DUA_SUCCESS;
}

dua_status dua_paper_state_write(dua_paper *p, const float *dev, const float *alpha) {
  const size_t n = p->n_params, LH = (size_t)p->L * p->H;
  TRY(dua_buffer_write(p->params, 0, n * 4, dev));
  TRY(dua_buffer_write(p->adam_m, 0, n * 4, dev + n));
  TRY(dua_buffer_write(p->adam_v, 0, n * 4, dev + 2 * n));
  memcpy(p->alpha, alpha, LH * 4);
  memcpy(p->alpha_m, alpha + LH, LH * 4);
  memcpy(p->alpha_v, alpha + 2 * LH, LH * 4);
  return DUA_SUCCESS;
}
