/* inference.c: dua_inference_* (dua_train.h, "inference"): a checkpoint loaded for inference (parameters
 * only), its routing (the checkpoint's hard depths or a matching routing file), the model's blocks on the
 * device for full sequences, a prefill or a decode step (shared with inference_generate.c), evaluation on the
 * task's test set (the trainer's ops in the trainer's order: bit for bit dua_trainer_evaluate), logits,
 * densities and timings. */
#include "train/checkpoint.h"
#include "train/gates.h"
#include "train/inference_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STATE_VERSION 1 /* trainer.c's DUA_CKPT_STATE_VERSION */

/* trainer.c's "state" section: format version, step, phase, entries, then fixed depths int32 [L][H]. */
typedef struct state_header {
  int64_t version, step, phase, entries;
} state_header;

double dua_inference_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define TRY(call)                                                                                            \
  do {                                                                                                       \
    dua_status st_ = (call);                                                                                 \
    if (st_ != DUA_SUCCESS)                                                                                  \
      return st_;                                                                                            \
  } while (0)

static dua_span span(dua_buffer *b, size_t off) {
  dua_span s = {b, off};
  return s;
}
static const dua_span no_span = {NULL, 0};

/* Parameter tensor p of layer l, in model.c's arena order. */
static dua_span param(const dua_inference_model *m, int p, int l) {
  size_t per_layer = (p >= P_LN1W && p <= P_FCPROJB) ? m->param_size[p] / (size_t)m->L : 0;
  return span(m->params, m->param_off[p] + (size_t)l * per_layer);
}

/* (nseq, H, S, Dh) view of columns [col, col + C) of an [nseq * S, row_len] activation at element off. */
static dua_tensor heads_view(const dua_inference_model *m, size_t off, size_t col, size_t row_len, int nseq,
                             int tokens) {
  dua_tensor t;
  memset(&t, 0, sizeof t);
  t.buffer = m->acts;
  t.offset = 4 * (off + col);
  t.dtype = DUA_F32;
  t.shape[0] = nseq, t.shape[1] = m->H, t.shape[2] = tokens, t.shape[3] = m->Dh;
  t.strides[0] = (int64_t)m->S * (int64_t)row_len, t.strides[1] = m->Dh;
  t.strides[2] = (int64_t)row_len, t.strides[3] = 1;
  return t;
}

static void put(char *error, size_t size, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void put(char *error, size_t size, const char *fmt, ...) {
  if (!error || !size)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error, size, fmt, ap);
  va_end(ap);
}

/* ---------------------------------------------------------------- layouts */

dua_status dua_inference_layouts(dua_inference_model *m, int32_t batch, int dense, dua_layout ***out) {
  for (dua_layout_set *s = m->sets; s; s = s->next)
    if (s->batch == batch && s->dense == dense) {
      *out = s->layer;
      return DUA_SUCCESS;
    }
  dua_layout_set *s = calloc(1, sizeof *s);
  if (!s || !(s->layer = calloc((size_t)m->L, sizeof *s->layer))) {
    free(s);
    return dua_fail(m->ctx, DUA_ERROR_OUT_OF_MEMORY, "inference: out of host memory");
  }
  s->batch = batch, s->dense = dense;
  s->next = m->sets;
  m->sets = s; /* linked first, so that destroy frees a half-made set */
  for (int l = 0; l < m->L; l++) {
    const dua_routing_head *h0 = &m->routing.head[(size_t)l * m->H];
    dua_layout_desc d;
    memset(&d, 0, sizeof d);
    d.seq_len = m->S, d.block = h0->block, d.batch = batch, d.heads = m->H, d.kv_heads = m->H;
    d.arity = h0->arity, d.depths = dense ? m->zeros : m->depths + (size_t)l * m->H;
    d.shift = h0->shift, d.window = h0->window, d.sink = h0->sink, d.causal = 1;
    char why[256];
    dua_status st = dua_layout_create(&d, &s->layer[l], why, sizeof why);
    if (st != DUA_SUCCESS)
      return dua_fail(m->ctx, st, "layer %d layout: %s", l, why);
  }
  *out = s->layer;
  return DUA_SUCCESS;
}

/* ---------------------------------------------------------------- blocks */

/* Is this pass's layout set the dense one? */
static int pass_dense(const dua_inference_model *m, dua_layout **layouts) {
  for (const dua_layout_set *s = m->sets; s; s = s->next)
    if (s->layer == layouts)
      return s->dense;
  return 0;
}

/* The content layout of layer l for nseq sequences with paths [nseq][H][nb][D], the routing's depths,
 * window and sink; replaces *slot. */
static dua_status content_layout_of(dua_inference_model *m, int l, int nseq, const uint8_t *paths,
                                    dua_layout **slot) {
  const dua_routing_head *h0 = &m->routing.head[(size_t)l * m->H];
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  d.seq_len = m->S, d.block = h0->block, d.batch = nseq, d.heads = m->H, d.kv_heads = m->H;
  d.arity = h0->arity, d.depths = m->depths + (size_t)l * m->H, d.paths = paths;
  d.window = h0->window, d.sink = h0->sink, d.causal = 1;
  char why[256];
  dua_layout *fresh = NULL;
  dua_status st = dua_layout_create(&d, &fresh, why, sizeof why);
  if (st != DUA_SUCCESS)
    return dua_fail(m->ctx, st, "layer %d content layout: %s", l, why);
  dua_layout_destroy(*slot);
  *slot = fresh;
  return DUA_SUCCESS;
}

