/* model.c: the trainer's GPT-style model on the device: arenas, initialization, forward + cross-entropy,
 * backward (llm.c's structure: one running residual gradient), gradient norm and AdamW.
 * Attention runs through dua_attention_forward/backward on strided views of the QKV activations, with one
 * causal layout per layer whose per-head depths come from the routing (native mode adds a level bias; paper
 * mode a token-tree bias scaled per position by paper.h's controller, which reads the layer's LN1 output). */
#include "train/model.h"
#include "train/paper.h"
#include "train/task.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Activation arena offsets (fp32 elements). Per-layer arrays hold L copies back to back. */
typedef struct act_offsets {
  size_t encoded;                    /* [R, C] */
  size_t ln1, ln1_mean, ln1_rstd;    /* [L][R, C], [L][R], [L][R] */
  size_t qkv;                        /* [L][R, 3C] */
  size_t atty;                       /* [L][R, C] attention output, (B, T, H, Dh) */
  size_t lse;                        /* [L][B, H, T] */
  size_t residual2;                  /* [L][R, C] */
  size_t ln2, ln2_mean, ln2_rstd;    /* [L][R, C], [L][R], [L][R] */
  size_t fch, fch_gelu;              /* [L][R, M] */
  size_t residual3;                  /* [L][R, C] */
  size_t lnf, lnf_mean, lnf_rstd;    /* [R, C], [R], [R] */
  size_t logits;                     /* [R, V] (dlogits after the loss) */
  size_t losses, preds;              /* [R] fp32, [R] int32 */
  size_t tmp;                        /* [R, C] projection output before the residual add */
  size_t dresidual, dln, dq, dk, dv; /* [R, C] gradients, reused per layer */
  size_t datty;                      /* [R, C] */
  size_t dfch, dfch_gelu;            /* [R, M] */
  size_t total;
} act_offsets;

static act_offsets offsets_of(const dua_model_dims *d) {
  act_offsets a;
  const size_t R = (size_t)d->R, C = (size_t)d->C, M = (size_t)d->M, L = (size_t)d->L;
  size_t at = 0;
#define TAKE(field, n)                                                                                       \
  do {                                                                                                       \
    a.field = at;                                                                                            \
    at += (n);                                                                                               \
  } while (0)
  TAKE(encoded, R * C);
  TAKE(ln1, L * R * C);
  TAKE(ln1_mean, L * R);
  TAKE(ln1_rstd, L * R);
  TAKE(qkv, L * R * 3 * C);
  TAKE(atty, L * R * C);
  TAKE(lse, L * R * (size_t)d->H);
  TAKE(residual2, L * R * C);
  TAKE(ln2, L * R * C);
  TAKE(ln2_mean, L * R);
  TAKE(ln2_rstd, L * R);
  TAKE(fch, L * R * M);
  TAKE(fch_gelu, L * R * M);
  TAKE(residual3, L * R * C);
  TAKE(lnf, R * C);
  TAKE(lnf_mean, R);
  TAKE(lnf_rstd, R);
  TAKE(logits, R * (size_t)d->V);
  TAKE(losses, R);
  TAKE(preds, R);
  TAKE(tmp, R * C);
  TAKE(dresidual, R * C);
  TAKE(dln, R * C);
  TAKE(dq, R * C);
  TAKE(dk, R * C);
  TAKE(dv, R * C);
  TAKE(datty, R * C);
  TAKE(dfch, R * M);
  TAKE(dfch_gelu, R * M);
#undef TAKE
  a.total = at;
  return a;
}

static dua_span span(dua_buffer *b, size_t off) {
  dua_span s = {b, off};
  return s;
}
static const dua_span no_span = {NULL, 0};

/* Parameter tensor p of layer l (l ignored for global tensors). */
static dua_span param(const dua_model *m, dua_buffer *arena, int p, int l) {
  size_t per_layer = (p >= P_LN1W && p <= P_FCPROJB) ? m->param_size[p] / (size_t)m->d.L : 0;
  return span(arena, m->param_off[p] + (size_t)l * per_layer);
}

