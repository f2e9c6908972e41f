/* kv_internal.h: the dua_kv_cache struct (host mirrors of the block tables, page pool bookkeeping, device
 * storage) and what decode.c needs from kv_cache.c: small asynchronous uploads whose host copies live until
 * the queue has read them. */
#ifndef DUA_KV_INTERNAL_H
#define DUA_KV_INTERNAL_H

#include "runtime/context_internal.h"
#include "tuning/decode_params.h"

/* A host copy handed to a non-blocking clEnqueueWriteBuffer, freed once its event completes. */
typedef struct dua_kv_upload {
  cl_event event;
  void *data;
} dua_kv_upload;

/* The last contents uploaded to a small per-call device table (so an unchanged table is not sent again). */
typedef struct dua_kv_table {
  cl_mem mem;
  size_t capacity; /* int32 entries */
  int32_t *host;   /* [capacity]: what the device holds (as enqueued) */
  size_t used;     /* entries valid in host */
} dua_kv_table;

struct dua_kv_cache {
  dua_context *ctx;
  dua_kv_cache_desc desc;
  int32_t max_pages;    /* block table row length: ceil(max_tokens / P) */
  size_t page_elements; /* Hkv * P * head_dim: one page of one layer, K or V */
  cl_mem *k, *v;        /* [layers]: [num_pages][Hkv][P][head_dim] of desc.dtype */
  cl_mem block_table;   /* [max_seqs][max_pages] int32 on the device */
  int32_t *table;       /* host mirror of block_table */
  int32_t *length;      /* [max_seqs][layers] tokens held */
  int32_t *pages;       /* [max_seqs] pages mapped (table entries valid) */
  uint8_t *live;        /* [max_seqs] */
  uint8_t *dirty;       /* [max_seqs] the device row may differ from the host row: send it whole */
  int32_t *refs;        /* [num_pages] sequences using the page */
  int32_t *free_stack;  /* [num_pages] free pages; the next one handed out is free_stack[free_count - 1] */
  int32_t free_count;
  dua_kv_table append_calls; /* (seq, first position) per row of the last append */
  dua_kv_table decode_calls; /* (seq, length) per row of the last decode */
  dua_kv_upload *uploads;    /* pending asynchronous uploads */
  size_t n_uploads, cap_uploads;
};

/* Makes `table` hold the n int32 values of data on the device (uploading only when they differ from what it
 * holds; grows it as needed). Non-blocking: the data is copied first. */
dua_status dua_kv_table_set(dua_kv_cache *c, dua_kv_table *table, const int32_t *data, size_t n,
                            const char *what);

/* The launch plan dua_decode would use for these sequences, tokens and layout at this layer (for dua-tune and
 * the tests; no launch): kernel variant, tile, work-items, query heads per work-group, splits, and whether
 * a tuned plan (override or database) or the compiled/developer one (shrunk to the device) was taken. */
typedef struct dua_decode_plan_info {
  int staged, tile_n, threads, heads_per_group, splits;
  int unroll, vpl; /* warp kernel: key steps per batch, 16-byte loads per lane and key; else 0 */
  dua_decode_split_params
      split; /* the split-KV thresholds the split count came from (not DUA_DECODE_SPLITS) */
  dua_tuning_source source, split_source;
} dua_decode_plan_info;

dua_status dua_decode_plan_get(dua_context *ctx, dua_kv_cache *cache, int32_t layer, const dua_layout *layout,
                               const int32_t *seqs, int32_t num_seqs, int32_t tokens,
                               dua_decode_plan_info *out);

#endif