/* Content routing of layer l for a full-sequence pass of nseq sequences: the argmax paths of the router on
 * the layer-normed first-token rows (at a->ln), then a content layout with the routing's depths. */
static dua_status content_layout(dua_inference_model *m, int l, int nseq, dua_layout **out) {
  TRY(dua_read_first_rows(m->acts, m->a.ln, nseq, m->S, m->C, m->cfg.block, m->first_rows));
  m->content->B = nseq;
  m->content->noise = 0;
  TRY(dua_content_route(m->content, l, m->first_rows, m->paths));
  TRY(content_layout_of(m, l, nseq, m->paths, &m->clay[l]));
  *out = m->clay[l];
  return DUA_SUCCESS;
}

/* Content generation, layer l: routes the blocks whose first token is one of the pass's rows (positions
 * pos0 .. pos0 + rows - 1; their layer-normed rows are at a->ln) into the sequence's paths, and rebuilds the
 * sequence's layout when a block was routed. pos0 = 0 starts a new sequence: blocks it has not reached keep
 * path 0, which no reached query can see (causal). */
static dua_status gen_route(dua_inference_model *m, int l, int32_t pos0, int32_t rows) {
  const int blk = m->cfg.block, nb = (m->S + blk - 1) / blk, H = m->H, D = m->D;
  uint8_t *gp = m->gen_paths + (size_t)l * H * nb * D, digits[64 * 64];
  if (pos0 == 0)
    memset(gp, 0, (size_t)H * nb * D);
  const int32_t first = (pos0 + blk - 1) / blk, last = (pos0 + rows - 1) / blk; /* blocks starting here */
  if (first <= last) {
    TRY(dua_buffer_read_rows(m->acts, 4 * (m->a.ln + (size_t)(first * blk - pos0) * m->C), 4 * (size_t)m->C,
                             4 * (size_t)m->C * blk, (size_t)(last - first + 1), m->first_rows));
    for (int32_t n = first; n <= last; n++) {
      dua_content_route_block(m->content, l, n, m->first_rows + (size_t)(n - first) * m->C, digits);
      for (int h = 0; h < H; h++)
        memcpy(gp + ((size_t)h * nb + n) * D, digits + (size_t)h * D, (size_t)D);
    }
  } else if (m->glay[l]) {
    return DUA_SUCCESS; /* no block starts at this position: the layout stands */
  }
  return content_layout_of(m, l, 1, gp, &m->glay[l]);
}

dua_status dua_inference_blocks(dua_inference_model *m, const dua_inference_pass *p, size_t *final_res) {
  const dua_inference_acts *a = &m->a;
  const size_t R = (size_t)p->rows, C = (size_t)m->C, M = (size_t)m->M, S = (size_t)m->S;
  const int decode = p->pos >= 0, padded = !decode && R < (size_t)p->nseq * S;
  dua_ops *ops = m->ops;
  dua_buffer *A = m->acts;
  size_t res[3] = {a->res[0], a->res[1], a->res[2]};
  const int content = m->content && !pass_dense(m, p->layouts);
  if (content && padded && p->seq < 0)
    return dua_fail(m->ctx, DUA_ERROR_INTERNAL, "content-routed model: a padded pass outside generation");
  if (decode)
    TRY(dua_op_embed_forward(ops, span(A, res[0]), p->tokens, param(m, P_WTE, 0),
                             dua_span_at(param(m, P_WPE, 0), (size_t)p->pos * C), 1, 1, m->C, m->V));
  else
    TRY(dua_op_embed_forward(ops, span(A, res[0]), p->tokens, param(m, P_WTE, 0), param(m, P_WPE, 0), p->nseq,
                             p->rows / p->nseq, m->C, m->V));
  for (int l = 0; l < m->L; l++) {
    TRY(dua_op_layernorm_forward(ops, span(A, a->ln), span(A, a->mean), span(A, a->rstd), span(A, res[0]),
                                 param(m, P_LN1W, l), param(m, P_LN1B, l), p->rows, m->C));
    TRY(dua_op_matmul_forward(ops, span(A, a->qkv), span(A, a->ln), param(m, P_QKVW, l), param(m, P_QKVB, l),
                              p->rows, m->C, 3 * m->C));
    dua_attention_params ap;
    dua_attention_params_init(&ap);
    if (decode) {
      dua_tensor q = heads_view(m, a->qkv, 0, 3 * C, 1, 1), k = heads_view(m, a->qkv, C, 3 * C, 1, 1),
                 v = heads_view(m, a->qkv, 2 * C, 3 * C, 1, 1), o = heads_view(m, a->atty, 0, C, 1, 1);
      TRY(dua_kv_append(m->cache, l, 1, &p->seq, &k, &v));
      if (content)
        TRY(gen_route(m, l, p->pos, 1));
      TRY(dua_decode(m->ctx, m->cache, l, content ? m->glay[l] : p->layouts[l], &ap, &p->seq, &q, &o, NULL));
    } else {
      if (padded) /* positions past the prompt: finite values the causal mask ignores */
        TRY(dua_op_fill(ops, span(A, a->qkv + R * 3 * C), (S * (size_t)p->nseq - R) * 3 * C, 0.0f));
      dua_tensor q = heads_view(m, a->qkv, 0, 3 * C, p->nseq, m->S),
                 k = heads_view(m, a->qkv, C, 3 * C, p->nseq, m->S),
                 v = heads_view(m, a->qkv, 2 * C, 3 * C, p->nseq, m->S),
                 o = heads_view(m, a->atty, 0, C, p->nseq, m->S);
      dua_tensor lse = dua_tensor_contiguous(A, 4 * a->lse, DUA_F32, p->nseq, m->H, m->S, 1);
      dua_layout *layout = p->layouts[l];
      if (content && p->seq >= 0) { /* a generation's prefill */
        TRY(gen_route(m, l, 0, p->rows));
        layout = m->glay[l];
      } else if (content) {
        TRY(content_layout(m, l, p->nseq, &layout));
      }
      TRY(dua_attention_forward(m->ctx, layout, &ap, &q, &k, &v, &o, &lse));
      if (p->seq >= 0) {
        dua_tensor kp = heads_view(m, a->qkv, C, 3 * C, 1, p->rows),
                   vp = heads_view(m, a->qkv, 2 * C, 3 * C, 1, p->rows);
        TRY(dua_kv_append(m->cache, l, 1, &p->seq, &kp, &vp));
      }
    }
    TRY(dua_op_matmul_forward(ops, span(A, a->tmp), span(A, a->atty), param(m, P_ATTPROJW, l),
                              param(m, P_ATTPROJB, l), p->rows, m->C, m->C));
    TRY(dua_op_add(ops, span(A, res[1]), span(A, res[0]), span(A, a->tmp), R * C));
    TRY(dua_op_layernorm_forward(ops, span(A, a->ln), span(A, a->mean), span(A, a->rstd), span(A, res[1]),
                                 param(m, P_LN2W, l), param(m, P_LN2B, l), p->rows, m->C));
    TRY(dua_op_matmul_forward(ops, span(A, a->fch), span(A, a->ln), param(m, P_FCW, l), param(m, P_FCB, l),
                              p->rows, m->C, m->M));
    TRY(dua_op_gelu_forward(ops, span(A, a->fchg), span(A, a->fch), R * M));
    TRY(dua_op_matmul_forward(ops, span(A, a->tmp), span(A, a->fchg), param(m, P_FCPROJW, l),
                              param(m, P_FCPROJB, l), p->rows, m->M, m->C));
    TRY(dua_op_add(ops, span(A, res[2]), span(A, res[1]), span(A, a->tmp), R * C));
    size_t t = res[0]; /* the block's output is the next block's input */
    res[0] = res[2], res[2] = t;
  }
  *final_res = res[0];
  return DUA_SUCCESS;
}

