/* layout_lists.c: the host list form (BSR) of a layout, built on demand from the rule in time proportional
 * to the visited blocks (ranges for the positional tree, buckets for the content tree), its transpose for
 * dK/dV, per-tile pair counts and the layout density. DESIGN.md section 2.
 *
 * A key block is "visited" by query block m iff the tile holds at least one visible pair; it is "full" iff
 * every pair of the tile (existing rows of m, all BLK columns of n) is visible and n is not the tail block
 * (dua_tile_full). For list layouts, listed blocks that hold no visible pair (n > m when causal) are
 * dropped. The lists are cached in the layout: dua_layout_lists is not thread-safe on one layout. */
#include "attention/layout_internal.h"

#include <stdlib.h>
#include <string.h>

/* Appends the ascending sorted union of intervals iv[0..niv) and the sorted block list extra[0..nextra)
 * (content bucket), skipping duplicates. Returns the new count. */
static int32_t merge_blocks(const dua_block_interval *iv, int niv, const int32_t *extra, int32_t nextra,
                            int32_t *blocks) {
  int32_t c = 0, e = 0;
  for (int k = 0; k < niv; k++) {
    for (; e < nextra && extra[e] < iv[k].lo; e++)
      blocks[c++] = extra[e];
    for (int32_t n = iv[k].lo; n < iv[k].hi; n++)
      blocks[c++] = n;
    while (e < nextra && extra[e] < iv[k].hi)
      e++;
  }
  for (; e < nextra; e++)
    blocks[c++] = extra[e];
  return c;
}

int32_t dua_layout_row_blocks(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, int32_t *blocks,
                              uint8_t *full) {
  dua_rule r = dua_layout_rule(l, h);
  size_t row = ((size_t)b * l->heads + h) * l->num_blocks + m;
  dua_block_interval iv[3];
  int32_t count = 0;
  switch (l->kind) {
  case DUA_LAYOUT_POSITIONAL: {
    int32_t lo, hi;
    dua_tree_range(&r, m, &lo, &hi);
    int niv = dua_visit_intervals(&r, m, lo, hi, iv);
    count = merge_blocks(iv, niv, NULL, 0, blocks);
    break;
  }
  case DUA_LAYOUT_CONTENT: {
    int niv = dua_visit_intervals(&r, m, 0, 0, iv);
    const int32_t *bucket = l->order + (row - m) + l->rank_lo[row];
    int32_t nbucket = l->rank_hi[row] - l->rank_lo[row];
    if (r.causal) /* buckets are ascending: keep n <= m */
      while (nbucket > 0 && bucket[nbucket - 1] > m)
        nbucket--;
    count = merge_blocks(iv, niv, bucket, nbucket, blocks);
    break;
  }
  case DUA_LAYOUT_LIST: {
    const int32_t *v = l->user_indices + row * l->num_blocks;
    for (int32_t k = 0; k < l->user_counts[row]; k++)
      if (!r.causal || v[k] <= m)
        blocks[count++] = v[k];
    break;
  }
  }
  if (full != NULL)
    for (int32_t k = 0; k < count; k++)
      full[k] = (uint8_t)dua_tile_full(
          &r, m, blocks[k], l->kind == DUA_LAYOUT_LIST || dua_layout_block_shared(l, b, h, m, blocks[k]));
  return count;
}

/* Size of [lo, hi] (inclusive), 0 if empty. */
static int64_t span_len(int64_t lo, int64_t hi) {
  return hi >= lo ? hi - lo + 1 : 0;
}

int64_t dua_layout_tile_pairs(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, int32_t n,
                              int full) {
  dua_rule r = dua_layout_rule(l, h);
  int64_t first = (int64_t)m * r.block, last = dua_block_last_row(&r, m);
  int64_t clo = (int64_t)n * r.block, chi = dua_block_last_row(&r, n);
  if (full)
    return (last - first + 1) * (chi - clo + 1);
  int shared = dua_layout_block_shared(l, b, h, m, n);
  int64_t total = 0;
  for (int64_t i = first; i <= last; i++) {
    int64_t hi = r.causal && i < chi ? i : chi;
    if (shared) {
      total += span_len(clo, hi);
      continue;
    }
    int64_t alo = clo, ahi = hi < r.sink - 1 ? hi : r.sink - 1; /* sink part */
    int64_t a = span_len(alo, ahi);
    if (r.window <= 0) {
      total += a;
      continue;
    }
    int64_t wlo = i - r.window > clo ? i - r.window : clo, whi = i + r.window < hi ? i + r.window : hi;
    int64_t w = span_len(wlo, whi);
    int64_t olo = wlo > alo ? wlo : alo, ohi = whi < ahi ? whi : ahi;
    total += a + w - span_len(olo, ohi);
  }
  return total;
}

static int lists_too_large(struct dua_layout *l) {
  int64_t total = (int64_t)l->batch * l->heads * l->num_blocks * l->num_blocks;
  return total > INT32_MAX;
}