/* (B, H, T, Dh) view of columns [col, col + C) of a [R, row_len] activation at element offset off. */
static dua_tensor head_view(const dua_model *m, size_t off, size_t col, size_t row_len) {
  const dua_model_dims *d = &m->d;
  dua_tensor t;
  memset(&t, 0, sizeof t);
  t.buffer = m->acts;
  t.offset = 4 * (off + col);
  t.dtype = DUA_F32;
  t.shape[0] = d->B, t.shape[1] = d->H, t.shape[2] = d->T, t.shape[3] = d->Dh;
  t.strides[0] = (int64_t)d->T * (int64_t)row_len, t.strides[1] = d->Dh;
  t.strides[2] = (int64_t)row_len, t.strides[3] = 1;
  return t;
}

/* Splitmix64 + Box-Muller: the initialization stream (a pure function of the seed). */
static uint64_t mix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static double uniform01(uint64_t *s) {
  return ((double)(mix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float normal(uint64_t *s) {
  double u1 = uniform01(s), u2 = uniform01(s);
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static dua_status init_params(dua_model *m) {
  float *host = malloc(m->num_params * sizeof *host);
  if (!host)
    return DUA_ERROR_OUT_OF_MEMORY;
  uint64_t s = m->cfg.seed ^ 0x5EEDC0DEull;
  const float resid_scale = 1.0f / sqrtf(2.0f * (float)m->d.L);
  for (int p = 0; p < P_COUNT; p++) {
    float *x = host + m->param_off[p];
    size_t n = m->param_size[p];
    int is_ln_w = p == P_LN1W || p == P_LN2W || p == P_LNFW;
    int is_bias = p == P_QKVB || p == P_ATTPROJB || p == P_FCB || p == P_FCPROJB || p == P_LN1B ||
                  p == P_LN2B || p == P_LNFB;
    float scale = (p == P_ATTPROJW || p == P_FCPROJW) ? 0.02f * resid_scale : 0.02f;
    for (size_t i = 0; i < n; i++)
      x[i] = is_ln_w ? 1.0f : is_bias ? 0.0f : scale * normal(&s);
  }
  dua_status st = dua_buffer_write(m->params, 0, m->num_params * 4, host);
  free(host);
  if (st == DUA_SUCCESS)
    st = dua_op_fill(m->ops, span(m->adam_m, 0), m->num_params, 0.0f);
  if (st == DUA_SUCCESS)
    st = dua_op_fill(m->ops, span(m->adam_v, 0), m->num_params, 0.0f);
  return st;
}

int dua_tree_depth_of(int nb, int p) {
  int d = 0;
  long long g = 1;
  while (g < nb) {
    g *= p;
    d++;
  }
  return d;
}

size_t dua_model_param_layout(const dua_trainer_config *cfg, int vocab, size_t size[P_COUNT],
                              size_t offset[P_COUNT]) {
  const size_t V = (size_t)vocab, T = (size_t)cfg->seq_len, C = (size_t)cfg->width;
  const size_t M = (size_t)cfg->mlp_ratio * C, L = (size_t)cfg->layers;
  const size_t sizes[P_COUNT] = {V * C, T * C, L * C,     L * C, L * 3 * C * C, L * 3 * C, L * C * C, L * C,
                                 L * C, L * C, L * M * C, L * M, L * C * M,     L * C,     C,         C};
  size_t at = 0;
  for (int p = 0; p < P_COUNT; p++) {
    size[p] = sizes[p];
    offset[p] = at;
    at += sizes[p];
  }
  return at;
}

dua_status dua_model_create(dua_context *ctx, const dua_trainer_config *cfg, int vocab, dua_model **out) {
  if (!ctx || !cfg || !out || vocab < 2)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_model_create: bad arguments (vocab = %d)", vocab);
  dua_model *m = calloc(1, sizeof *m);
  if (!m)
    return DUA_ERROR_OUT_OF_MEMORY;
  m->ctx = ctx;
  m->cfg = *cfg;
  dua_model_dims *d = &m->d;
  d->B = cfg->batch, d->T = cfg->seq_len, d->C = cfg->width, d->H = cfg->heads;
  d->Dh = cfg->width / cfg->heads, d->M = cfg->mlp_ratio * cfg->width, d->L = cfg->layers, d->V = vocab;
  d->R = d->B * d->T;
  m->tree_depth = dua_tree_depth_of((cfg->seq_len + cfg->block - 1) / cfg->block, cfg->arity);
  m->num_params = dua_model_param_layout(cfg, vocab, m->param_size, m->param_off);
  const size_t L = (size_t)d->L;
  act_offsets a = offsets_of(d);
  m->acts_floats = a.total;
  const size_t bias_n = L * (size_t)d->H * (size_t)(m->tree_depth + 1);
  dua_status st = dua_ops_create(ctx, &m->ops);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, m->num_params * 4, &m->params);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, m->num_params * 4, &m->grads);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, m->num_params * 4, &m->adam_m);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, m->num_params * 4, &m->adam_v);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, m->acts_floats * 4, &m->acts);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, bias_n * 4, &m->bias);
  if (st == DUA_SUCCESS)
    st = dua_buffer_create(ctx, bias_n * 4, &m->dbias);
  if (st == DUA_SUCCESS) {
    m->layouts = calloc(L, sizeof *m->layouts);
    m->layout_depths = malloc(L * (size_t)d->H * sizeof *m->layout_depths);
    m->tokens = malloc((size_t)d->R * sizeof *m->tokens);
    m->targets = malloc((size_t)d->R * sizeof *m->targets);
    m->losses = malloc((size_t)d->R * sizeof *m->losses);
    m->preds = malloc((size_t)d->R * sizeof *m->preds);
    if (!m->layouts || !m->layout_depths || !m->tokens || !m->targets || !m->losses || !m->preds)
      st = DUA_ERROR_OUT_OF_MEMORY;
    else
      for (size_t i = 0; i < L * (size_t)d->H; i++)
        m->layout_depths[i] = -2;
  }
  if (st == DUA_SUCCESS)
    st = init_params(m);
  if (st != DUA_SUCCESS) {
    dua_model_destroy(m);
    return st;
  }
  *out = m;
  return DUA_SUCCESS;
}