dua_status dua_inference_head(dua_inference_model *m, size_t res, int32_t first, int32_t n) {
  const dua_inference_acts *a = &m->a;
  const size_t C = (size_t)m->C;
  dua_buffer *A = m->acts;
  TRY(dua_op_layernorm_forward(m->ops, span(A, a->ln), span(A, a->mean), span(A, a->rstd),
                               span(A, res + (size_t)first * C), param(m, P_LNFW, 0), param(m, P_LNFB, 0), n,
                               m->C));
  return dua_op_matmul_forward(m->ops, span(A, a->logits), span(A, a->ln), param(m, P_WTE, 0), no_span, n,
                               m->C, m->V);
}

/* ---------------------------------------------------------------- load */

void dua_inference_model_destroy(dua_inference_model *m) {
  if (!m)
    return;
  dua_kv_cache_destroy(m->cache);
  while (m->sets) {
    dua_layout_set *s = m->sets;
    m->sets = s->next;
    if (s->layer)
      for (int l = 0; l < m->L; l++)
        dua_layout_destroy(s->layer[l]);
    free(s->layer);
    free(s);
  }
  for (int l = 0; l < m->L; l++) {
    if (m->clay)
      dua_layout_destroy(m->clay[l]);
    if (m->glay)
      dua_layout_destroy(m->glay[l]);
  }
  free(m->clay);
  free(m->glay);
  free(m->gen_paths);
  dua_content_destroy(m->content);
  free(m->first_rows);
  free(m->paths);
  free(m->cdensity);
  dua_buffer_destroy(m->params);
  dua_buffer_destroy(m->acts);
  dua_ops_destroy(m->ops);
  dua_task_destroy(m->task);
  dua_routing_free(&m->routing);
  free(m->depths);
  free(m->zeros);
  free(m->tokens);
  free(m->targets);
  free(m->preds);
  free(m->losses);
  free(m);
}

static void arena_layout(dua_inference_model *m) {
  const size_t R = (size_t)m->B * m->S, C = (size_t)m->C, M = (size_t)m->M;
  dua_inference_acts *a = &m->a;
  size_t at = 0;
#define TAKE(field, n)                                                                                       \
  do {                                                                                                       \
    a->field = at;                                                                                           \
    at += (n);                                                                                               \
  } while (0)
  TAKE(res[0], R * C);
  TAKE(res[1], R * C);
  TAKE(res[2], R * C);
  TAKE(ln, R * C);
  TAKE(mean, R);
  TAKE(rstd, R);
  TAKE(qkv, R * 3 * C);
  TAKE(atty, R * C);
  TAKE(tmp, R * C);
  TAKE(fch, R * M);
  TAKE(fchg, R * M);
  TAKE(logits, R * (size_t)m->V);
  TAKE(losses, R);
  TAKE(preds, R);
  TAKE(lse, R * (size_t)m->H);
#undef TAKE
  a->total = at;
}

