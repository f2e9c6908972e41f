/* inference_generate.c: dua_inference_generate: the prompt through the block-sparse forward while each
 * layer's K/V goes into a paged dua_kv_cache, then one token per step through dua_decode under the same
 * routing; greedy or temperature/top-k sampling from a seeded stream; tokens/s and the K/V bytes the decode
 * read per token, sparse vs dense, counted from the layouts in the decode kernel's read unit. */
#include "attention/layout_internal.h"
#include "train/inference_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Cache pages of 16 tokens: the decode kernel reads key units of min(page, block, tile) tokens, and block and
 * tile are >= 16, so the unit is 16 tokens on every device and the byte counts below are exact. */
#define PAGE_TOKENS 16

#define TRY(call)                                                                                            \
  do {                                                                                                       \
    dua_status st_ = (call);                                                                                 \
    if (st_ != DUA_SUCCESS)                                                                                  \
      return st_;                                                                                            \
  } while (0)

void dua_generate_options_init(dua_generate_options *o) {
  if (!o)
    return;
  memset(o, 0, sizeof *o);
  o->seed = 1;
}

static uint64_t mix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

typedef struct scored {
  float logit;
  int32_t id;
} scored;

static int by_logit(const void *a, const void *b) {
  const scored *x = a, *y = b;
  if (x->logit != y->logit)
    return x->logit > y->logit ? -1 : 1;
  return (x->id > y->id) - (x->id < y->id);
}

/* The next token from logits [V] (finite): argmax at temperature 0, else a draw from softmax(logits / T)
 * over the top_k largest (0 = all). pool: scratch [V]. */
static int32_t sample(const float *x, int V, float temperature, int top_k, uint64_t *rng, scored *pool) {
  int32_t best = 0;
  for (int32_t i = 1; i < V; i++)
    if (x[i] > x[best])
      best = i;
  if (temperature == 0.0f)
    return best;
  for (int32_t i = 0; i < V; i++)
    pool[i].logit = x[i], pool[i].id = i;
  qsort(pool, (size_t)V, sizeof *pool, by_logit);
  const int k = top_k > 0 && top_k < V ? top_k : V;
  double sum = 0.0;
  for (int i = 0; i < k; i++)
    sum += exp(((double)pool[i].logit - pool[0].logit) / temperature);
  double u = ((double)(mix64(rng) >> 11) + 0.5) * (1.0 / 9007199254740992.0) * sum;
  for (int i = 0; i < k; i++) {
    u -= exp(((double)pool[i].logit - pool[0].logit) / temperature);
    if (u <= 0.0)
      return pool[i].id;
  }
  return pool[k - 1].id;
}

/* K/V bytes the decode of the query at position pos reads (units of PAGE_TOKENS holding a visible key,
 * clipped to the context), and what a dense decode reads (every key of the context), over heads and layers.
 */
static void count_kv(const dua_inference_model *m, dua_layout **lay, int32_t pos, uint8_t *mark,
                     double *sparse, double *dense) {
  const int32_t len = pos + 1, units = (len + PAGE_TOKENS - 1) / PAGE_TOKENS;
  const double per_token = (double)m->Dh * sizeof(float) * 2.0;
  double tokens = 0.0;
  for (int l = 0; l < m->L; l++)
    for (int h = 0; h < m->H; h++) {
      memset(mark, 0, (size_t)units);
      for (int32_t j = 0; j <= pos; j++)
        if (!mark[j / PAGE_TOKENS] && dua_layout_visible(lay[l], 0, h, pos, j))
          mark[j / PAGE_TOKENS] = 1;
      for (int32_t u = 0; u < units; u++)
        if (mark[u])
          tokens += (u + 1) * PAGE_TOKENS <= len ? PAGE_TOKENS : len - u * PAGE_TOKENS;
    }
  *sparse += tokens * per_token;
  *dense += (double)m->L * m->H * len * per_token;
}

/* Content routing: the block density of the generated sequence's own layouts over the query blocks up to
 * the one holding position last (later blocks have no paths yet): visited key blocks / the causal blocks
 * dense attention visits for the same query blocks, mean over layers and heads. */
