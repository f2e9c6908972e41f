/* tail_order.c: the order of a tensor-core launch's last work-groups, longest first.
 *
 * A launch over (batch, head, block) entries starts its work-groups in entry order. Where the entries differ
 * in length (causal layouts: inside a tree range a later query block visits more key blocks than an earlier
 * one), every head's longest entries come last in its range, and the launch's last wave ends with a few of
 * them running on an otherwise idle GPU. So the launch's last `tail` entries are handed out by decreasing
 * length (the longest-processing-time rule), and only those: sorting the whole launch would spread the
 * work-groups in flight over every head's keys and values and lose the L2 reuse between neighbours, which
 * entry order keeps. Ties keep entry order. */
#include "attention/layout_device.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
  int64_t length;
  int32_t entry;
} entry_length;

static int longest_first(const void *pa, const void *pb) {
  const entry_length *a = pa, *b = pb;
  if (a->length != b->length)
    return a->length > b->length ? -1 : 1;
  return (a->entry > b->entry) - (a->entry < b->entry);
}

/* Entries in the tail: DUA_TAIL_ORDER (0 = none), else four per compute unit (on an H100: 1.3 waves of the
 * two-m-tile forward, 1.6 of the one-m-tile one, 2.7 of each backward pass). */
static int64_t tail_length(dua_context *ctx) {
  const int64_t fallback = 4 * (int64_t)ctx->info.compute_units;
  const char *env = getenv("DUA_TAIL_ORDER");
  if (!env || !*env)
    return fallback;
  char *end = NULL;
  errno = 0;
  const long long v = strtoll(env, &end, 10);
  if (errno || *end || v < 0) {
    dua_log(ctx, DUA_LOG_WARNING, "DUA_TAIL_ORDER = \"%s\" is not a count of entries: ignored", env);
    return fallback;
  }
  return v;
}

/* Entries of a launch over (batch, head, block): query heads (keys 0) or KV heads (keys 1). */
static int64_t launch_entries(const dua_layout *l, int keys) {
  return (int64_t)l->batch * (keys ? l->kv_heads : l->heads) * l->num_blocks;
}

/* The lengths of entries [first, total): key blocks visited (keys 0) or visiting query blocks over the GQA
 * group (keys 1). */
static dua_status entry_lengths(dua_layout *l, int keys, int64_t first, int64_t total, entry_length *out) {
  const int64_t nb = l->num_blocks;
  const int32_t heads = keys ? l->kv_heads : l->heads, group = l->heads / l->kv_heads;
  int32_t *blocks = NULL;
  uint8_t *full = NULL;
  dua_block_lists lists;
  if (keys) {
    const dua_status st = dua_layout_lists(l, 1, &lists);
    if (st != DUA_SUCCESS)
      return st;
  } else {
    blocks = malloc((size_t)nb * sizeof *blocks);
    full = malloc((size_t)nb);
    if (!blocks || !full) {
      free(blocks);
      free(full);
      return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_OUT_OF_MEMORY, "tail order: out of memory");
    }
  }
  for (int64_t e = first; e < total; e++) {
    const int32_t blk = (int32_t)(e % nb), h = (int32_t)(e / nb % heads), b = (int32_t)(e / nb / heads);
    int64_t length = 0;
    if (keys)
      for (int32_t hq = h * group; hq < (h + 1) * group; hq++)
        length += lists.counts[((int64_t)b * l->heads + hq) * nb + blk];
    else
      length = dua_layout_row_blocks(l, b, h, blk, blocks, full);
    out[e - first] = (entry_length){length, (int32_t)e};
  }
  free(blocks);
  free(full);
  return DUA_SUCCESS;
}

/* The common length of el[0, n), or -1. */
static int64_t common_length(const entry_length *el, int64_t n) {
  for (int64_t i = 1; i < n; i++)
    if (el[i].length != el[0].length)
      return -1;
  return n >= 2 ? el[0].length : -1;
}