/* The routing of the checkpoint: what dua_trainer_routing reports for it. */
static dua_status checkpoint_routing(dua_inference_model *m, const dua_ckpt_section *s, int n, char *error,
                                     size_t error_size) {
  const size_t LH = (size_t)m->L * m->H;
  const int native = (m->cfg.mode == DUA_ROUTING_NATIVE || m->cfg.mode == DUA_ROUTING_CONTENT) && m->D > 0;
  const dua_ckpt_section *state = dua_checkpoint_find(s, n, "state");
  state_header h;
  if (!state || state->bytes != sizeof h + LH * sizeof(int32_t)) {
    put(error, error_size, "checkpoint section \"state\" is missing or has the wrong size");
    return DUA_ERROR_CORRUPT_FILE;
  }
  memcpy(&h, state->data, sizeof h);
  if (h.version != STATE_VERSION || h.step < 0 || h.step > m->cfg.steps || (h.phase != 0 && h.phase != 1) ||
      h.entries != (int64_t)LH) {
    put(error, error_size, "checkpoint section \"state\" holds invalid values");
    return DUA_ERROR_CORRUPT_FILE;
  }
  m->step = h.step;
  const int32_t *fixed = (const int32_t *)(const void *)((const unsigned char *)state->data + sizeof h);
  const dua_ckpt_section *z = dua_checkpoint_find(s, n, "gate_z");
  if (native && !h.phase && (!z || z->bytes != LH * (size_t)m->D * sizeof(float))) {
    put(error, error_size, "checkpoint section \"gate_z\" is missing or has the wrong size");
    return DUA_ERROR_CORRUPT_FILE;
  }
  const int paper = m->cfg.mode == DUA_ROUTING_PAPER; /* the extraction of the last evaluation, in "state" */
  for (size_t i = 0; i < LH; i++) {
    int32_t d;
    if (!native && !paper)
      d = 0;
    else if (h.phase || paper) {
      memcpy(&d, fixed + i, sizeof d);
      if (d < 0 || d > m->D) {
        put(error, error_size, "checkpoint section \"state\": a fixed depth is out of range");
        return DUA_ERROR_CORRUPT_FILE;
      }
    } else {
      float zh[64];
      memcpy(zh, (const float *)z->data + i * (size_t)m->D, (size_t)m->D * sizeof(float));
      d = dua_gates_extract_depth(zh, m->D);
    }
    m->depths[i] = d;
  }
  m->routing.layers = m->L, m->routing.heads = m->H, m->routing.seq_len = m->S, m->routing.causal = 1;
  m->routing.content = m->cfg.mode == DUA_ROUTING_CONTENT;
  m->routing.head = calloc(LH, sizeof *m->routing.head);
  if (!m->routing.head)
    return DUA_ERROR_OUT_OF_MEMORY;
  for (int l = 0; l < m->L; l++)
    for (int hh = 0; hh < m->H; hh++) {
      dua_routing_head *rh = &m->routing.head[(size_t)l * m->H + hh];
      rh->depth = m->depths[(size_t)l * m->H + hh];
      rh->arity = m->cfg.arity, rh->block = m->cfg.block, rh->window = m->cfg.window, rh->sink = m->cfg.sink;
      rh->shift = dua_layer_shift(&m->cfg, l);
    }
  return DUA_SUCCESS;
}

/* A routing file for this checkpoint: same shape and tree, one window/sink/shift per layer. */
static dua_status file_routing(dua_inference_model *m, const char *path, char *error, size_t error_size) {
  char why[512];
  dua_status st = dua_routing_load(path, &m->routing, why, sizeof why);
  if (st != DUA_SUCCESS) {
    put(error, error_size, "routing file %s: %s", path, why);
    return st;
  }
  const dua_routing *r = &m->routing;
  const dua_trainer_config *c = &m->cfg;
#define MISMATCH(what, have, want)                                                                           \
  do {                                                                                                       \
    put(error, error_size, "routing file %s does not match the checkpoint: %s = %d, the checkpoint has %d",  \
        path, what, (int)(have), (int)(want));                                                               \
    return DUA_ERROR_INVALID_ARGUMENT;                                                                       \
  } while (0)
  if (r->layers != c->layers)
    MISMATCH("layers", r->layers, c->layers);
  if (r->heads != c->heads)
    MISMATCH("heads", r->heads, c->heads);
  if (r->seq_len != c->seq_len)
    MISMATCH("seq_len", r->seq_len, c->seq_len);
  if (r->causal != 1)
    MISMATCH("causal", r->causal, 1);
  for (int l = 0; l < r->layers; l++)
    for (int h = 0; h < r->heads; h++) {
      const dua_routing_head *e = &r->head[(size_t)l * r->heads + h], *e0 = &r->head[(size_t)l * r->heads];
      char what[64];
      snprintf(what, sizeof what, "routing[%d][%d].arity", l, h);
      if (e->arity != c->arity)
        MISMATCH(what, e->arity, c->arity);
      snprintf(what, sizeof what, "routing[%d][%d].block", l, h);
      if (e->block != c->block)
        MISMATCH(what, e->block, c->block);
      if (e->window != e0->window || e->sink != e0->sink || e->shift != e0->shift) {
        put(error, error_size,
            "routing file %s: routing[%d][%d] has window/sink/shift %d/%d/%d but head 0 of layer %d has "
            "%d/%d/%d (the heads of a layer share one layout)",
            path, l, h, (int)e->window, (int)e->sink, (int)e->shift, l, (int)e0->window, (int)e0->sink,
            (int)e0->shift);
        return DUA_ERROR_INVALID_ARGUMENT;
      }
      if (e->depth < 0 || e->depth > m->D) {
        put(error, error_size, "routing file %s: routing[%d][%d].depth = %d is not in 0..%d", path, l, h,
            (int)e->depth, m->D);
        return DUA_ERROR_INVALID_ARGUMENT;
      }
      m->depths[(size_t)l * r->heads + h] = e->depth;
    }
#undef MISMATCH
  return DUA_SUCCESS;
}

