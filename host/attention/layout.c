/* layout.c: creation, validation and destruction of layouts (rule form: positional or content tree; list
 * form from the caller's BSR lists), tree depths, the exact token-level visibility rule, and the content
 * buckets used by the device rule form. DESIGN.md section 2.
 *
 * Validation rules beyond dua.h: shift must be <= max_h p_h^D_h (a larger shift is equivalent to a
 * smaller one for every subtree size and only risks overflow); p_h^D_h must be <= 2^30; batch * heads * nb
 * must fit in int32. Content path digits are checked at levels < D_h only (levels D_h..Dmax-1 of a head
 * with a shallower tree are padding and ignored). */
#include "attention/layout_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dua_status dua_layout_fail(char *error, size_t error_size, dua_status status, const char *fmt, ...) {
  if (error != NULL && error_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, error_size, fmt, ap);
    va_end(ap);
  }
  return status;
}

/* D = smallest d with p^d >= nb, and p^D, in integer arithmetic. */
static void tree_depth_of(int64_t nb, int64_t p, int32_t *depth, int64_t *span) {
  int32_t d = 0;
  int64_t s = 1;
  while (s < nb) {
    s *= p; /* s < nb <= 2^27 and p < 2^31 before the product: no overflow in int64 */
    d++;
  }
  *depth = d;
  *span = s;
}

static void layout_free(struct dua_layout *l) {
  if (l == NULL)
    return;
  if (l->device && l->device_release)
    l->device_release(l->device);
  free(l->arity);
  free(l->tree_depth);
  free(l->depth);
  free(l->group);
  free(l->span);
  free(l->paths);
  free(l->order);
  free(l->rank_lo);
  free(l->rank_hi);
  free(l->user_counts);
  free(l->user_indices);
  for (int t = 0; t < 2; t++) {
    free(l->list_counts[t]);
    free(l->list_full[t]);
    free(l->list_indices[t]);
  }
  free(l);
}

void dua_layout_destroy(dua_layout *layout) {
  layout_free(layout);
}

/* Validates the fields shared by both constructors and fills the per-head arrays of a new layout.
 * use_routing = 0 for list layouts (depths, shift, window, sink, paths ignored). */