static dua_status build_forward(struct dua_layout *l) {
  int32_t nb = l->num_blocks;
  size_t rows = (size_t)l->batch * l->heads * nb;
  int32_t *counts = malloc(rows * sizeof(int32_t));
  int32_t *fulls = malloc(rows * sizeof(int32_t));
  int32_t *indices = malloc(rows * nb * sizeof(int32_t));
  int32_t *blocks = malloc((size_t)nb * sizeof(int32_t));
  uint8_t *full = malloc((size_t)nb);
  if (!counts || !fulls || !indices || !blocks || !full) {
    free(counts);
    free(fulls);
    free(indices);
    free(blocks);
    free(full);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  for (int32_t b = 0; b < l->batch; b++)
    for (int32_t h = 0; h < l->heads; h++)
      for (int32_t m = 0; m < nb; m++) {
        size_t row = ((size_t)b * l->heads + h) * nb + m;
        int32_t c = dua_layout_row_blocks(l, b, h, m, blocks, full), w = 0;
        int32_t *dst = indices + row * nb;
        for (int32_t k = 0; k < c; k++)
          if (full[k])
            dst[w++] = blocks[k];
        fulls[row] = w;
        for (int32_t k = 0; k < c; k++)
          if (!full[k])
            dst[w++] = blocks[k];
        counts[row] = c;
      }
  free(blocks);
  free(full);
  l->list_counts[0] = counts;
  l->list_full[0] = fulls;
  l->list_indices[0] = indices;
  return DUA_SUCCESS;
}

/* Transpose of the forward lists: key block n -> query blocks m visiting it, full first, each ascending. */
static dua_status build_transposed(struct dua_layout *l) {
  int32_t nb = l->num_blocks;
  size_t rows = (size_t)l->batch * l->heads * nb;
  int32_t *counts = calloc(rows, sizeof(int32_t));
  int32_t *fulls = calloc(rows, sizeof(int32_t));
  int32_t *indices = malloc(rows * nb * sizeof(int32_t));
  int32_t *wfull = malloc((size_t)nb * sizeof(int32_t)), *wpart = malloc((size_t)nb * sizeof(int32_t));
  if (!counts || !fulls || !indices || !wfull || !wpart) {
    free(counts);
    free(fulls);
    free(indices);
    free(wfull);
    free(wpart);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  const int32_t *fc = l->list_counts[0], *ff = l->list_full[0], *fi = l->list_indices[0];
  for (size_t base = 0; base < rows; base += (size_t)nb) {
    for (int32_t m = 0; m < nb; m++)
      for (int32_t k = 0; k < fc[base + m]; k++) {
        int32_t n = fi[(base + m) * nb + k];
        counts[base + n]++;
        fulls[base + n] += k < ff[base + m];
      }
    for (int32_t n = 0; n < nb; n++) {
      wfull[n] = 0;
      wpart[n] = fulls[base + n];
    }
    for (int32_t m = 0; m < nb; m++)
      for (int32_t k = 0; k < fc[base + m]; k++) {
        int32_t n = fi[(base + m) * nb + k];
        int32_t *dst = indices + (base + n) * nb;
        if (k < ff[base + m])
          dst[wfull[n]++] = m;
        else
          dst[wpart[n]++] = m;
      }
  }
  free(wfull);
  free(wpart);
  l->list_counts[1] = counts;
  l->list_full[1] = fulls;
  l->list_indices[1] = indices;
  return DUA_SUCCESS;
}

dua_status dua_layout_lists(dua_layout *layout, int transposed, dua_block_lists *lists) {
  if (layout == NULL || lists == NULL) {
    if (layout != NULL)
      dua_layout_fail(layout->error, sizeof layout->error, DUA_ERROR_INVALID_ARGUMENT,
                      "dua_layout_lists: lists is NULL");
    return DUA_ERROR_INVALID_ARGUMENT;
  }
  struct dua_layout *l = layout;
  if (lists_too_large(l))
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_UNSUPPORTED,
                           "dua_layout_lists: batch * heads * blocks^2 = %d * %d * %d^2 overflows int32; use "
                           "the rule form",
                           (int)l->batch, (int)l->heads, (int)l->num_blocks);
  int t = transposed ? 1 : 0;
  if (l->list_counts[0] == NULL && build_forward(l) != DUA_SUCCESS)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_OUT_OF_MEMORY,
                           "dua_layout_lists: out of memory");
  if (t == 1 && l->list_counts[1] == NULL && build_transposed(l) != DUA_SUCCESS)
    return dua_layout_fail(l->error, sizeof l->error, DUA_ERROR_OUT_OF_MEMORY,
                           "dua_layout_lists: out of memory");
  lists->num_blocks = l->num_blocks;
  lists->counts = l->list_counts[t];
  lists->full_counts = l->list_full[t];
  lists->indices = l->list_indices[t];
  return DUA_SUCCESS;
}

dua_status dua_layout_density_get(const dua_layout *layout, dua_layout_density *density) {
  if (layout == NULL || density == NULL)
    return DUA_ERROR_INVALID_ARGUMENT;
  const struct dua_layout *l = layout;
  int32_t nb = l->num_blocks;
  int32_t *blocks = malloc((size_t)nb * sizeof(int32_t));
  uint8_t *full = malloc((size_t)nb);
  if (!blocks || !full) {
    free(blocks);
    free(full);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  double pairs = 0, visited = 0, nfull = 0;
  for (int32_t b = 0; b < l->batch; b++)
    for (int32_t h = 0; h < l->heads; h++)
      for (int32_t m = 0; m < nb; m++) {
        int32_t c = dua_layout_row_blocks(l, b, h, m, blocks, full);
        visited += c;
        for (int32_t k = 0; k < c; k++) {
          nfull += full[k];
          pairs += (double)dua_layout_tile_pairs(l, b, h, m, blocks[k], full[k]);
        }
      }
  free(blocks);
  free(full);
  double bh = (double)l->batch * l->heads, n = l->seq_len;
  density->pairs = pairs / (bh * n * n);
  density->blocks = visited / (bh * nb * nb);
  density->full_blocks = nfull / (bh * nb * nb);
  density->partial_blocks = (visited - nfull) / (bh * nb * nb);
  return DUA_SUCCESS;
}