static dua_status dense_block_density(const dua_inference_model *m, double *out) {
  dua_layout_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.seq_len = m->S, desc.block = m->cfg.block, desc.batch = 1, desc.heads = 1, desc.arity = m->cfg.arity;
  desc.causal = 1;
  dua_layout *l = NULL;
  dua_status st = dua_layout_create(&desc, &l, NULL, 0);
  dua_layout_density dens;
  if (st == DUA_SUCCESS)
    st = dua_layout_density_get(l, &dens);
  dua_layout_destroy(l);
  if (st == DUA_SUCCESS)
    *out = dens.blocks;
  return st;
}

static dua_status load(dua_inference_model *m, const dua_ckpt_section *s, int n, const char *routing_path,
                       const char *corpus_path, char *error, size_t error_size) {
  const dua_trainer_config *c = &m->cfg;
  if (c->heads > 64 || c->layers > 64) {
    put(error, error_size, "checkpoint: at most 64 layers and 64 heads per layer are supported");
    return DUA_ERROR_UNSUPPORTED;
  }
  m->L = c->layers, m->H = c->heads, m->C = c->width, m->Dh = c->width / c->heads;
  m->M = c->mlp_ratio * c->width, m->S = c->seq_len, m->B = c->batch;
  m->D = dua_tree_depth_of((c->seq_len + c->block - 1) / c->block, c->arity);
  dua_task_corpus corpus;
  const dua_ckpt_section *rec = dua_checkpoint_find(s, n, DUA_TASK_CORPUS_SECTION);
  dua_status st = dua_task_corpus_from_record(c, rec ? rec->data : NULL, rec ? rec->bytes : 0, corpus_path,
                                              &corpus, error, error_size);
  if (st == DUA_SUCCESS)
    st = dua_task_create(c, &corpus, &m->task, error, error_size);
  if (st != DUA_SUCCESS)
    return st;
  m->V = dua_task_vocab_size(m->task);
  m->num_params = dua_model_param_layout(c, m->V, m->param_size, m->param_off);
  const dua_ckpt_section *ps = dua_checkpoint_find(s, n, "params");
  if (!ps || ps->bytes != m->num_params * 4) {
    put(error, error_size, "checkpoint section \"params\" %s (the config needs %zu bytes)",
        ps ? "has the wrong size" : "is missing", m->num_params * 4);
    return DUA_ERROR_CORRUPT_FILE;
  }
  const size_t LH = (size_t)m->L * (size_t)m->H, R = (size_t)m->B * (size_t)m->S;
  m->depths = calloc(LH, sizeof *m->depths);
  m->zeros = calloc((size_t)m->H, sizeof *m->zeros);
  m->tokens = malloc(R * sizeof *m->tokens);
  m->targets = malloc(R * sizeof *m->targets);
  m->preds = malloc(R * sizeof *m->preds);
  m->losses = malloc(R * sizeof *m->losses);
  if (!m->depths || !m->zeros || !m->tokens || !m->targets || !m->preds || !m->losses)
    return DUA_ERROR_OUT_OF_MEMORY;
  st = routing_path ? file_routing(m, routing_path, error, error_size)
                    : checkpoint_routing(m, s, n, error, error_size);
  if (st == DUA_SUCCESS && routing_path) { /* the step count comes from the state section either way */
    const dua_ckpt_section *state = dua_checkpoint_find(s, n, "state");
    state_header h;
    if (state && state->bytes >= sizeof h) {
      memcpy(&h, state->data, sizeof h);
      m->step = h.step;
    }
  }
  if (st == DUA_SUCCESS && m->routing.content != (c->mode == DUA_ROUTING_CONTENT)) {
    put(error, error_size,
        "routing file %s does not match the checkpoint: it routes a %s tree, the checkpoint was trained with "
        "%s",
        routing_path ? routing_path : "(checkpoint)", m->routing.content ? "content" : "positional",
        c->mode == DUA_ROUTING_CONTENT ? "content routing" : "the positional tree");
    st = DUA_ERROR_INVALID_ARGUMENT;
  }
  if (st == DUA_SUCCESS && c->mode == DUA_ROUTING_CONTENT && m->D > 0) { /* the routers */
    const int nb = (m->S + c->block - 1) / c->block;
    if ((st = dua_content_create(c, m->D, m->B, 0, &m->content)) != DUA_SUCCESS)
      return st;
    const dua_ckpt_section *rw = dua_checkpoint_find(s, n, "router_w");
    if (!rw || rw->bytes != m->content->d.total * 4) {
      put(error, error_size, "checkpoint section \"router_w\" %s (the config needs %zu bytes)",
          rw ? "has the wrong size" : "is missing", m->content->d.total * 4);
      return DUA_ERROR_CORRUPT_FILE;
    }
    memcpy(m->content->w, rw->data, rw->bytes);
    for (size_t i = 0; i < m->content->d.total; i++)
      if (!isfinite(m->content->w[i])) {
        put(error, error_size, "checkpoint section \"router_w\" holds a non-finite weight");
        return DUA_ERROR_CORRUPT_FILE;
      }
    m->clay = calloc((size_t)m->L, sizeof *m->clay);
    m->glay = calloc((size_t)m->L, sizeof *m->glay);
    m->first_rows = malloc((size_t)m->B * nb * m->C * sizeof *m->first_rows);
    m->paths = malloc((size_t)m->B * m->H * nb * m->D);
    m->gen_paths = calloc((size_t)m->L * m->H * nb * m->D, 1);
    m->cdensity = calloc((size_t)m->L, sizeof *m->cdensity);
    if (!m->clay || !m->glay || !m->first_rows || !m->paths || !m->gen_paths || !m->cdensity)
      return DUA_ERROR_OUT_OF_MEMORY;
  }
  if (st != DUA_SUCCESS)
    return st;
  if ((st = dense_block_density(m, &m->dense_blocks)) != DUA_SUCCESS) {
    put(error, error_size, "dense layout: %s", dua_context_last_error(m->ctx));
    return st;
  }
  arena_layout(m);
  if ((st = dua_ops_create(m->ctx, &m->ops)) == DUA_SUCCESS &&
      (st = dua_buffer_create(m->ctx, m->num_params * 4, &m->params)) == DUA_SUCCESS &&
      (st = dua_buffer_create(m->ctx, m->a.total * 4, &m->acts)) == DUA_SUCCESS &&
      (st = dua_buffer_write(m->params, 0, m->num_params * 4, ps->data)) == DUA_SUCCESS)
    st = dua_op_fill(m->ops, span(m->acts, 0), m->a.total, 0.0f);
  if (st != DUA_SUCCESS)
    put(error, error_size, "model on the device: %s: %s", dua_status_string(st),
        dua_context_last_error(m->ctx));
  return st;
}