static dua_status content_density(dua_inference_model *m, int32_t last, double *density) {
  const int32_t reached = last / m->cfg.block + 1, nb = dua_layout_num_blocks(m->glay[0]);
  int32_t *blocks = malloc((size_t)nb * sizeof *blocks);
  if (!blocks)
    return dua_fail(m->ctx, DUA_ERROR_OUT_OF_MEMORY, "dua_inference_generate: out of host memory");
  double visited = 0.0;
  for (int l = 0; l < m->L; l++)
    for (int h = 0; h < m->H; h++)
      for (int32_t q = 0; q < reached; q++)
        visited += dua_layout_row_blocks(m->glay[l], 0, h, q, blocks, NULL);
  free(blocks);
  *density = visited / ((double)m->L * m->H * reached * (reached + 1) / 2.0);
  return DUA_SUCCESS;
}

static dua_status ensure_cache(dua_inference_model *m) {
  if (m->cache)
    return DUA_SUCCESS;
  dua_kv_cache_desc d;
  memset(&d, 0, sizeof d);
  d.layers = m->L, d.kv_heads = m->H, d.head_dim = m->Dh, d.page_tokens = PAGE_TOKENS;
  d.num_pages = (m->S + PAGE_TOKENS - 1) / PAGE_TOKENS, d.max_seqs = 1, d.max_tokens = m->S;
  d.dtype = DUA_F32;
  return dua_kv_cache_create(m->ctx, &d, &m->cache);
}

static dua_status validate(dua_inference_model *m, const int32_t *prompt, int32_t prompt_len, int32_t n_new,
                           const dua_generate_options *o, const int32_t *tokens) {
  static const char *fn = "dua_inference_generate";
  const int S = m->S;
  if (!prompt || !tokens)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: prompt and tokens must not be NULL", fn);
  if (prompt_len < 1 || prompt_len > S)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: prompt_len = %d must be in 1..%d: the model's learned position embedding has %d "
                    "positions (its seq_len)",
                    fn, (int)prompt_len, S, S);
  if (n_new < 1)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: n_new = %d must be >= 1", fn, (int)n_new);
  if (n_new > S - prompt_len)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: prompt_len + n_new = %d + %d = %lld exceeds the model's seq_len %d (its learned "
                    "position embedding has no position past %d); at most %d new tokens fit",
                    fn, (int)prompt_len, (int)n_new, (long long)prompt_len + n_new, S, S - 1,
                    S - (int)prompt_len);
  for (int32_t i = 0; i < prompt_len; i++)
    if (prompt[i] < 0 || prompt[i] >= m->V)
      return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "%s: prompt[%d] = %d is not in 0..%d (the vocabulary)", fn, (int)i, (int)prompt[i],
                      (int)m->V - 1);
  if (!isfinite(o->temperature) || o->temperature < 0.0f)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: temperature = %g must be finite and >= 0 (0 = greedy)", fn, (double)o->temperature);
  if (o->top_k < 0 || o->top_k > m->V)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: top_k = %d must be in 0..%d (0 = all tokens)",
                    fn, (int)o->top_k, (int)m->V);
  if (o->dense != 0 && o->dense != 1)
    return dua_fail(m->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: dense = %d must be 0 or 1", fn, (int)o->dense);
  return DUA_SUCCESS;
}

/* Reads the logits of the head's first row and checks them. */
static dua_status read_logits(dua_inference_model *m, float *x) {
  TRY(dua_buffer_read(m->acts, 4 * m->a.logits, (size_t)m->V * sizeof *x, x));
  for (int32_t i = 0; i < m->V; i++)
    if (!isfinite(x[i]))
      return dua_fail(m->ctx, DUA_ERROR_INTERNAL, "dua_inference_generate: logit %d is %g", (int)i,
                      (double)x[i]);
  return DUA_SUCCESS;
}

typedef struct gen_state {
  dua_layout **lay;
  int content; /* content-routed and not dense: the layouts are the sequence's own (m->glay) */
  int32_t seq;
  int32_t *out;
  float *x;
  scored *pool;
  uint8_t *mark;
  double prefill_s, decode_s, kv, dense_kv;
} gen_state;

