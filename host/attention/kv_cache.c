/* kv_cache.c: the paged KV cache: page pool, per-sequence block tables (host mirror + device copy), sequence
 * slots, fork with copy-on-write pages, and dua_kv_append (page allocation, all or nothing, then the
 * scatter kernel of cl/kv_cache.cl). Device updates are small non-blocking uploads of host copies that are
 * freed once the queue has read them, so appends and decodes never wait for the device. */
#include "attention/forward_internal.h"
#include "attention/kv_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ asynchronous uploads */

/* Frees the host copies of uploads that have completed (all of them, waiting, when wait is set). */
static void reap_uploads(dua_kv_cache *c, int wait) {
  size_t keep = 0;
  for (size_t i = 0; i < c->n_uploads; i++) {
    dua_kv_upload *u = &c->uploads[i];
    cl_int status = CL_COMPLETE;
    if (wait)
      clWaitForEvents(1, &u->event);
    else if (clGetEventInfo(u->event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL) !=
             CL_SUCCESS)
      status = CL_COMPLETE; /* an event we cannot query is not waited for: the queue was finished or lost */
    if (status == CL_COMPLETE || status < 0) {
      clReleaseEvent(u->event);
      free(u->data);
    } else {
      c->uploads[keep++] = *u;
    }
  }
  c->n_uploads = keep;
}