dua_status dua_inference_model_load(dua_context *ctx, const char *checkpoint_path, const char *routing_path,
                                    dua_inference_model **out, char *error, size_t error_size) {
  return dua_inference_model_load_with_corpus(ctx, checkpoint_path, routing_path, NULL, out, error,
                                              error_size);
}

dua_status dua_inference_text_corpus(const dua_inference_model *m, dua_text_corpus_info *info) {
  return m ? dua_task_text_corpus(m->task, info) : DUA_ERROR_INVALID_ARGUMENT;
}

dua_status dua_inference_model_load_with_corpus(dua_context *ctx, const char *checkpoint_path,
                                                const char *routing_path, const char *corpus_path,
                                                dua_inference_model **out, char *error, size_t error_size) {
  if (error && error_size)
    error[0] = '\0';
  if (!ctx || !checkpoint_path || !out) {
    put(error, error_size, "dua_inference_model_load: ctx, checkpoint_path and out must not be NULL");
    return DUA_ERROR_INVALID_ARGUMENT;
  }
  dua_inference_model *m = calloc(1, sizeof *m);
  if (!m)
    return DUA_ERROR_OUT_OF_MEMORY;
  m->ctx = ctx;
  dua_ckpt_section *s = NULL;
  int n = 0;
  dua_status st = dua_checkpoint_load(checkpoint_path, &m->cfg, &s, &n, error, error_size);
  if (st == DUA_SUCCESS)
    st = load(m, s, n, routing_path, corpus_path, error, error_size);
  dua_checkpoint_free(s, n);
  if (st != DUA_SUCCESS) {
    if (st == DUA_ERROR_OUT_OF_MEMORY && error && error_size && !error[0])
      put(error, error_size, "out of host memory");
    dua_inference_model_destroy(m);
    return st;
  }
  *out = m;
  return DUA_SUCCESS;
}

/* ---------------------------------------------------------------- small queries */

const dua_trainer_config *dua_inference_config(const dua_inference_model *m) {
  return m ? &m->cfg : NULL;
}
int64_t dua_inference_step_count(const dua_inference_model *m) {
  return m ? m->step : 0;
}
int32_t dua_inference_tree_depth(const dua_inference_model *m) {
  return m ? m->D : 0;
}
int32_t dua_inference_vocab_size(const dua_inference_model *m) {
  return m ? m->V : 0;
}
const char *dua_inference_token_name(const dua_inference_model *m, int32_t id) {
  return m ? dua_task_token_name(m->task, id) : "?";
}
int32_t dua_inference_token_id(const dua_inference_model *m, const char *name) {
  if (!m || !name)
    return -1;
  for (int32_t id = 0; id < m->V; id++)
    if (!strcmp(dua_task_token_name(m->task, id), name))
      return id;
  return -1;
}
int32_t dua_inference_test_size(const dua_inference_model *m) {
  return m ? dua_task_test_size(m->task) : 0;
}