static dua_status layout_init(const dua_layout_desc *desc, int use_routing, const char *fn,
                              struct dua_layout **out_layout, char *error, size_t error_size) {
#define FAIL(...) dua_layout_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT, __VA_ARGS__)
  if (desc == NULL)
    return FAIL("%s: desc is NULL", fn);
  if (desc->seq_len <= 0)
    return FAIL("%s: seq_len = %d must be > 0", fn, (int)desc->seq_len);
  int32_t blk = desc->block;
  if (blk != 16 && blk != 32 && blk != 64 && blk != 128 && blk != 256)
    return FAIL("%s: block = %d must be one of 16, 32, 64, 128, 256", fn, (int)blk);
  if (desc->batch <= 0)
    return FAIL("%s: batch = %d must be > 0", fn, (int)desc->batch);
  if (desc->heads <= 0)
    return FAIL("%s: heads = %d must be > 0", fn, (int)desc->heads);
  int32_t kvh = desc->kv_heads == 0 ? desc->heads : desc->kv_heads;
  if (kvh < 0 || desc->heads % kvh != 0)
    return FAIL("%s: kv_heads = %d must divide heads = %d (or be 0)", fn, (int)desc->kv_heads,
                (int)desc->heads);
  if (desc->causal != 0 && desc->causal != 1)
    return FAIL("%s: causal = %d must be 0 or 1", fn, (int)desc->causal);
  int64_t nb = ((int64_t)desc->seq_len + blk - 1) / blk;
  if ((int64_t)desc->batch * desc->heads * nb > INT32_MAX)
    return FAIL("%s: batch * heads * blocks = %d * %d * %lld overflows int32", fn, (int)desc->batch,
                (int)desc->heads, (long long)nb);
  if (desc->arities == NULL && desc->arity < 2)
    return FAIL("%s: arity = %d must be >= 2", fn, (int)desc->arity);
  if (desc->arities != NULL)
    for (int32_t h = 0; h < desc->heads; h++)
      if (desc->arities[h] < 2)
        return FAIL("%s: arities[%d] = %d must be >= 2", fn, (int)h, (int)desc->arities[h]);
  int64_t max_span = 1;
  int32_t max_depth = 0;
  for (int32_t h = 0; h < desc->heads; h++) {
    int32_t p = desc->arities ? desc->arities[h] : desc->arity, dh;
    int64_t span;
    tree_depth_of(nb, p, &dh, &span);
    if (span > DUA_LAYOUT_MAX_SPAN) {
      char field[32] = "arity";
      if (desc->arities)
        snprintf(field, sizeof field, "arities[%d]", (int)h);
      return FAIL("%s: %s = %d gives a subtree span p^D = %lld above 2^30 for %lld blocks", fn, field, (int)p,
                  (long long)span, (long long)nb);
    }
    if (span > max_span)
      max_span = span;
    if (dh > max_depth)
      max_depth = dh;
    if (use_routing && desc->depths != NULL && (desc->depths[h] < -1 || desc->depths[h] > dh))
      return FAIL("%s: depths[%d] = %d is outside [-1, %d] (tree depth D of head %d with arity %d, %lld "
                  "blocks)",
                  fn, (int)h, (int)desc->depths[h], (int)dh, (int)h, (int)p, (long long)nb);
  }
  if (use_routing) {
    if (desc->shift < 0 || desc->shift > max_span)
      return FAIL("%s: shift = %d must be in [0, %lld] (0 .. max_h p_h^D_h)", fn, (int)desc->shift,
                  (long long)max_span);
    if (desc->window < 0)
      return FAIL("%s: window = %d must be >= 0", fn, (int)desc->window);
    if (desc->sink < 0)
      return FAIL("%s: sink = %d must be >= 0", fn, (int)desc->sink);
    if (desc->paths != NULL) {
      for (int32_t b = 0; b < desc->batch; b++)
        for (int32_t h = 0; h < desc->heads; h++) {
          int32_t p = desc->arities ? desc->arities[h] : desc->arity, dh;
          int64_t span;
          tree_depth_of(nb, p, &dh, &span);
          for (int64_t n = 0; n < nb; n++) {
            const uint8_t *path = desc->paths + (((size_t)b * desc->heads + h) * nb + n) * max_depth;
            for (int32_t lv = 0; lv < dh; lv++)
              if (path[lv] >= p)
                return FAIL("%s: paths[b=%d][h=%d][block=%lld][level=%d] = %d must be < arity %d", fn, (int)b,
                            (int)h, (long long)n, (int)lv, (int)path[lv], (int)p);
          }
        }
    }
  }
#undef FAIL

  struct dua_layout *l = calloc(1, sizeof *l);
  if (l == NULL)
    return dua_layout_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
  l->seq_len = desc->seq_len;
  l->block = blk;
  l->batch = desc->batch;
  l->heads = desc->heads;
  l->kv_heads = kvh;
  l->num_blocks = (int32_t)nb;
  l->max_depth = max_depth;
  l->causal = desc->causal;
  if (use_routing) {
    l->shift = desc->shift;
    l->window = desc->window < desc->seq_len ? desc->window : desc->seq_len;
    l->sink = desc->sink < desc->seq_len ? desc->sink : desc->seq_len;
  }
  size_t hb = (size_t)desc->heads * sizeof(int32_t);
  l->arity = malloc(hb);
  l->tree_depth = malloc(hb);
  l->depth = malloc(hb);
  l->group = malloc(hb);
  l->span = malloc(hb);
  if (!l->arity || !l->tree_depth || !l->depth || !l->group || !l->span) {
    layout_free(l);
    return dua_layout_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
  }
  for (int32_t h = 0; h < desc->heads; h++) {
    int32_t p = desc->arities ? desc->arities[h] : desc->arity, dh;
    int64_t span;
    tree_depth_of(nb, p, &dh, &span);
    int32_t d = (use_routing && desc->depths) ? desc->depths[h] : 0;
    if (d < 0)
      d = dh;
    int64_t g = 1;
    for (int32_t k = d; k < dh; k++)
      g *= p;
    l->arity[h] = p;
    l->tree_depth[h] = dh;
    l->depth[h] = d;
    l->group[h] = (int32_t)g;
    l->span[h] = (int32_t)span;
  }
  *out_layout = l;
  return DUA_SUCCESS;
}

/* Content buckets: per (b, h), blocks sorted by (first d_h digits, block index); the bucket of m is the
 * run of equal keys around m's rank. Counting-sort free: a simple merge sort on block indices. */
typedef struct bucket_key_ctx {
  const uint8_t *paths; /* [nb][max_depth] of this (b, h) */
  int32_t max_depth, depth;
} bucket_key_ctx;

static int bucket_cmp(const bucket_key_ctx *c, int32_t a, int32_t b) {
  int r = memcmp(c->paths + (size_t)a * c->max_depth, c->paths + (size_t)b * c->max_depth, (size_t)c->depth);
  return r != 0 ? r : (a > b) - (a < b);
}