void dua_model_destroy(dua_model *m) {
  if (!m)
    return;
  if (m->layouts)
    for (int l = 0; l < m->d.L; l++)
      dua_layout_destroy(m->layouts[l]);
  free(m->layouts);
  free(m->layout_depths);
  free(m->tokens);
  free(m->targets);
  free(m->losses);
  free(m->preds);
  free(m->first_rows);
  free(m->paths);
  free(m->tiles_host);
  dua_buffer_destroy(m->tiles);
  dua_buffer_destroy(m->params);
  dua_buffer_destroy(m->grads);
  dua_buffer_destroy(m->adam_m);
  dua_buffer_destroy(m->adam_v);
  dua_buffer_destroy(m->acts);
  dua_buffer_destroy(m->bias);
  dua_buffer_destroy(m->dbias);
  dua_ops_destroy(m->ops);
  free(m);
}

int dua_layer_shift(const dua_trainer_config *config, int l) {
  return (config->shift_alternate && (l & 1)) ? config->arity / 2 : 0;
}

/* Makes sure layer l's layout has these depths (rebuilt only when they change); with content paths
 * ([B][H][nb][D]) it is always rebuilt. */
static dua_status ensure_layout(dua_model *m, int l, const int32_t *depths, const uint8_t *paths) {
  const int H = m->d.H;
  int32_t *have = m->layout_depths + (size_t)l * H;
  if (!paths && m->layouts[l] && memcmp(have, depths, (size_t)H * sizeof *depths) == 0)
    return DUA_SUCCESS;
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = m->d.T;
  desc.block = m->cfg.block;
  desc.batch = m->d.B;
  desc.heads = H;
  desc.kv_heads = H;
  desc.arity = m->cfg.arity;
  desc.depths = depths;
  desc.shift = paths ? 0 : dua_layer_shift(&m->cfg, l);
  desc.paths = paths;
  desc.window = m->cfg.window;
  desc.sink = m->cfg.sink;
  desc.causal = 1;
  dua_layout *fresh = NULL;
  dua_status st = dua_layout_create(&desc, &fresh, m->error, sizeof m->error);
  if (st != DUA_SUCCESS)
    return dua_fail(m->ctx, st, "layer %d layout: %s", l, m->error);
  dua_layout_destroy(m->layouts[l]);
  m->layouts[l] = fresh;
  memcpy(have, depths, (size_t)H * sizeof *depths);
  if (paths) /* a content layout never matches depths alone */
    have[0] = -2;
  return DUA_SUCCESS;
}

/* Content routing of layer l: reads the first-token rows of the layer-normed activation at element offset
 * ln ([R, C]), asks m->route for the paths. */