/* Enqueues a non-blocking write of a private copy of data into mem at byte offset. */
static dua_status upload(dua_kv_cache *c, cl_mem mem, size_t offset, const void *data, size_t bytes,
                         const char *what) {
  reap_uploads(c, 0);
  if (c->n_uploads == c->cap_uploads) {
    size_t cap = c->cap_uploads ? 2 * c->cap_uploads : 16;
    dua_kv_upload *u = realloc(c->uploads, cap * sizeof *u);
    if (!u)
      return dua_fail(c->ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", what);
    c->uploads = u;
    c->cap_uploads = cap;
  }
  void *copy = malloc(bytes);
  if (!copy)
    return dua_fail(c->ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", what);
  memcpy(copy, data, bytes);
  cl_event ev = NULL;
  cl_int err = clEnqueueWriteBuffer(c->ctx->queue, mem, CL_FALSE, offset, bytes, copy, 0, NULL, &ev);
  if (err != CL_SUCCESS) {
    free(copy);
    return dua_fail(c->ctx, (dua_status)err, "%s: uploading %zu bytes failed: %s", what, bytes,
                    dua_status_string((dua_status)err));
  }
  c->uploads[c->n_uploads].event = ev;
  c->uploads[c->n_uploads].data = copy;
  c->n_uploads++;
  return DUA_SUCCESS;
}

dua_status dua_kv_table_set(dua_kv_cache *c, dua_kv_table *t, const int32_t *data, size_t n,
                            const char *what) {
  if (t->mem && n == t->used && memcmp(t->host, data, n * sizeof(int32_t)) == 0)
    return DUA_SUCCESS;
  if (n > t->capacity) {
    size_t cap = t->capacity ? 2 * t->capacity : 64;
    while (cap < n)
      cap *= 2;
    int32_t *host = realloc(t->host, cap * sizeof(int32_t));
    if (!host)
      return dua_fail(c->ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", what);
    t->host = host;
    cl_int err = CL_SUCCESS;
    cl_mem mem = clCreateBuffer(c->ctx->cl_ctx, CL_MEM_READ_ONLY, cap * sizeof(int32_t), NULL, &err);
    if (err != CL_SUCCESS)
      return dua_fail(c->ctx, (dua_status)err, "%s: clCreateBuffer(%zu bytes) failed: %s", what,
                      cap * sizeof(int32_t), dua_status_string((dua_status)err));
    if (t->mem) /* queued kernels still reading it keep it alive (OpenCL defers the release) */
      clReleaseMemObject(t->mem);
    t->mem = mem;
    t->capacity = cap;
    t->used = 0;
  }
  dua_status st = upload(c, t->mem, 0, data, n * sizeof(int32_t), what);
  if (st != DUA_SUCCESS) {
    t->used = 0; /* unknown contents: the next call uploads again */
    return st;
  }
  memcpy(t->host, data, n * sizeof(int32_t));
  t->used = n;
  return DUA_SUCCESS;
}

/* Sends block-table entries [lo, hi) of seq's row to the device. */
static dua_status upload_row(dua_kv_cache *c, int32_t seq, int32_t lo, int32_t hi, const char *what) {
  if (hi <= lo)
    return DUA_SUCCESS;
  size_t first = (size_t)seq * (size_t)c->max_pages + (size_t)lo;
  dua_status st = upload(c, c->block_table, first * sizeof(int32_t), c->table + first,
                         (size_t)(hi - lo) * sizeof(int32_t), what);
  c->dirty[seq] = st != DUA_SUCCESS;
  return st;
}

/* ------------------------------------------------------------------ create / destroy */

static int is_pow2_in(int32_t x, int32_t lo, int32_t hi) {
  return x >= lo && x <= hi && (x & (x - 1)) == 0;
}

void dua_kv_cache_destroy(dua_kv_cache *c) {
  if (!c)
    return;
  if (c->ctx && c->ctx->queue)
    clFinish(c->ctx->queue);
  reap_uploads(c, 1);
  free(c->uploads);
  for (int32_t l = 0; l < c->desc.layers; l++) {
    if (c->k && c->k[l])
      clReleaseMemObject(c->k[l]);
    if (c->v && c->v[l])
      clReleaseMemObject(c->v[l]);
  }
  dua_kv_table *tables[2] = {&c->append_calls, &c->decode_calls};
  for (int i = 0; i < 2; i++) {
    if (tables[i]->mem)
      clReleaseMemObject(tables[i]->mem);
    free(tables[i]->host);
  }
  if (c->block_table)
    clReleaseMemObject(c->block_table);
  free(c->k);
  free(c->v);
  free(c->table);
  free(c->length);
  free(c->pages);
  free(c->live);
  free(c->dirty);
  free(c->refs);
  free(c->free_stack);
  free(c);
}

static dua_status validate_desc(dua_context *ctx, const dua_kv_cache_desc *d) {
  static const char *fn = "dua_kv_cache_create";
  if (d->layers <= 0)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: desc.layers = %d must be > 0", fn, (int)d->layers);
  if (d->kv_heads <= 0)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: desc.kv_heads = %d must be > 0", fn,
                    (int)d->kv_heads);
  if (d->head_dim != 32 && d->head_dim != 64 && d->head_dim != 96 && d->head_dim != 128)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: desc.head_dim = %d is not 32, 64, 96 or 128", fn,
                    (int)d->head_dim);
  if (!is_pow2_in(d->page_tokens, 16, 256))
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: desc.page_tokens = %d must be a power of two in 16..256", fn, (int)d->page_tokens);
  if (d->num_pages <= 0)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: desc.num_pages = %d must be > 0", fn,
                    (int)d->num_pages);
  if (d->max_seqs <= 0)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: desc.max_seqs = %d must be > 0", fn,
                    (int)d->max_seqs);
  if (d->max_tokens <= 0)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: desc.max_tokens = %d must be > 0", fn,
                    (int)d->max_tokens);
  if (d->dtype != DUA_F32 && d->dtype != DUA_F16)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: desc.dtype = %d is not DUA_F32 or DUA_F16", fn,
                    (int)d->dtype);
  for (int i = 0; i < 7; i++)
    if (d->reserved[i] != 0)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: desc.reserved[%d] = %d must be 0", fn, i,
                      (int)d->reserved[i]);
  /* one layer's K (or V) pool in one allocation; element indices fit in 63 bits trivially */
  double layer_bytes =
      (double)d->num_pages * d->kv_heads * d->page_tokens * d->head_dim * (double)dua_dtype_size(d->dtype);
  if (layer_bytes > (double)ctx->info.max_alloc_bytes || layer_bytes > (double)INT64_MAX / 4)
    return dua_fail(
        ctx, DUA_ERROR_UNSUPPORTED,
        "%s: one layer's K pool needs %.0f bytes (num_pages = %d), more than the device's largest "
        "allocation (%llu bytes)",
        fn, layer_bytes, (int)d->num_pages, (unsigned long long)ctx->info.max_alloc_bytes);
  double table = (double)d->max_seqs * (((double)d->max_tokens + d->page_tokens - 1) / d->page_tokens) * 4.0;
  if (table > (double)ctx->info.max_alloc_bytes || table > (double)INT32_MAX)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                    "%s: the block tables need %.0f bytes (max_seqs = %d, max_tokens = %d): too large", fn,
                    table, (int)d->max_seqs, (int)d->max_tokens);
  if ((double)d->max_seqs * d->layers > (double)INT32_MAX)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED, "%s: max_seqs * layers = %.0f is too large", fn,
                    (double)d->max_seqs * d->layers);
  return DUA_SUCCESS;
}