/* The longest length of el[0, n), or -1 where n < 2. */
static int64_t longest_length(const entry_length *el, int64_t n) {
  int64_t longest = -1;
  for (int64_t i = 0; n >= 2 && i < n; i++)
    longest = el[i].length > longest ? el[i].length : longest;
  return longest;
}

dua_status dua_layout_tail_entries(dua_layout *l, int keys, int64_t window, int64_t tail, int32_t *order,
                                   int64_t *count, dua_tail_lengths *lengths) {
  const int64_t total = launch_entries(l, keys);
  *count = 0;
  lengths->uniform = lengths->longest = -1;
  window = window < total ? window : total;
  tail = tail < total ? tail : total;
  const int64_t span = window > tail ? window : tail; /* the lengths of the last `span` entries, once */
  if (span < 2 || total > INT32_MAX)
    return DUA_SUCCESS;
  entry_length *el = malloc((size_t)span * sizeof *el);
  if (!el)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_OUT_OF_MEMORY, "tail order: out of memory");
  dua_status st = entry_lengths(l, keys, total - span, total, el);
  if (st == DUA_SUCCESS) {
    lengths->uniform = common_length(el + span - window, window);
    lengths->longest = longest_length(el + span - window, window);
    entry_length *last = el + span - tail;
    if (tail >= 2 && common_length(last, tail) < 0) { /* equal lengths: entry order is as good */
      qsort(last, (size_t)tail, sizeof *last, longest_first);
      for (int64_t i = 0; i < tail; i++)
        order[i] = last[i].entry;
      *count = tail;
    }
  }
  free(el);
  return st;
}

dua_status dua_layout_tail_order(dua_context *ctx, dua_layout *layout, int keys, cl_mem *order, cl_int *start,
                                 dua_tail_lengths *lengths) {
  dua_layout_device *d = NULL;
  dua_status st = dua_layout_device_get(ctx, layout, 0, &d);
  if (st != DUA_SUCCESS)
    return st;
  const int64_t tail = tail_length(ctx);
  if (d->tail_made[keys] != tail) {
    if (d->tail_order[keys]) {
      clReleaseMemObject(d->tail_order[keys]);
      d->tail_order[keys] = NULL;
    }
    d->tail_start[keys] = INT32_MAX;
    d->tail_lengths[keys] = (dua_tail_lengths){-1, -1};
    /* whether the last entries share one length (the split tail's condition) and the longest (the
     * short-launch rule's for causal layouts) over the default tail's room doubled (every launch's last
     * partial wave: up to 5 work-groups per compute unit), and the order of the last `tail` where they do not
     * share one */
    const int64_t total = launch_entries(layout, keys), window = 8 * (int64_t)ctx->info.compute_units;
    const int64_t room = tail < total ? tail : total;
    int32_t *entries = room >= 2 ? malloc((size_t)room * sizeof *entries) : NULL;
    int64_t count = 0;
    if (room >= 2 && !entries)
      return DUA_ERROR_OUT_OF_MEMORY;
    st = dua_layout_tail_entries(layout, keys, window, tail, entries, &count, &d->tail_lengths[keys]);
    if (st != DUA_SUCCESS)
      st = dua_fail(ctx, st, "%s", layout->error);
    else if (count > 0 && (st = dua_device_upload(ctx, entries, (size_t)count * sizeof *entries,
                                                  &d->tail_order[keys], "tail order")) == DUA_SUCCESS)
      d->tail_start[keys] = (cl_int)(total - count);
    free(entries);
    if (st != DUA_SUCCESS)
      return st;
    d->tail_made[keys] = tail;
  }
  *order = d->tail_order[keys] ? d->tail_order[keys] : d->dummy;
  *start = d->tail_start[keys];
  if (lengths)
    *lengths = d->tail_lengths[keys];
  return DUA_SUCCESS;
}