static dua_status route_layer(dua_model *m, int l, size_t ln) {
  const dua_model_dims *d = &m->d;
  const int nb = (d->T + m->cfg.block - 1) / m->cfg.block;
  if (!m->first_rows) {
    m->first_rows = malloc((size_t)d->B * nb * d->C * sizeof *m->first_rows);
    m->paths = malloc((size_t)d->B * d->H * nb * (m->tree_depth ? m->tree_depth : 1));
    if (!m->first_rows || !m->paths)
      return dua_fail(m->ctx, DUA_ERROR_OUT_OF_MEMORY, "content routing: out of host memory");
  }
  dua_status st = dua_read_first_rows(m->acts, ln, d->B, d->T, d->C, m->cfg.block, m->first_rows);
  if (st != DUA_SUCCESS)
    return st;
  return m->route(m->route_user, l, m->first_rows, m->paths);
}

dua_status dua_read_first_rows(dua_buffer *acts, size_t off, int B, int T, int C, int block, float *x) {
  const int nb = (T + block - 1) / block;
  const size_t row = 4 * (size_t)C, pitch = row * (size_t)block;
  if (T % block == 0) /* the first rows of every sequence are block x C floats apart, across sequences too */
    return dua_buffer_read_rows(acts, 4 * off, row, pitch, (size_t)B * nb, x);
  for (int b = 0; b < B; b++) { /* a tail block breaks the stride at each sequence's end */
    dua_status st = dua_buffer_read_rows(acts, 4 * (off + (size_t)b * T * C), row, pitch, (size_t)nb,
                                         x + (size_t)b * nb * C);
    if (st != DUA_SUCCESS)
      return st;
  }
  return DUA_SUCCESS;
}

static dua_tensor bias_view(const dua_model *m, dua_buffer *b, int l) {
  const int D1 = m->tree_depth + 1, H = m->d.H;
  return dua_tensor_contiguous(b, 4 * (size_t)l * H * D1, DUA_F32, H, D1, 1, 1);
}

#define TRY(call)                                                                                            \
  do {                                                                                                       \
    dua_status st_ = (call);                                                                                 \
    if (st_ != DUA_SUCCESS)                                                                                  \
      return st_;                                                                                            \
  } while (0)