static cl_mem device_buffer(dua_context *ctx, size_t bytes, cl_mem_flags flags, dua_status *st,
                            const char *what) {
  cl_int err = CL_SUCCESS;
  cl_mem m = clCreateBuffer(ctx->cl_ctx, flags, bytes, NULL, &err);
  if (err != CL_SUCCESS) {
    *st = dua_fail(ctx, (dua_status)err, "dua_kv_cache_create: allocating %s (%zu bytes) failed: %s", what,
                   bytes, dua_status_string((dua_status)err));
    return NULL;
  }
  return m;
}

dua_status dua_kv_cache_create(dua_context *ctx, const dua_kv_cache_desc *desc, dua_kv_cache **out) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!desc || !out)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_kv_cache_create: %s is NULL",
                    desc ? "out" : "desc");
  dua_status st = validate_desc(ctx, desc);
  if (st != DUA_SUCCESS)
    return st;
  dua_kv_cache *c = calloc(1, sizeof *c);
  if (!c)
    return DUA_ERROR_OUT_OF_MEMORY;
  c->ctx = ctx;
  c->desc = *desc;
  const size_t P = (size_t)desc->page_tokens, S = (size_t)desc->max_seqs, L = (size_t)desc->layers;
  const size_t pages = (size_t)desc->num_pages;
  c->max_pages = (int32_t)((desc->max_tokens + desc->page_tokens - 1) / desc->page_tokens);
  c->page_elements = (size_t)desc->kv_heads * P * (size_t)desc->head_dim;
  c->k = calloc(L, sizeof(cl_mem));
  c->v = calloc(L, sizeof(cl_mem));
  c->table = calloc(S * (size_t)c->max_pages, sizeof(int32_t));
  c->length = calloc(S * L, sizeof(int32_t));
  c->pages = calloc(S, sizeof(int32_t));
  c->live = calloc(S, 1);
  c->dirty = calloc(S, 1);
  c->refs = calloc(pages, sizeof(int32_t));
  c->free_stack = malloc(pages * sizeof(int32_t));
  if (!c->k || !c->v || !c->table || !c->length || !c->pages || !c->live || !c->dirty || !c->refs ||
      !c->free_stack) {
    dua_kv_cache_destroy(c);
    return dua_fail(ctx, DUA_ERROR_OUT_OF_MEMORY, "dua_kv_cache_create: out of host memory");
  }
  /* free stack: popping from the top hands out page 0, 1, 2... or a seeded permutation */
  for (size_t i = 0; i < pages; i++)
    c->free_stack[i] = (int32_t)(pages - 1 - i);
  if (desc->page_order_seed) {
    uint64_t s = desc->page_order_seed;
    for (size_t i = pages - 1; i > 0; i--) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17; /* xorshift64 */
      size_t j = (size_t)(s % (i + 1));
      int32_t t = c->free_stack[i];
      c->free_stack[i] = c->free_stack[j];
      c->free_stack[j] = t;
    }
  }
  c->free_count = desc->num_pages;
  const size_t layer_bytes = pages * c->page_elements * dua_dtype_size(desc->dtype);
  st = DUA_SUCCESS;
  for (size_t l = 0; l < L && st == DUA_SUCCESS; l++) {
    c->k[l] = device_buffer(ctx, layer_bytes, CL_MEM_READ_WRITE, &st, "the K pages");
    if (st == DUA_SUCCESS)
      c->v[l] = device_buffer(ctx, layer_bytes, CL_MEM_READ_WRITE, &st, "the V pages");
  }
  if (st == DUA_SUCCESS)
    c->block_table = device_buffer(ctx, S * (size_t)c->max_pages * sizeof(int32_t), CL_MEM_READ_ONLY, &st,
                                   "the block tables");
  if (st != DUA_SUCCESS) {
    dua_kv_cache_destroy(c);
    return st;
  }
  *out = c;
  return DUA_SUCCESS;
}

/* ------------------------------------------------------------------ sequences */

static dua_status check_seq(const dua_kv_cache *c, const char *fn, const char *name, int32_t seq) {
  if (seq < 0 || seq >= c->desc.max_seqs)
    return dua_fail(c->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s = %d is not a sequence id (0..%d)", fn, name,
                    (int)seq, (int)c->desc.max_seqs - 1);
  if (!c->live[seq])
    return dua_fail(c->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: %s = %d is not a live sequence", fn, name,
                    (int)seq);
  return DUA_SUCCESS;
}

