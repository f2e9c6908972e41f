/* dua_tune_problems.c: dua-tune's problems: for each shape, the layout (causal or not), seeded inputs,
 * outputs and the calls that run one forward (O, LSE; fp32 through tf32 when tuning the tensor-core forward),
 * one backward (dQ, dK, dV of a random dO after one forward) or one paged-KV decode step (O, LSE of the last
 * tokens against a filled cache) for the tuner to check and time. */
#include "dua_tune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPEND_CHUNK 2048 /* tokens per dua_kv_append while filling a cache */

void tune_die(const char *what, const char *detail) {
  fprintf(stderr, "dua-tune: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

void tune_check(dua_context *ctx, dua_status st, const char *what) {
  if (st != DUA_SUCCESS) {
    fprintf(stderr, "dua-tune: %s failed: %s: %s\n", what, dua_status_string(st),
            ctx ? dua_context_last_error(ctx) : "");
    exit(1);
  }
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    tune_die("out of memory", NULL);
  return p;
}

static uint64_t mix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* A device buffer of elems random values in [-1, 1) stored as dtype. */
static dua_buffer *random_buffer(const tuner *t, size_t elems, dua_dtype dtype, uint64_t *seed) {
  const size_t es = dua_dtype_size(dtype);
  void *host = xmalloc(elems * es);
  for (size_t i = 0; i < elems; i++) {
    float u = (float)((mix(seed) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    if (dtype == DUA_F16)
      ((uint16_t *)host)[i] = dua_float_to_half(u);
    else
      ((float *)host)[i] = u;
  }
  dua_buffer *b = NULL;
  tune_check(t->ctx, dua_buffer_create(t->ctx, elems * es, &b), "dua_buffer_create");
  tune_check(t->ctx, dua_buffer_write(b, 0, elems * es, host), "dua_buffer_write");
  free(host);
  return b;
}

static dua_buffer *empty_buffer(const tuner *t, size_t bytes) {
  dua_buffer *b = NULL;
  tune_check(t->ctx, dua_buffer_create(t->ctx, bytes, &b), "dua_buffer_create");
  return b;
}

static dua_buffer *keep(problem *p, dua_buffer *b) {
  p->bufs[p->nbufs++] = b;
  return b;
}

static void make_layout(const tuner *t, problem *p, int layout_batch, int causal) {
  int32_t *hd = xmalloc((size_t)t->heads * sizeof(int32_t));
  for (int h = 0; h < t->heads; h++)
    hd[h] = p->depth;
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  d.seq_len = p->n, d.block = t->block, d.batch = layout_batch, d.heads = t->heads, d.kv_heads = t->kv_heads;
  d.arity = t->arity, d.depths = hd, d.causal = causal;
  char err[512];
  if (dua_layout_create(&d, &p->layout, err, sizeof err) != DUA_SUCCESS)
    tune_die("dua_layout_create", err);
  free(hd);
}

/* The cache holding `batch` sequences of n random tokens (one layer), made once per (n, batch). */
static tune_cache *decode_cache(tuner *t, int n, int batch, uint64_t *seed) {
  for (int i = 0; i < t->ncaches; i++)
    if (t->caches[i].n == n && t->caches[i].batch == batch)
      return &t->caches[i];
  if (t->ncaches == TUNE_MAX_CACHES)
    tune_die("too many decode cache shapes", NULL);
  tune_cache *c = &t->caches[t->ncaches++];
  c->n = n, c->batch = batch;
  dua_kv_cache_desc cd;
  memset(&cd, 0, sizeof cd);
  cd.layers = 1, cd.kv_heads = t->kv_heads, cd.head_dim = t->dim, cd.page_tokens = t->page;
  cd.num_pages = (int32_t)((int64_t)batch * ((n + t->page - 1) / t->page));
  cd.max_seqs = batch, cd.max_tokens = n, cd.dtype = t->dtype;
  cd.page_order_seed = (uint32_t)(mix(seed) | 1u); /* fragmented block tables, as in a server */
  tune_check(t->ctx, dua_kv_cache_create(t->ctx, &cd, &c->cache), "dua_kv_cache_create");
  c->seqs = xmalloc((size_t)batch * sizeof(int32_t));
  /* one random K/V pattern (Hkv, n, Dh); every sequence holds it (its own pages) */
  const size_t elems = (size_t)t->kv_heads * n * t->dim, es = dua_dtype_size(t->dtype);
  dua_buffer *kb = random_buffer(t, elems, t->dtype, seed), *vb = random_buffer(t, elems, t->dtype, seed);
  for (int b = 0; b < batch; b++) {
    tune_check(t->ctx, dua_kv_seq_add(c->cache, &c->seqs[b]), "dua_kv_seq_add");
    for (int start = 0; start < n; start += APPEND_CHUNK) {
      const int len = n - start < APPEND_CHUNK ? n - start : APPEND_CHUNK;
      dua_tensor k =
          dua_tensor_contiguous(kb, (size_t)start * t->dim * es, t->dtype, 1, t->kv_heads, len, t->dim);
      k.strides[1] = (int64_t)n * t->dim;
      k.strides[0] = (int64_t)t->kv_heads * n * t->dim;
      dua_tensor v = k;
      v.buffer = vb;
      tune_check(t->ctx, dua_kv_append(c->cache, 0, 1, &c->seqs[b], &k, &v), "dua_kv_append");
    }
  }
  tune_check(t->ctx, dua_context_finish(t->ctx), "dua_context_finish");
  dua_buffer_destroy(kb);
  dua_buffer_destroy(vb);
  return c;
}

void problem_make(tuner *t, problem *p, int n, int depth, int batch, int causal, uint64_t *seed) {
  memset(p, 0, sizeof *p);
  p->n = n, p->depth = depth, p->batch = batch, p->causal = t->kind == TUNE_DECODE ? 0 : causal;
  const dua_dtype dt = t->dtype;
  const size_t es = dua_dtype_size(dt);
  if (t->kind == TUNE_DECODE) {
    make_layout(t, p, 1, 1);
    p->cache = decode_cache(t, n, batch, seed);
    const size_t qn = (size_t)batch * t->heads * t->tokens * t->dim,
                 ln = (size_t)batch * t->heads * t->tokens;
    p->q = dua_tensor_contiguous(keep(p, random_buffer(t, qn, dt, seed)), 0, dt, batch, t->heads, t->tokens,
                                 t->dim);
    p->o =
        dua_tensor_contiguous(keep(p, empty_buffer(t, qn * es)), 0, dt, batch, t->heads, t->tokens, t->dim);
    p->lse =
        dua_tensor_contiguous(keep(p, empty_buffer(t, ln * 4)), 0, DUA_F32, batch, t->heads, t->tokens, 1);
    p->out_elems = qn + ln;
  } else {
    make_layout(t, p, batch, p->causal);
    const size_t qn = (size_t)batch * t->heads * n * t->dim, kn = (size_t)batch * t->kv_heads * n * t->dim,
                 ln = (size_t)batch * t->heads * n;
    p->q = dua_tensor_contiguous(keep(p, random_buffer(t, qn, dt, seed)), 0, dt, batch, t->heads, n, t->dim);
    p->k =
        dua_tensor_contiguous(keep(p, random_buffer(t, kn, dt, seed)), 0, dt, batch, t->kv_heads, n, t->dim);
    p->v =
        dua_tensor_contiguous(keep(p, random_buffer(t, kn, dt, seed)), 0, dt, batch, t->kv_heads, n, t->dim);
    p->o = dua_tensor_contiguous(keep(p, empty_buffer(t, qn * es)), 0, dt, batch, t->heads, n, t->dim);
    p->lse = dua_tensor_contiguous(keep(p, empty_buffer(t, ln * 4)), 0, DUA_F32, batch, t->heads, n, 1);
    p->out_elems = qn + ln;
    if (t->kind == TUNE_BWD) {
      /* the forward once (its compiled or tuned tile: the backward only reads O and LSE) */
      tune_check(t->ctx, dua_attention_forward(t->ctx, p->layout, NULL, &p->q, &p->k, &p->v, &p->o, &p->lse),
                 "the forward before the backward");
      p->d_o =
          dua_tensor_contiguous(keep(p, random_buffer(t, qn, dt, seed)), 0, dt, batch, t->heads, n, t->dim);
      p->dq = dua_tensor_contiguous(keep(p, empty_buffer(t, qn * es)), 0, dt, batch, t->heads, n, t->dim);
      p->dk = dua_tensor_contiguous(keep(p, empty_buffer(t, kn * es)), 0, dt, batch, t->kv_heads, n, t->dim);
      p->dv = dua_tensor_contiguous(keep(p, empty_buffer(t, kn * es)), 0, dt, batch, t->kv_heads, n, t->dim);
      p->out_elems = qn + 2 * kn;
    }
  }
  p->ref = xmalloc(p->out_elems * sizeof(float));
  p->got = xmalloc(p->out_elems * sizeof(float));
}

dua_status problem_run(const tuner *t, problem *p) {
  switch (t->kind) {
  case TUNE_FWD: {
    dua_attention_params params;
    dua_attention_params_init(&params);
    params.allow_tf32 = t->tf32;
    return dua_attention_forward(t->ctx, p->layout, &params, &p->q, &p->k, &p->v, &p->o, &p->lse);
  }
  case TUNE_BWD:
    return dua_attention_backward(t->ctx, p->layout, NULL, &p->q, &p->k, &p->v, &p->o, &p->lse, &p->d_o,
                                  &p->dq, &p->dk, &p->dv, NULL);
  default:
    return dua_decode(t->ctx, p->cache->cache, 0, p->layout, NULL, p->cache->seqs, &p->q, &p->o, &p->lse);
  }
}

dua_status problem_decode_plan(const tuner *t, const problem *p, dua_decode_plan_info *info) {
  return dua_decode_plan_get(t->ctx, p->cache->cache, 0, p->layout, p->cache->seqs, p->batch, t->tokens,
                             info);
}

/* Appends tensor x (elems elements of dtype) to out as floats. */
static float *read_tensor(const tuner *t, const dua_tensor *x, size_t elems, float *out) {
  const size_t es = dua_dtype_size(x->dtype);
  void *raw = xmalloc(elems * es);
  tune_check(t->ctx, dua_buffer_read(x->buffer, x->offset, elems * es, raw), "reading an output");
  for (size_t i = 0; i < elems; i++)
    out[i] = x->dtype == DUA_F16 ? dua_half_to_float(((uint16_t *)raw)[i]) : ((float *)raw)[i];
  free(raw);
  return out + elems;
}

static size_t elems_of(const dua_tensor *x) {
  return (size_t)(x->shape[0] * x->shape[1] * x->shape[2] * x->shape[3]);
}

void problem_read(const tuner *t, problem *p, float *out) {
  if (t->kind == TUNE_BWD) {
    out = read_tensor(t, &p->dq, elems_of(&p->dq), out);
    out = read_tensor(t, &p->dk, elems_of(&p->dk), out);
    read_tensor(t, &p->dv, elems_of(&p->dv), out);
  } else {
    out = read_tensor(t, &p->o, elems_of(&p->o), out);
    read_tensor(t, &p->lse, elems_of(&p->lse), out);
  }
}

long problem_compare(const tuner *t, const problem *p, double *got, double *want) {
  for (size_t i = 0; i < p->out_elems; i++) {
    const double r = p->ref[i], g = p->got[i];
    if (!(fabs(g - r) <= t->atol + t->rtol * fabs(r)) && !(isinf(r) && g == r)) {
      *got = g, *want = r;
      return (long)i;
    }
  }
  return -1;
}

void problem_element_name(const tuner *t, const problem *p, long i, char *out, size_t n) {
  const dua_tensor *parts[3];
  const char *names[3];
  int count;
  if (t->kind == TUNE_BWD) {
    parts[0] = &p->dq, parts[1] = &p->dk, parts[2] = &p->dv, names[0] = "dQ", names[1] = "dK",
    names[2] = "dV";
    count = 3;
  } else {
    parts[0] = &p->o, parts[1] = &p->lse, names[0] = "O", names[1] = "LSE";
    count = 2;
  }
  size_t at = (size_t)i;
  for (int j = 0; j < count; j++) {
    if (at < elems_of(parts[j]) || j == count - 1) {
      snprintf(out, n, "%s[%zu]", names[j], at);
      return;
    }
    at -= elems_of(parts[j]);
  }
}

void problem_free(problem *p) {
  dua_layout_destroy(p->layout);
  for (int i = 0; i < p->nbufs; i++)
    dua_buffer_destroy(p->bufs[i]);
  free(p->ref);
  free(p->got);
  memset(p, 0, sizeof *p);
}

void tuner_free_caches(tuner *t) {
  for (int i = 0; i < t->ncaches; i++) {
    dua_kv_cache_destroy(t->caches[i].cache);
    free(t->caches[i].seqs);
  }
  t->ncaches = 0;
}