static dua_status run(dua_inference_model *m, const int32_t *prompt, int32_t P, int32_t n_new,
                      const dua_generate_options *o, float *logits, gen_state *g) {
  uint64_t rng = o->seed ^ 0x6E6572617465ull;
  size_t res;
  double t0 = dua_inference_now();
  dua_inference_pass prefill = {prompt, 1, P, -1, g->seq, g->lay};
  TRY(dua_inference_blocks(m, &prefill, &res));
  TRY(dua_inference_head(m, res, P - 1, 1));
  TRY(read_logits(m, g->x));
  g->out[0] = sample(g->x, m->V, o->temperature, o->top_k, &rng, g->pool);
  if (logits)
    memcpy(logits, g->x, (size_t)m->V * sizeof *logits);
  double t1 = dua_inference_now();
  g->prefill_s = t1 - t0;
  for (int32_t i = 1; i < n_new; i++) {
    const int32_t pos = P + i - 1;
    dua_inference_pass step = {&g->out[i - 1], 1, 1, pos, g->seq, g->lay};
    TRY(dua_inference_blocks(m, &step, &res));
    TRY(dua_inference_head(m, res, 0, 1));
    TRY(read_logits(m, g->x));
    g->out[i] = sample(g->x, m->V, o->temperature, o->top_k, &rng, g->pool);
    if (logits)
      memcpy(logits + (size_t)i * m->V, g->x, (size_t)m->V * sizeof *logits);
  }
  g->decode_s = dua_inference_now() - t1;
  dua_layout **counted = g->content ? m->glay : g->lay; /* the sequence's own layouts (content routing) */
  for (int32_t i = 1; i < n_new; i++) /* after the clock: the counts are bookkeeping, not generation */
    count_kv(m, counted, P + i - 1, g->mark, &g->kv, &g->dense_kv);
  return DUA_SUCCESS;
}

dua_status dua_inference_generate(dua_inference_model *m, const int32_t *prompt, int32_t prompt_len,
                                  int32_t n_new, const dua_generate_options *options, int32_t *tokens,
                                  float *logits, dua_generate_stats *stats) {
  if (!m)
    return DUA_ERROR_INVALID_ARGUMENT;
  dua_generate_options o;
  dua_generate_options_init(&o);
  if (options)
    o = *options;
  TRY(validate(m, prompt, prompt_len, n_new, &o, tokens));
  gen_state g;
  memset(&g, 0, sizeof g);
  g.seq = -1;
  g.content = m->content && !o.dense;
  TRY(dua_inference_layouts(m, 1, o.dense, &g.lay));
  TRY(ensure_cache(m));
  g.out = malloc((size_t)n_new * sizeof *g.out);
  g.x = malloc((size_t)m->V * sizeof *g.x);
  g.pool = malloc((size_t)m->V * sizeof *g.pool);
  g.mark = malloc((size_t)m->S / PAGE_TOKENS + 1);
  dua_status st =
      (!g.out || !g.x || !g.pool || !g.mark)
          ? dua_fail(m->ctx, DUA_ERROR_OUT_OF_MEMORY, "dua_inference_generate: out of host memory")
          : dua_kv_seq_add(m->cache, &g.seq);
  if (st == DUA_SUCCESS)
    st = run(m, prompt, prompt_len, n_new, &o, logits, &g);
  if (g.seq >= 0) {
    dua_context_finish(m->ctx);
    dua_status fs = dua_kv_seq_free(m->cache, g.seq);
    if (st == DUA_SUCCESS)
      st = fs;
  }
  double gen_density = 0.0; /* content routing: the sequence's own */
  if (st == DUA_SUCCESS && stats && g.content)
    st = content_density(m, prompt_len + n_new - 2, &gen_density);
  if (st == DUA_SUCCESS) {
    memcpy(tokens, g.out, (size_t)n_new * sizeof *tokens);
    if (stats) {
      memset(stats, 0, sizeof *stats);
      stats->prompt_tokens = prompt_len;
      stats->new_tokens = n_new;
      stats->decode_steps = n_new - 1;
      stats->prefill_seconds = g.prefill_s;
      stats->decode_seconds = g.decode_s;
      const double total = g.prefill_s + g.decode_s;
      stats->tokens_per_second = total > 0 ? n_new / total : 0.0;
      stats->decode_tokens_per_second = g.decode_s > 0 && n_new > 1 ? (n_new - 1) / g.decode_s : 0.0;
      stats->kv_bytes_per_token = n_new > 1 ? g.kv / (n_new - 1) : 0.0;
      stats->dense_kv_bytes_per_token = n_new > 1 ? g.dense_kv / (n_new - 1) : 0.0;
      if (g.content) {
        stats->density = gen_density;
      } else {
        double sum = 0.0;
        for (int l = 0; l < m->L; l++) {
          dua_layout_density d;
          if (dua_layout_density_get(g.lay[l], &d) == DUA_SUCCESS)
            sum += d.blocks;
        }
        stats->density = sum / m->L / m->dense_blocks;
      }
    }
  }
  free(g.out);
  free(g.x);
  free(g.pool);
  free(g.mark);
  return st;
}