dua_status dua_model_forward(dua_model *m, const int32_t *tokens, const int32_t *targets,
                             const dua_layer_routing *routing, double *loss_sum, int *count, int *correct) {
  const dua_model_dims *d = &m->d;
  const size_t R = (size_t)d->R, C = (size_t)d->C, M = (size_t)d->M;
  const act_offsets a = offsets_of(d);
  dua_ops *ops = m->ops;
  dua_buffer *A = m->acts, *P = m->params;
  memcpy(m->tokens, tokens, R * sizeof *tokens);
  memcpy(m->targets, targets, R * sizeof *targets);

  int valid = 0;
  for (size_t i = 0; i < R; i++)
    valid += targets[i] != DUA_IGNORE;
  const int D1 = m->tree_depth + 1;
  m->has_bias = routing[0].bias != NULL;
  m->paper_used = m->paper && m->paper->gate != DUA_PAPER_OFF;
  for (int l = 0; l < d->L; l++) {
    if ((routing[l].bias != NULL) != m->has_bias)
      return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "dua_model_forward: layer %d %s a level bias but layer 0 %s (all layers or none)", l,
                      routing[l].bias ? "has" : "has no", m->has_bias ? "has" : "has none");
    if (routing[l].bias)
      TRY(dua_buffer_write(m->bias, 4 * (size_t)l * d->H * D1, 4 * (size_t)d->H * D1, routing[l].bias));
  }

  TRY(dua_op_embed_forward(ops, span(A, a.encoded), tokens, param(m, P, P_WTE, 0), param(m, P, P_WPE, 0),
                           d->B, d->T, d->C, d->V));
  for (int l = 0; l < d->L; l++) {
    size_t res = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * R * C;
    size_t ln1 = a.ln1 + l * R * C, qkv = a.qkv + l * R * 3 * C, atty = a.atty + l * R * C;
    size_t res2 = a.residual2 + l * R * C, ln2 = a.ln2 + l * R * C, fch = a.fch + l * R * M;
    size_t fchg = a.fch_gelu + l * R * M, res3 = a.residual3 + l * R * C;
    TRY(dua_op_layernorm_forward(ops, span(A, ln1), span(A, a.ln1_mean + l * R), span(A, a.ln1_rstd + l * R),
                                 span(A, res), param(m, P, P_LN1W, l), param(m, P, P_LN1B, l), d->R, d->C));
    TRY(dua_op_matmul_forward(ops, span(A, qkv), span(A, ln1), param(m, P, P_QKVW, l), param(m, P, P_QKVB, l),
                              d->R, d->C, 3 * d->C));
    const int content = m->route != NULL && m->tree_depth > 0;
    if (content)
      TRY(route_layer(m, l, ln1));
    TRY(ensure_layout(m, l, routing[l].depths, content ? m->paths : NULL));
    dua_attention_params ap;
    dua_attention_params_init(&ap);
    dua_tensor bias = bias_view(m, m->bias, l);
    ap.level_bias = m->has_bias ? &bias : NULL;
    dua_tensor tscale, ttable; /* paper mode: the controller's token-tree bias on the layer-normed input */
    if (m->paper_used) {
      TRY(dua_paper_forward_layer(m->paper, l, span(A, ln1), &tscale, &ttable));
      ap.token_scale = &tscale, ap.token_table = &ttable;
    }
    dua_tensor q = head_view(m, qkv, 0, 3 * C), k = head_view(m, qkv, C, 3 * C),
               v = head_view(m, qkv, 2 * C, 3 * C);
    dua_tensor o = head_view(m, atty, 0, C);
    dua_tensor lse =
        dua_tensor_contiguous(A, 4 * (a.lse + l * R * (size_t)d->H), DUA_F32, d->B, d->H, d->T, 1);
    TRY(dua_attention_forward(m->ctx, m->layouts[l], &ap, &q, &k, &v, &o, &lse));
    TRY(dua_op_matmul_forward(ops, span(A, a.tmp), span(A, atty), param(m, P, P_ATTPROJW, l),
                              param(m, P, P_ATTPROJB, l), d->R, d->C, d->C));
    TRY(dua_op_add(ops, span(A, res2), span(A, res), span(A, a.tmp), R * C));
    TRY(dua_op_layernorm_forward(ops, span(A, ln2), span(A, a.ln2_mean + l * R), span(A, a.ln2_rstd + l * R),
                                 span(A, res2), param(m, P, P_LN2W, l), param(m, P, P_LN2B, l), d->R, d->C));
    TRY(dua_op_matmul_forward(ops, span(A, fch), span(A, ln2), param(m, P, P_FCW, l), param(m, P, P_FCB, l),
                              d->R, d->C, d->M));
    TRY(dua_op_gelu_forward(ops, span(A, fchg), span(A, fch), R * M));
    TRY(dua_op_matmul_forward(ops, span(A, a.tmp), span(A, fchg), param(m, P, P_FCPROJW, l),
                              param(m, P, P_FCPROJB, l), d->R, d->M, d->C));
    TRY(dua_op_add(ops, span(A, res3), span(A, res2), span(A, a.tmp), R * C));
  }
  size_t last = a.residual3 + (size_t)(d->L - 1) * R * C;
  TRY(dua_op_layernorm_forward(ops, span(A, a.lnf), span(A, a.lnf_mean), span(A, a.lnf_rstd), span(A, last),
                               param(m, P, P_LNFW, 0), param(m, P, P_LNFB, 0), d->R, d->C));
  TRY(dua_op_matmul_forward(ops, span(A, a.logits), span(A, a.lnf), param(m, P, P_WTE, 0), no_span, d->R,
                            d->C, d->V));
  float grad_scale = valid ? 1.0f / (float)valid : 0.0f;
  TRY(dua_op_crossentropy(ops, span(A, a.losses), span(A, a.logits), span(A, a.preds), span(A, a.logits),
                          targets, DUA_IGNORE, grad_scale, d->R, d->V));
  TRY(dua_buffer_read(A, 4 * a.losses, 4 * R, m->losses));
  TRY(dua_buffer_read(A, 4 * a.preds, 4 * R, m->preds));
  double sum = 0.0;
  int right = 0;
  for (size_t i = 0; i < R; i++)
    if (targets[i] != DUA_IGNORE) {
      sum += m->losses[i];
      right += m->preds[i] == targets[i];
    }
  if (loss_sum)
    *loss_sum = sum;
  if (count)
    *count = valid;
  if (correct)
    *correct = right;
  return DUA_SUCCESS;
}