static void merge_sort(const bucket_key_ctx *c, int32_t *v, int32_t *tmp, int32_t n) {
  for (int32_t width = 1; width < n; width *= 2) {
    for (int32_t lo = 0; lo < n; lo += 2 * width) {
      int32_t mid = dua_min_i32(lo + width, n), hi = dua_min_i32(lo + 2 * width, n);
      int32_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi)
        tmp[k++] = bucket_cmp(c, v[i], v[j]) <= 0 ? v[i++] : v[j++];
      while (i < mid)
        tmp[k++] = v[i++];
      while (j < hi)
        tmp[k++] = v[j++];
    }
    memcpy(v, tmp, (size_t)n * sizeof *v);
  }
}

static dua_status build_buckets(struct dua_layout *l) {
  int32_t nb = l->num_blocks;
  size_t rows = (size_t)l->batch * l->heads * nb;
  l->order = malloc(rows * sizeof(int32_t));
  l->rank_lo = malloc(rows * sizeof(int32_t));
  l->rank_hi = malloc(rows * sizeof(int32_t));
  int32_t *tmp = malloc((size_t)nb * sizeof(int32_t));
  if (!l->order || !l->rank_lo || !l->rank_hi || !tmp) {
    free(tmp);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  for (int32_t b = 0; b < l->batch; b++)
    for (int32_t h = 0; h < l->heads; h++) {
      size_t base = ((size_t)b * l->heads + h) * nb;
      bucket_key_ctx c = {dua_layout_path(l, b, h, 0), l->max_depth, l->depth[h]};
      int32_t *order = l->order + base;
      for (int32_t n = 0; n < nb; n++)
        order[n] = n;
      merge_sort(&c, order, tmp, nb);
      for (int32_t r = 0; r < nb;) {
        int32_t e = r + 1;
        while (e < nb && memcmp(c.paths + (size_t)order[r] * c.max_depth,
                                c.paths + (size_t)order[e] * c.max_depth, (size_t)c.depth) == 0)
          e++;
        for (int32_t k = r; k < e; k++) {
          l->rank_lo[base + order[k]] = r;
          l->rank_hi[base + order[k]] = e;
        }
        r = e;
      }
    }
  free(tmp);
  return DUA_SUCCESS;
}

dua_status dua_layout_create(const dua_layout_desc *desc, dua_layout **out, char *error, size_t error_size) {
  static const char fn[] = "dua_layout_create";
  if (out == NULL)
    return dua_layout_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT, "%s: out is NULL", fn);
  struct dua_layout *l = NULL;
  dua_status st = layout_init(desc, 1, fn, &l, error, error_size);
  if (st != DUA_SUCCESS)
    return st;
  l->kind = desc->paths ? DUA_LAYOUT_CONTENT : DUA_LAYOUT_POSITIONAL;
  if (desc->paths != NULL && l->max_depth > 0) {
    size_t bytes = (size_t)l->batch * l->heads * l->num_blocks * l->max_depth;
    l->paths = malloc(bytes);
    if (l->paths == NULL) {
      layout_free(l);
      return dua_layout_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    memcpy(l->paths, desc->paths, bytes);
  }
  if (l->kind == DUA_LAYOUT_CONTENT && l->max_depth == 0) {
    /* nb == 1: every path is empty; a 1-byte dummy keeps dua_layout_path valid */
    l->paths = calloc(1, 1);
    if (l->paths == NULL) {
      layout_free(l);
      return dua_layout_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
  }
  if (l->kind == DUA_LAYOUT_CONTENT && build_buckets(l) != DUA_SUCCESS) {
    layout_free(l);
    return dua_layout_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
  }
  *out = l;
  return DUA_SUCCESS;
}

dua_status dua_layout_create_from_lists(const dua_layout_desc *desc, const int32_t *counts,
                                        const int32_t *indices, dua_layout **out, char *error,
                                        size_t error_size) {
  static const char fn[] = "dua_layout_create_from_lists";
#define FAIL(...) dua_layout_fail(error, error_size, DUA_ERROR_INVALID_ARGUMENT, __VA_ARGS__)
  if (out == NULL)
    return FAIL("%s: out is NULL", fn);
  if (counts == NULL)
    return FAIL("%s: counts is NULL", fn);
  if (indices == NULL)
    return FAIL("%s: indices is NULL", fn);
  struct dua_layout *l = NULL;
  dua_status st = layout_init(desc, 0, fn, &l, error, error_size);
  if (st != DUA_SUCCESS)
    return st;
  int32_t nb = l->num_blocks;
  size_t rows = (size_t)l->batch * l->heads * nb;
  if ((int64_t)rows * nb > INT32_MAX) {
    layout_free(l);
    return FAIL("%s: batch * heads * blocks^2 = %lld overflows int32 (list form too large)", fn,
                (long long)rows * nb);
  }
  l->kind = DUA_LAYOUT_LIST;
  l->user_counts = malloc(rows * sizeof(int32_t));
  l->user_indices = malloc(rows * nb * sizeof(int32_t));
  uint8_t *seen = calloc((size_t)nb, 1);
  if (!l->user_counts || !l->user_indices || !seen) {
    free(seen);
    layout_free(l);
    return dua_layout_fail(error, error_size, DUA_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
  }
  for (size_t row = 0; row < rows; row++) {
    int32_t c = counts[row];
    int b = (int)(row / ((size_t)l->heads * nb)), h = (int)(row / nb % l->heads), m = (int)(row % nb);
    if (c < 0 || c > nb) {
      free(seen);
      layout_free(l);
      return FAIL("%s: counts[b=%d][h=%d][m=%d] = %d must be in [0, %d]", fn, b, h, m, (int)c, (int)nb);
    }
    const int32_t *src = indices + row * nb;
    for (int32_t k = 0; k < c; k++) {
      int32_t n = src[k];
      if (n < 0 || n >= nb || seen[n]) {
        int bad = n >= 0 && n < nb;
        for (int32_t q = 0; q < k; q++)
          if (src[q] >= 0 && src[q] < nb)
            seen[src[q]] = 0;
        free(seen);
        layout_free(l);
        return FAIL("%s: indices[b=%d][h=%d][m=%d][%d] = %d %s", fn, b, h, m, (int)k, (int)n,
                    bad ? "is listed twice" : "is not a block index");
      }
      seen[n] = 1;
    }
    /* sorted copy: scan the marks (O(nb) per row, the size of the input row) */
    int32_t *dst = l->user_indices + row * nb, w = 0;
    for (int32_t n = 0; n < nb && w < c; n++)
      if (seen[n]) {
        dst[w++] = n;
        seen[n] = 0;
      }
    l->user_counts[row] = c;
  }
  free(seen);
#undef FAIL
  *out = l;
  return DUA_SUCCESS;
}

int32_t dua_layout_num_blocks(const dua_layout *layout) {
  return layout ? layout->num_blocks : 0;
}

int32_t dua_layout_tree_depth(const dua_layout *layout, int32_t head) {
  if (layout == NULL || head < 0 || head >= layout->heads)
    return -1;
  return layout->tree_depth[head];
}

int dua_layout_block_shared(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, int32_t n) {
  switch (l->kind) {
  case DUA_LAYOUT_POSITIONAL: {
    dua_rule r = dua_layout_rule(l, h);
    return dua_tree_shared(&r, m, n);
  }
  case DUA_LAYOUT_CONTENT: {
    size_t base = ((size_t)b * l->heads + h) * l->num_blocks;
    return l->rank_lo[base + m] == l->rank_lo[base + n];
  }
  case DUA_LAYOUT_LIST: {
    size_t row = ((size_t)b * l->heads + h) * l->num_blocks + m;
    const int32_t *v = l->user_indices + row * l->num_blocks;
    int32_t lo = 0, hi = l->user_counts[row];
    while (lo < hi) {
      int32_t mid = lo + (hi - lo) / 2;
      if (v[mid] < n)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo < l->user_counts[row] && v[lo] == n;
  }
  }
  return 0;
}

int32_t dua_layout_lca(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, int32_t n) {
  switch (l->kind) {
  case DUA_LAYOUT_POSITIONAL:
    return dua_tree_lca(l->arity[h], l->tree_depth[h], l->shift, m, n);
  case DUA_LAYOUT_CONTENT:
    return dua_content_lca(l, b, h, m, n);
  case DUA_LAYOUT_LIST:
    break;
  }
  return 0;
}

int dua_layout_visible(const dua_layout *layout, int32_t b, int32_t h, int32_t i, int32_t j) {
  const struct dua_layout *l = layout;
  if (l == NULL || b < 0 || b >= l->batch || h < 0 || h >= l->heads || i < 0 || j < 0 || i >= l->seq_len ||
      j >= l->seq_len)
    return 0;
  if (l->causal && j > i)
    return 0;
  if (l->kind != DUA_LAYOUT_LIST) {
    dua_rule r = dua_layout_rule(l, h);
    if (dua_token_extra(&r, i, j))
      return 1;
  }
  return dua_layout_block_shared(l, b, h, i / l->block, j / l->block);
}