dua_status dua_inference_test_example(const dua_inference_model *m, int32_t index, int32_t *tokens,
                                      int32_t *targets) {
  if (!m || !tokens || !targets)
    return dua_fail(m ? m->ctx : NULL, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_inference_test_example: model, tokens and targets must not be NULL");
  const int32_t n = dua_task_test_size(m->task);
  if (index < 0 || index >= n)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_inference_test_example: index = %d is not in 0..%d (the test set's size is %d)",
                    (int)index, (int)n - 1, (int)n);
  dua_task_test_examples(m->task, index, 1, tokens, targets);
  return DUA_SUCCESS;
}

dua_status dua_inference_routing(const dua_inference_model *m, dua_routing *r) {
  if (!m || !r)
    return DUA_ERROR_INVALID_ARGUMENT;
  *r = m->routing;
  const size_t n = (size_t)m->L * m->H;
  r->head = malloc(n * sizeof *r->head);
  if (!r->head) {
    memset(r, 0, sizeof *r);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  memcpy(r->head, m->routing.head, n * sizeof *r->head);
  return DUA_SUCCESS;
}

static dua_status check_dense(dua_inference_model *m, const char *fn, int dense) {
  if (dense != 0 && dense != 1)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: dense = %d must be 0 or 1", fn, dense);
  return DUA_SUCCESS;
}

dua_status dua_inference_density(dua_inference_model *m, int dense, double *per_layer) {
  if (!m || !per_layer)
    return dua_fail(m ? m->ctx : NULL, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_inference_density: model and per_layer must not be NULL");
  TRY(check_dense(m, "dua_inference_density", dense));
  if (m->content && !dense) { /* content layouts depend on the data: the mean over the test set */
    if (!m->cdensity_valid) {
      dua_eval_result ignored;
      TRY(dua_inference_evaluate(m, 0, &ignored));
    }
    memcpy(per_layer, m->cdensity, (size_t)m->L * sizeof *per_layer);
    return DUA_SUCCESS;
  }
  dua_layout **lay;
  TRY(dua_inference_layouts(m, m->B, dense, &lay));
  for (int l = 0; l < m->L; l++) {
    dua_layout_density d;
    TRY(dua_layout_density_get(lay[l], &d));
    per_layer[l] = d.blocks / m->dense_blocks;
  }
  return DUA_SUCCESS;
}

/* ---------------------------------------------------------------- evaluation, logits, timing */

dua_status dua_inference_evaluate(dua_inference_model *m, int dense, dua_eval_result *result) {
  if (!m || !result)
    return dua_fail(m ? m->ctx : NULL, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_inference_evaluate: model and result must not be NULL");
  TRY(check_dense(m, "dua_inference_evaluate", dense));
  const double t0 = dua_inference_now();
  const int B = m->B, S = m->S, n = dua_task_test_size(m->task);
  const size_t R = (size_t)B * S;
  dua_layout **lay;
  TRY(dua_inference_layouts(m, B, dense, &lay));
  /* the trainer's evaluation, step by step: same batches, padding, ops and summation order */
  double loss = 0.0;
  int64_t scored = 0, right = 0;
  const int content = m->content && !dense;
  int batches = 0;
  double content_density = 0.0;
  if (content)
    memset(m->cdensity, 0, (size_t)m->L * sizeof *m->cdensity);
  for (int first = 0; first < n; first += B) {
    const int count = n - first < B ? n - first : B;
    dua_task_test_examples(m->task, first, count, m->tokens, m->targets);
    for (size_t i = (size_t)count * S; i < R; i++) {
      m->tokens[i] = 0;
      m->targets[i] = DUA_IGNORE;
    }
    int valid = 0;
    for (size_t i = 0; i < R; i++)
      valid += m->targets[i] != DUA_IGNORE;
    dua_inference_pass p = {m->tokens, B, (int32_t)R, -1, -1, lay};
    size_t res;
    TRY(dua_inference_blocks(m, &p, &res));
    TRY(dua_inference_head(m, res, 0, (int32_t)R));
    const dua_inference_acts *a = &m->a;
    TRY(dua_op_crossentropy(m->ops, span(m->acts, a->losses), span(m->acts, a->logits),
                            span(m->acts, a->preds), span(m->acts, a->logits), m->targets, DUA_IGNORE,
                            valid ? 1.0f / (float)valid : 0.0f, (int)R, m->V));
    TRY(dua_buffer_read(m->acts, 4 * a->losses, 4 * R, m->losses));
    TRY(dua_buffer_read(m->acts, 4 * a->preds, 4 * R, m->preds));
    double ls = 0.0;
    int ok = 0;
    for (size_t i = 0; i < R; i++)
      if (m->targets[i] != DUA_IGNORE) {
        ls += m->losses[i];
        ok += m->preds[i] == m->targets[i];
      }
    loss += ls, scored += valid, right += ok;
    if (content) { /* the trainer's arithmetic: per batch the mean over layers, then over batches */
      double batch_sum = 0.0;
      for (int l = 0; l < m->L; l++) {
        dua_layout_density d;
        TRY(dua_layout_density_get(m->clay[l], &d));
        batch_sum += d.blocks;
        m->cdensity[l] += d.blocks / m->dense_blocks;
      }
      content_density += batch_sum / m->L / m->dense_blocks;
    }
    batches++;
  }
  double sum = 0.0;
  for (int l = 0; l < m->L && !content; l++) {
    dua_layout_density d;
    TRY(dua_layout_density_get(lay[l], &d));
    sum += d.blocks;
  }
  if (content) {
    for (int l = 0; l < m->L; l++)
      m->cdensity[l] /= batches ? batches : 1;
    m->cdensity_valid = 1;
  }
  memset(result, 0, sizeof *result);
  result->loss = scored ? loss / (double)scored : 0.0;
  result->accuracy = scored ? (double)right / (double)scored : 0.0;
  result->density = content ? (batches ? content_density / batches : 0.0) : sum / m->L / m->dense_blocks;
  result->scored = scored;
  result->seconds = dua_inference_now() - t0;
  return DUA_SUCCESS;
}

static dua_status check_tokens(dua_inference_model *m, const char *fn, const int32_t *tokens, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (tokens[i] < 0 || tokens[i] >= m->V)
      return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "%s: token %zu = %d is not in 0..%d (the vocabulary)", fn, i, (int)tokens[i],
                      (int)m->V - 1);
  return DUA_SUCCESS;
}

dua_status dua_inference_forward(dua_inference_model *m, const int32_t *tokens, int32_t batch,
                                 int32_t tokens_per_seq, int dense, float *logits) {
  static const char *fn = "dua_inference_forward";
  if (!m || !tokens)
    return dua_fail(m ? m->ctx : NULL, DUA_ERROR_INVALID_ARGUMENT, "%s: model and tokens must not be NULL",
                    fn);
  TRY(check_dense(m, fn, dense));
  const int S = m->S, T = tokens_per_seq;
  if (batch < 1)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: batch = %d must be >= 1", fn, (int)batch);
  if (T < 1 || T > S)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: tokens_per_seq = %d must be in 1..%d: the model's learned position embedding has %d "
                    "positions (its seq_len)",
                    fn, (int)T, S, S);
  if ((uint64_t)batch * (uint64_t)T > (uint64_t)SIZE_MAX / 4 / (uint64_t)m->V)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: batch = %d is too large", fn, (int)batch);
  TRY(check_tokens(m, fn, tokens, (size_t)batch * T));
  float *host = NULL;
  if (logits && !(host = malloc((size_t)m->B * S * m->V * sizeof *host)))
    return dua_fail(m->ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  dua_status st = DUA_SUCCESS;
  for (int32_t b0 = 0; b0 < batch && st == DUA_SUCCESS; b0 += m->B) {
    const int nseq = batch - b0 < m->B ? batch - b0 : m->B;
    for (int b = 0; b < nseq; b++)
      for (int t = 0; t < S; t++)
        m->tokens[(size_t)b * S + t] = t < T ? tokens[((size_t)b0 + b) * T + t] : 0;
    dua_layout **lay;
    size_t res;
    dua_inference_pass p = {m->tokens, nseq, nseq * S, -1, -1, NULL};
    if ((st = dua_inference_layouts(m, nseq, dense, &lay)) != DUA_SUCCESS)
      break;
    p.layouts = lay;
    if ((st = dua_inference_blocks(m, &p, &res)) != DUA_SUCCESS ||
        (st = dua_inference_head(m, res, 0, nseq * S)) != DUA_SUCCESS)
      break;
    if (!logits)
      continue;
    if ((st = dua_buffer_read(m->acts, 4 * m->a.logits, (size_t)nseq * S * m->V * 4, host)) != DUA_SUCCESS)
      break;
    for (int b = 0; b < nseq; b++)
      memcpy(logits + ((size_t)b0 + b) * T * m->V, host + (size_t)b * S * m->V,
             (size_t)T * m->V * sizeof *host);
  }
  if (st == DUA_SUCCESS && !logits)
    st = dua_context_finish(m->ctx);
  free(host);
  return st;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

dua_status dua_inference_time(dua_inference_model *m, int dense, int32_t reps, dua_inference_timing *timing) {
  static const char *fn = "dua_inference_time";
  if (!m || !timing)
    return dua_fail(m ? m->ctx : NULL, DUA_ERROR_INVALID_ARGUMENT, "%s: model and timing must not be NULL",
                    fn);
  TRY(check_dense(m, fn, dense));
  if (reps < 1 || reps > 100000)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: reps = %d must be in 1..100000", fn, (int)reps);
  const int B = m->B, S = m->S, n = dua_task_test_size(m->task), count = n < B ? n : B;
  dua_task_test_examples(m->task, 0, count, m->tokens, m->targets);
  for (size_t i = (size_t)count * S; i < (size_t)B * S; i++)
    m->tokens[i] = 0;
  dua_layout **lay;
  TRY(dua_inference_layouts(m, B, dense, &lay));
  double *fw = malloc(2 * (size_t)reps * sizeof *fw), *at = fw + reps;
  if (!fw)
    return dua_fail(m->ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  const size_t C = (size_t)m->C;
  dua_inference_pass p = {m->tokens, B, B * S, -1, -1, lay};
  dua_status st = DUA_SUCCESS;
  for (int r = -1; r < reps && st == DUA_SUCCESS; r++) { /* r = -1: warm-up */
    size_t res;
    double t0 = dua_inference_now();
    if ((st = dua_inference_blocks(m, &p, &res)) != DUA_SUCCESS ||
        (st = dua_inference_head(m, res, 0, B * S)) != DUA_SUCCESS ||
        (st = dua_context_finish(m->ctx)) != DUA_SUCCESS)
      break;
    double t1 = dua_inference_now();
    /* the attention alone, on the last block's q, k, v (every layer's layout) */
    dua_attention_params ap;
    dua_attention_params_init(&ap);
    dua_tensor q = heads_view(m, m->a.qkv, 0, 3 * C, B, S), k = heads_view(m, m->a.qkv, C, 3 * C, B, S),
               v = heads_view(m, m->a.qkv, 2 * C, 3 * C, B, S), o = heads_view(m, m->a.atty, 0, C, B, S);
    dua_tensor lse = dua_tensor_contiguous(m->acts, 4 * m->a.lse, DUA_F32, B, m->H, S, 1);
    for (int l = 0; l < m->L && st == DUA_SUCCESS; l++) /* content: the layouts the pass just ran */
      st = dua_attention_forward(m->ctx, m->content && !dense ? m->clay[l] : lay[l], &ap, &q, &k, &v, &o,
                                 &lse);
    if (st == DUA_SUCCESS)
      st = dua_context_finish(m->ctx);
    double t2 = dua_inference_now();
    if (r >= 0)
      fw[r] = t1 - t0, at[r] = t2 - t1;
  }
  if (st == DUA_SUCCESS) {
    qsort(fw, (size_t)reps, sizeof *fw, cmp_double);
    qsort(at, (size_t)reps, sizeof *at, cmp_double);
    memset(timing, 0, sizeof *timing);
    timing->forward_seconds = fw[reps / 2];
    timing->attention_seconds = at[reps / 2];
    timing->batch = B;
    timing->reps = reps;
  }
  free(fw);
  return st;
}