dua_status dua_model_backward(dua_model *m, float *dbias_host) {
  const dua_model_dims *d = &m->d;
  const size_t R = (size_t)d->R, C = (size_t)d->C, M = (size_t)d->M;
  const act_offsets a = offsets_of(d);
  dua_ops *ops = m->ops;
  dua_buffer *A = m->acts, *P = m->params, *G = m->grads;

  TRY(dua_op_fill(ops, span(G, 0), m->num_params, 0.0f));
  TRY(dua_op_fill(ops, span(A, a.dresidual), R * C, 0.0f));
  const int nb = (d->T + m->cfg.block - 1) / m->cfg.block;
  const size_t tiles_per_layer = (size_t)d->B * d->H * nb * nb;
  const int tiles = m->want_tiles && m->has_bias;
  if (tiles && !m->tiles) {
    TRY(dua_buffer_create(m->ctx, 4 * tiles_per_layer * d->L, &m->tiles));
    if (!(m->tiles_host = malloc(4 * tiles_per_layer * d->L)))
      return dua_fail(m->ctx, DUA_ERROR_OUT_OF_MEMORY, "block-pair gradients: out of host memory");
  }
  TRY(dua_op_fill(ops, span(A, a.dln), R * C, 0.0f));
  /* logits = lnf * wte^T (tied head) */
  TRY(dua_op_matmul_backward(ops, span(A, a.dln), param(m, G, P_WTE, 0), no_span, span(A, a.logits),
                             span(A, a.lnf), param(m, P, P_WTE, 0), d->R, d->C, d->V));
  size_t last = a.residual3 + (size_t)(d->L - 1) * R * C;
  TRY(dua_op_layernorm_backward(ops, span(A, a.dresidual), param(m, G, P_LNFW, 0), param(m, G, P_LNFB, 0),
                                span(A, a.dln), span(A, last), param(m, P, P_LNFW, 0), span(A, a.lnf_mean),
                                span(A, a.lnf_rstd), d->R, d->C));
  for (int l = d->L - 1; l >= 0; l--) {
    size_t res = l == 0 ? a.encoded : a.residual3 + (size_t)(l - 1) * R * C;
    size_t ln1 = a.ln1 + l * R * C, qkv = a.qkv + l * R * 3 * C, atty = a.atty + l * R * C;
    size_t res2 = a.residual2 + l * R * C, ln2 = a.ln2 + l * R * C, fch = a.fch + l * R * M;
    size_t fchg = a.fch_gelu + l * R * M;
    /* residual3 = residual2 + fcproj(gelu(fc(ln2(residual2)))): dresidual flows through unchanged */
    TRY(dua_op_fill(ops, span(A, a.dfch_gelu), R * M, 0.0f));
    TRY(dua_op_matmul_backward(ops, span(A, a.dfch_gelu), param(m, G, P_FCPROJW, l),
                               param(m, G, P_FCPROJB, l), span(A, a.dresidual), span(A, fchg),
                               param(m, P, P_FCPROJW, l), d->R, d->M, d->C));
    TRY(dua_op_fill(ops, span(A, a.dfch), R * M, 0.0f));
    TRY(dua_op_gelu_backward(ops, span(A, a.dfch), span(A, fch), span(A, a.dfch_gelu), R * M));
    TRY(dua_op_fill(ops, span(A, a.dln), R * C, 0.0f));
    TRY(dua_op_matmul_backward(ops, span(A, a.dln), param(m, G, P_FCW, l), param(m, G, P_FCB, l),
                               span(A, a.dfch), span(A, ln2), param(m, P, P_FCW, l), d->R, d->C, d->M));
    TRY(dua_op_layernorm_backward(ops, span(A, a.dresidual), param(m, G, P_LN2W, l), param(m, G, P_LN2B, l),
                                  span(A, a.dln), span(A, res2), param(m, P, P_LN2W, l),
                                  span(A, a.ln2_mean + l * R), span(A, a.ln2_rstd + l * R), d->R, d->C));
    /* residual2 = residual + attproj(attention(qkv(ln1(residual)))) */
    TRY(dua_op_fill(ops, span(A, a.datty), R * C, 0.0f));
    TRY(dua_op_matmul_backward(ops, span(A, a.datty), param(m, G, P_ATTPROJW, l), param(m, G, P_ATTPROJB, l),
                               span(A, a.dresidual), span(A, atty), param(m, P, P_ATTPROJW, l), d->R, d->C,
                               d->C));
    dua_attention_params ap;
    dua_attention_params_init(&ap);
    dua_tensor bias = bias_view(m, m->bias, l), dbias = bias_view(m, m->dbias, l);
    ap.level_bias = m->has_bias ? &bias : NULL;
    dua_tensor tile_view;
    if (tiles) {
      tile_view = dua_tensor_contiguous(m->tiles, 4 * tiles_per_layer * l, DUA_F32, d->B, d->H, nb, nb);
      ap.tile_grad = &tile_view;
    }
    dua_tensor q = head_view(m, qkv, 0, 3 * C), k = head_view(m, qkv, C, 3 * C),
               v = head_view(m, qkv, 2 * C, 3 * C);
    dua_tensor o = head_view(m, atty, 0, C), dout = head_view(m, a.datty, 0, C);
    dua_tensor dq = head_view(m, a.dq, 0, C), dk = head_view(m, a.dk, 0, C), dv = head_view(m, a.dv, 0, C);
    dua_tensor lse =
        dua_tensor_contiguous(A, 4 * (a.lse + l * R * (size_t)d->H), DUA_F32, d->B, d->H, d->T, 1);
    dua_tensor tscale, ttable, dtscale;
    if (m->paper_used) {
      dua_paper_layer_tensors(m->paper, l, &tscale, &ttable);
      dtscale = dua_paper_dscale_view(m->paper);
      ap.token_scale = &tscale, ap.token_table = &ttable;
    }
    TRY(dua_attention_backward_ex(m->ctx, m->layouts[l], &ap, &q, &k, &v, &o, &lse, &dout, &dq, &dk, &dv,
                                  m->has_bias ? &dbias : NULL, m->paper_used ? &dtscale : NULL));
    TRY(dua_op_fill(ops, span(A, a.dln), R * C, 0.0f));
    const size_t dqkv[3] = {a.dq, a.dk, a.dv};
    for (int part = 0; part < 3; part++) {
      dua_span w = dua_span_at(param(m, P, P_QKVW, l), (size_t)part * C * C);
      dua_span dw = dua_span_at(param(m, G, P_QKVW, l), (size_t)part * C * C);
      dua_span db = dua_span_at(param(m, G, P_QKVB, l), (size_t)part * C);
      TRY(dua_op_matmul_backward(ops, span(A, a.dln), dw, db, span(A, dqkv[part]), span(A, ln1), w, d->R,
                                 d->C, d->C));
    }
    if (m->paper_used) /* the controller reads ln1 too */
      TRY(dua_paper_backward_layer(m->paper, l, span(A, ln1), span(A, a.dln)));
    TRY(dua_op_layernorm_backward(ops, span(A, a.dresidual), param(m, G, P_LN1W, l), param(m, G, P_LN1B, l),
                                  span(A, a.dln), span(A, res), param(m, P, P_LN1W, l),
                                  span(A, a.ln1_mean + l * R), span(A, a.ln1_rstd + l * R), d->R, d->C));
  }
  TRY(dua_op_embed_backward(ops, param(m, G, P_WTE, 0), param(m, G, P_WPE, 0), span(A, a.dresidual),
                            m->tokens, d->B, d->T, d->C, d->V));
  if (m->has_bias && dbias_host)
    TRY(dua_buffer_read(m->dbias, 0, 4 * (size_t)d->L * d->H * (m->tree_depth + 1), dbias_host));
  if (tiles)
    TRY(dua_buffer_read(m->tiles, 0, 4 * tiles_per_layer * d->L, m->tiles_host));
  return DUA_SUCCESS;
}

dua_status dua_model_grad_norm(dua_model *m, float *norm) {
  float ss = 0.0f;
  TRY(dua_op_sumsq(m->ops, span(m->grads, 0), m->num_params, &ss));
  *norm = sqrtf(ss);
  return DUA_SUCCESS;
}

dua_status dua_model_update(dua_model *m, float lr, int t, float grad_scale) {
  const dua_trainer_config *c = &m->cfg;
  for (int p = 0; p < P_COUNT; p++) {
    int decay = p == P_WTE || p == P_WPE || p == P_QKVW || p == P_ATTPROJW || p == P_FCW || p == P_FCPROJW;
    size_t off = m->param_off[p], n = m->param_size[p];
    TRY(dua_op_adamw(m->ops, span(m->params, off), span(m->grads, off), span(m->adam_m, off),
                     span(m->adam_v, off), n, lr, c->beta1, c->beta2, c->adam_eps,
                     decay ? c->weight_decay : 0.0f, t, grad_scale));
  }
  return DUA_SUCCESS;
}