static int32_t free_slot(const dua_kv_cache *c) {
  for (int32_t s = 0; s < c->desc.max_seqs; s++)
    if (!c->live[s])
      return s;
  return -1;
}

dua_status dua_kv_seq_add(dua_kv_cache *c, int32_t *seq) {
  if (!c)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!seq)
    return dua_fail(c->ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_kv_seq_add: seq is NULL");
  int32_t s = free_slot(c);
  if (s < 0)
    return dua_fail(c->ctx, DUA_ERROR_CAPACITY, "dua_kv_seq_add: all %d sequence slots are in use",
                    (int)c->desc.max_seqs);
  c->live[s] = 1;
  c->pages[s] = 0;
  memset(c->length + (size_t)s * c->desc.layers, 0, (size_t)c->desc.layers * sizeof(int32_t));
  *seq = s;
  return DUA_SUCCESS;
}

dua_status dua_kv_seq_fork(dua_kv_cache *c, int32_t src, int32_t *dst) {
  if (!c)
    return DUA_ERROR_INVALID_ARGUMENT;
  dua_status st = check_seq(c, "dua_kv_seq_fork", "src", src);
  if (st != DUA_SUCCESS)
    return st;
  if (!dst)
    return dua_fail(c->ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_kv_seq_fork: dst is NULL");
  int32_t s = free_slot(c);
  if (s < 0)
    return dua_fail(c->ctx, DUA_ERROR_CAPACITY, "dua_kv_seq_fork: all %d sequence slots are in use",
                    (int)c->desc.max_seqs);
  const size_t row = (size_t)c->max_pages, layers = (size_t)c->desc.layers;
  memcpy(c->table + (size_t)s * row, c->table + (size_t)src * row, (size_t)c->pages[src] * sizeof(int32_t));
  if ((st = upload_row(c, s, 0, c->pages[src], "dua_kv_seq_fork")) != DUA_SUCCESS)
    return st;
  c->pages[s] = c->pages[src];
  for (int32_t i = 0; i < c->pages[s]; i++)
    c->refs[c->table[(size_t)s * row + (size_t)i]]++;
  memcpy(c->length + (size_t)s * layers, c->length + (size_t)src * layers, layers * sizeof(int32_t));
  c->live[s] = 1;
  *dst = s;
  return DUA_SUCCESS;
}

dua_status dua_kv_seq_free(dua_kv_cache *c, int32_t seq) {
  if (!c)
    return DUA_ERROR_INVALID_ARGUMENT;
  dua_status st = check_seq(c, "dua_kv_seq_free", "seq", seq);
  if (st != DUA_SUCCESS)
    return st;
  for (int32_t i = 0; i < c->pages[seq]; i++) {
    int32_t p = c->table[(size_t)seq * (size_t)c->max_pages + (size_t)i];
    if (--c->refs[p] == 0)
      c->free_stack[c->free_count++] = p;
  }
  c->pages[seq] = 0;
  c->live[seq] = 0;
  memset(c->length + (size_t)seq * c->desc.layers, 0, (size_t)c->desc.layers * sizeof(int32_t));
  return DUA_SUCCESS;
}

dua_status dua_kv_seq_length(const dua_kv_cache *c, int32_t seq, int32_t layer, int32_t *length) {
  if (!c)
    return DUA_ERROR_INVALID_ARGUMENT;
  dua_status st = check_seq(c, "dua_kv_seq_length", "seq", seq);
  if (st != DUA_SUCCESS)
    return st;
  if (layer < 0 || layer >= c->desc.layers)
    return dua_fail(c->ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_kv_seq_length: layer = %d is not in 0..%d",
                    (int)layer, (int)c->desc.layers - 1);
  if (!length)
    return dua_fail(c->ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_kv_seq_length: length is NULL");
  *length = c->length[(size_t)seq * c->desc.layers + (size_t)layer];
  return DUA_SUCCESS;
}

dua_status dua_kv_cache_free_pages(const dua_kv_cache *c, int32_t *free_pages) {
  if (!c)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!free_pages)
    return dua_fail(c->ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_kv_cache_free_pages: free_pages is NULL");
  *free_pages = c->free_count;
  return DUA_SUCCESS;
}

/* ------------------------------------------------------------------ append */

static dua_status check_append_tensor(dua_kv_cache *c, const dua_tensor *t, const char *name, int32_t n,
                                      int64_t tokens) {
  static const char *fn = "dua_kv_append";
  dua_status st = dua_tensor_check(c->ctx, t, name);
  if (st != DUA_SUCCESS)
    return st;
  if ((st = dua_check_shape(c->ctx, fn, t, name, n, c->desc.kv_heads, tokens, c->desc.head_dim)) !=
      DUA_SUCCESS)
    return st;
  if (t->strides[3] != 1)
    return dua_fail(c->ctx, DUA_ERROR_UNSUPPORTED, "%s: %s.strides[3] = %lld; head_dim must be contiguous",
                    fn, name, (long long)t->strides[3]);
  return DUA_SUCCESS;
}

dua_status dua_kv_append(dua_kv_cache *c, int32_t layer, int32_t n, const int32_t *seqs, const dua_tensor *k,
                         const dua_tensor *v) {
  static const char *fn = "dua_kv_append";
  if (!c)
    return DUA_ERROR_INVALID_ARGUMENT;
  dua_context *ctx = c->ctx;
  const int32_t P = c->desc.page_tokens, layers = c->desc.layers;
  if (layer < 0 || layer >= layers)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: layer = %d is not in 0..%d", fn, (int)layer,
                    (int)layers - 1);
  if (n <= 0 || n > c->desc.max_seqs)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: n = %d must be in 1..max_seqs (%d)", fn, (int)n,
                    (int)c->desc.max_seqs);
  if (!seqs)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: seqs is NULL", fn);
  dua_status st;
  if (!k || !v)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: tensor %s is NULL", fn, k ? "v" : "k");
  const int64_t T = k->shape[2];
  if (T <= 0 || T > c->desc.max_tokens)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: k.shape[2] (tokens) = %lld must be in 1..max_tokens (%d)", fn, (long long)T,
                    (int)c->desc.max_tokens);
  if ((st = check_append_tensor(c, k, "k", n, T)) != DUA_SUCCESS ||
      (st = check_append_tensor(c, v, "v", n, T)) != DUA_SUCCESS)
    return st;
  if (v->dtype != k->dtype)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: v.dtype = %d differs from k.dtype = %d", fn,
                    (int)v->dtype, (int)k->dtype);
  for (int32_t i = 0; i < n; i++) {
    char name[32];
    snprintf(name, sizeof name, "seqs[%d]", (int)i);
    if ((st = check_seq(c, fn, name, seqs[i])) != DUA_SUCCESS)
      return st;
    for (int32_t j = 0; j < i; j++)
      if (seqs[j] == seqs[i])
        return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                        "%s: seqs[%d] = seqs[%d] = %d: sequences must be distinct", fn, (int)j, (int)i,
                        (int)seqs[i]);
  }
  /* plan: new pages past the mapped ones, and private copies of shared pages the write lands in */
  int64_t need = 0;
  for (int32_t i = 0; i < n; i++) {
    const int32_t s = seqs[i], len = c->length[(size_t)s * layers + (size_t)layer];
    if ((int64_t)len + T > c->desc.max_tokens)
      return dua_fail(ctx, DUA_ERROR_CAPACITY,
                      "%s: sequence %d holds %d tokens at layer %d; %lld more exceed max_tokens = %d", fn,
                      (int)s, (int)len, (int)layer, (long long)T, (int)c->desc.max_tokens);
    const int32_t first = len / P, last = (int32_t)((len + T - 1) / P);
    if (last + 1 > c->pages[s])
      need += last + 1 - c->pages[s];
    for (int32_t idx = first; idx <= last && idx < c->pages[s]; idx++)
      need += c->refs[c->table[(size_t)s * (size_t)c->max_pages + (size_t)idx]] > 1;
  }
  if (need > c->free_count)
    return dua_fail(ctx, DUA_ERROR_CAPACITY, "%s: the write needs %lld new pages, %d of %d are free", fn,
                    (long long)need, (int)c->free_count, (int)c->desc.num_pages);

  char options[96];
  snprintf(options, sizeof options, "-DDUA_KV_FP16=%d -DDUA_SRC_FP16=%d", c->desc.dtype == DUA_F16,
           k->dtype == DUA_F16);
  cl_kernel kernel;
  if ((st = dua_program_kernel(ctx, "kv_cache", options, "dua_kv_append", &kernel)) != DUA_SUCCESS)
    return st;

  /* take the pages (host bookkeeping first: an OpenCL failure below leaves rows marked dirty, resent later)
   */
  const size_t es = dua_dtype_size(c->desc.dtype), page_bytes = c->page_elements * es;
  int32_t *calls = malloc((size_t)n * 2 * sizeof(int32_t));
  if (!calls)
    return dua_fail(ctx, DUA_ERROR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  for (int32_t i = 0; i < n && st == DUA_SUCCESS; i++) {
    const int32_t s = seqs[i], len = c->length[(size_t)s * layers + (size_t)layer];
    int32_t *row = c->table + (size_t)s * (size_t)c->max_pages;
    const int32_t first = len / P, last = (int32_t)((len + T - 1) / P);
    int32_t lo = c->dirty[s] ? 0 : INT32_MAX, hi = c->dirty[s] ? c->pages[s] : 0;
    for (int32_t idx = first; idx <= last && idx < c->pages[s] && st == DUA_SUCCESS; idx++) {
      const int32_t old = row[idx];
      if (c->refs[old] <= 1)
        continue;
      const int32_t page = c->free_stack[--c->free_count]; /* copy on write: every layer of the page */
      c->refs[old]--;
      c->refs[page] = 1;
      row[idx] = page;
      lo = idx < lo ? idx : lo;
      hi = idx + 1 > hi ? idx + 1 : hi;
      for (int32_t l = 0; l < layers && st == DUA_SUCCESS; l++)
        for (int kv = 0; kv < 2 && st == DUA_SUCCESS; kv++) {
          cl_mem m = kv ? c->v[l] : c->k[l];
          cl_int err = clEnqueueCopyBuffer(ctx->queue, m, m, (size_t)old * page_bytes,
                                           (size_t)page * page_bytes, page_bytes, 0, NULL, NULL);
          if (err != CL_SUCCESS)
            st = dua_fail(ctx, (dua_status)err, "%s: copying a shared page failed: %s", fn,
                          dua_status_string((dua_status)err));
        }
    }
    for (; c->pages[s] <= last; c->pages[s]++) {
      const int32_t page = c->free_stack[--c->free_count];
      c->refs[page] = 1;
      row[c->pages[s]] = page;
      lo = c->pages[s] < lo ? c->pages[s] : lo;
      hi = c->pages[s] + 1;
    }
    if (st == DUA_SUCCESS)
      st = upload_row(c, s, lo, hi, fn);
    else
      c->dirty[s] = 1;
    calls[2 * i] = s;
    calls[2 * i + 1] = len;
  }
  if (st == DUA_SUCCESS)
    st = dua_kv_table_set(c, &c->append_calls, calls, (size_t)n * 2, fn);
  free(calls);
  if (st != DUA_SUCCESS)
    return st;

  cl_long4 ks = dua_strides4(k), vs = dua_strides4(v);
  cl_long2 offs = {{dua_elem_offset(k), dua_elem_offset(v)}};
  cl_int max_pages = c->max_pages, hkv = c->desc.kv_heads, page_tokens = P, head_dim = c->desc.head_dim,
         tokens = (cl_int)T;
  dua_arg_list a = {kernel, 0, CL_SUCCESS};
  dua_arg(&a, sizeof(cl_mem), &k->buffer->mem);
  dua_arg(&a, sizeof(cl_mem), &v->buffer->mem);
  dua_arg(&a, sizeof ks, &ks);
  dua_arg(&a, sizeof vs, &vs);
  dua_arg(&a, sizeof offs, &offs);
  dua_arg(&a, sizeof(cl_mem), &c->k[layer]);
  dua_arg(&a, sizeof(cl_mem), &c->v[layer]);
  dua_arg(&a, sizeof(cl_mem), &c->block_table);
  dua_arg(&a, sizeof max_pages, &max_pages);
  dua_arg(&a, sizeof(cl_mem), &c->append_calls.mem);
  dua_arg(&a, sizeof hkv, &hkv);
  dua_arg(&a, sizeof page_tokens, &page_tokens);
  dua_arg(&a, sizeof head_dim, &head_dim);
  dua_arg(&a, sizeof tokens, &tokens);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "%s: setting kernel argument %u failed: %s", fn, a.index - 1,
                    dua_status_string((dua_status)a.err));
  size_t global[3] = {(size_t)T * (size_t)(head_dim / 4), (size_t)hkv, (size_t)n};
  if ((st = dua_launch(ctx, kernel, 3, global, NULL, "dua_kv_append")) != DUA_SUCCESS)
    return st;
  for (int32_t i = 0; i < n; i++)
    c->length[(size_t)seqs[i] * layers + (size_t)layer] += (int32_t)T;
  return DUA_SUCCESS;
}
