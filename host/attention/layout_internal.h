/* layout_internal.h: the dua_layout struct and the helpers that define, block by block, which key blocks a
 * query block visits (DESIGN.md section 2). The inline helpers mirror exactly what the OpenCL kernels
 * compute, so host dispatch, the list builder, the reference and the kernels share one definition.
 *
 * Conventions: blocks are numbered 0..nb-1, a block interval is half-open [lo, hi). Token arithmetic is
 * done in int64 on the host (the kernels can use int: creation guarantees N <= INT32_MAX, W and S are
 * clamped to N, shift <= p^D <= 2^30 and nb <= 2^27, so m + s never overflows int32). */
#ifndef DUA_LAYOUT_INTERNAL_H
#define DUA_LAYOUT_INTERNAL_H

#include "dua.h"

#include <stdint.h>

/* Largest allowed subtree span p_h^D_h (keeps m + shift and g in int32 inside kernels). */
#define DUA_LAYOUT_MAX_SPAN (INT32_C(1) << 30)
/* Size of dua_layout.error. */
#define DUA_LAYOUT_ERROR_MAX 256

typedef enum dua_layout_kind {
  DUA_LAYOUT_POSITIONAL = 0, /* rule form, positional tree */
  DUA_LAYOUT_CONTENT = 1,    /* rule form, content tree (paths) */
  DUA_LAYOUT_LIST = 2        /* caller's lists (dua_layout_create_from_lists) */
} dua_layout_kind;

struct dua_layout {
  dua_layout_kind kind;
  int32_t seq_len, block, batch, heads, kv_heads;
  int32_t num_blocks;  /* nb = ceil(N / BLK) */
  int32_t max_depth;   /* Dmax = max_h D_h: path length and level-bias row length - 1 */
  int32_t shift;       /* blocks; positional only (kept as given, 0 <= shift <= max_h p_h^D_h) */
  int32_t window;      /* tokens, clamped to N (|i - j| <= N - 1 always), 0 = none */
  int32_t sink;        /* tokens, clamped to N, 0 = none */
  int32_t causal;      /* 0 or 1 */
  int32_t *arity;      /* [heads] p_h >= 2 */
  int32_t *tree_depth; /* [heads] D_h = smallest d with p_h^d >= nb */
  int32_t *depth;      /* [heads] routing depth d_h in [0, D_h] (-1 resolved) */
  int32_t *group;      /* [heads] g_h = p_h^(D_h - d_h): blocks per depth-d_h subtree */
  int32_t *span;       /* [heads] p_h^D_h */
  /* content tree only (NULL otherwise) */
  uint8_t *paths;   /* [batch][heads][nb][max_depth] digits, root first; levels >= D_h are unused */
  int32_t *order;   /* [batch*heads][nb]: blocks of (b,h) sorted by (first d_h digits, block index) */
  int32_t *rank_lo; /* [batch*heads][nb]: bucket of block m = order[rank_lo .. rank_hi) (same key prefix) */
  int32_t *rank_hi; /* [batch*heads][nb] */
  /* list form only (NULL otherwise): caller's lists, each row sorted ascending, duplicates refused */
  int32_t *user_counts;  /* [batch*heads][nb] */
  int32_t *user_indices; /* [batch*heads][nb][nb] */
  /* host list form, built on demand by dua_layout_lists ([0] forward, [1] transposed) */
  int32_t *list_counts[2];          /* [batch*heads][nb] */
  int32_t *list_full[2];            /* [batch*heads][nb] */
  int32_t *list_indices[2];         /* [batch*heads][nb][nb] */
  char error[DUA_LAYOUT_ERROR_MAX]; /* why the last dua_layout_lists / density call failed */
  /* device copies for one context (layout_device.c), made on first use and released with the layout */
  void *device;
  void (*device_release)(void *device);
};

/* Per-head rule parameters: everything a kernel needs for one (batch, head). */
typedef struct dua_rule {
  int32_t seq_len, block, num_blocks;
  int32_t shift, window, sink, causal;
  int32_t depth, tree_depth, group; /* d_h, D_h, g_h = p_h^(D_h - d_h) */
} dua_rule;

typedef struct dua_block_interval {
  int32_t lo, hi; /* half-open */
} dua_block_interval;

static inline dua_rule dua_layout_rule(const struct dua_layout *l, int32_t h) {
  dua_rule r;
  r.seq_len = l->seq_len;
  r.block = l->block;
  r.num_blocks = l->num_blocks;
  r.shift = l->shift;
  r.window = l->window;
  r.sink = l->sink;
  r.causal = l->causal;
  r.depth = l->depth[h];
  r.tree_depth = l->tree_depth[h];
  r.group = l->group[h];
  return r;
}

static inline int32_t dua_min_i32(int32_t a, int32_t b) {
  return a < b ? a : b;
}
static inline int32_t dua_max_i32(int32_t a, int32_t b) {
  return a > b ? a : b;
}

/* Last existing query row of block m: min(N, (m+1)*BLK) - 1. */
static inline int64_t dua_block_last_row(const dua_rule *r, int32_t m) {
  int64_t end = (int64_t)(m + 1) * r->block;
  return (end < r->seq_len ? end : r->seq_len) - 1;
}

/* Is key block n the tail block (shorter than BLK)? */
static inline int dua_block_is_tail(const dua_rule *r, int32_t n) {
  return (int64_t)(n + 1) * r->block > r->seq_len;
}

/* Positional tree: blocks sharing m's depth-d subtree, [lo, hi), not clipped by causality.
 *   d == 0: [0, nb). Otherwise lo0 = ((m + s) / g) * g - s, lo = max(0, lo0), hi = min(nb, lo0 + g). */
static inline void dua_tree_range(const dua_rule *r, int32_t m, int32_t *lo, int32_t *hi) {
  if (r->depth == 0) {
    *lo = 0;
    *hi = r->num_blocks;
    return;
  }
  int32_t g = r->group;
  int32_t lo0 = ((m + r->shift) / g) * g - r->shift;
  *lo = dua_max_i32(0, lo0);
  *hi = dua_min_i32(r->num_blocks, lo0 + g);
}

/* Positional tree: do blocks m and n share the depth-d subtree? */
static inline int dua_tree_shared(const dua_rule *r, int32_t m, int32_t n) {
  return r->depth == 0 || (m + r->shift) / r->group == (n + r->shift) / r->group;
}

/* Positional lca in [0, D]: the largest d such that m and n share the depth-d subtree (d = 0 always). */
static inline int32_t dua_tree_lca(int32_t arity, int32_t tree_depth, int32_t shift, int32_t m, int32_t n) {
  int64_t g = 1;
  for (int32_t d = tree_depth; d > 0; d--, g *= arity)
    if ((m + shift) / g == (n + shift) / g)
      return d;
  return 0;
}

/* Key blocks holding a window key of some row of block m, [lo, hi); empty (0, 0) without a window.
 * Keys j in [first_row - W, last_row + W] (last_row when causal), clipped to [0, N). */
static inline void dua_window_range(const dua_rule *r, int32_t m, int32_t *lo, int32_t *hi) {
  if (r->window <= 0) {
    *lo = *hi = 0;
    return;
  }
  int64_t first = (int64_t)m * r->block, last = dua_block_last_row(r, m);
  int64_t jlo = first - r->window, jhi = r->causal ? last : last + r->window;
  if (jlo < 0)
    jlo = 0;
  if (jhi > r->seq_len - 1)
    jhi = r->seq_len - 1;
  *lo = (int32_t)(jlo / r->block);
  *hi = (int32_t)(jhi / r->block) + 1;
}

/* Number of leading key blocks holding a sink key visible from some row of block m (sink keys j < S,
 * and j <= last_row when causal): blocks [0, count). */
static inline int32_t dua_sink_blocks(const dua_rule *r, int32_t m) {
  int64_t keys = r->sink;
  if (r->causal && keys > dua_block_last_row(r, m) + 1)
    keys = dua_block_last_row(r, m) + 1;
  return (int32_t)((keys + r->block - 1) / r->block);
}

/* Is the token pair (i, j) in the window or sink set (these get level bias 0)? Ignores causality. */
static inline int dua_token_extra(const dua_rule *r, int64_t i, int64_t j) {
  int64_t d = i - j;
  return j < r->sink || (r->window > 0 && d <= r->window && -d <= r->window);
}

/* Visited key-block intervals of query block m: the tree interval [tree_lo, tree_hi) (pass the positional
 * tree range, or an empty one for content layouts whose tree blocks come from the bucket), the window range
 * and the sink blocks, clipped by causality (n <= m), merged into at most 3 sorted disjoint intervals
 * written to out[]. Returns how many. Every block in them holds at least one visible pair. */
static inline int dua_visit_intervals(const dua_rule *r, int32_t m, int32_t tree_lo, int32_t tree_hi,
                                      dua_block_interval out[3]) {
  dua_block_interval iv[3];
  int32_t cap = r->causal ? m + 1 : r->num_blocks;
  iv[0].lo = 0;
  iv[0].hi = dua_sink_blocks(r, m);
  dua_window_range(r, m, &iv[1].lo, &iv[1].hi);
  iv[2].lo = tree_lo;
  iv[2].hi = dua_min_i32(tree_hi, cap);
  /* sort 3 intervals by lo (sink starts at 0 already) */
  if (iv[2].lo < iv[1].lo) {
    dua_block_interval t = iv[1];
    iv[1] = iv[2];
    iv[2] = t;
  }
  int count = 0;
  for (int k = 0; k < 3; k++) {
    if (iv[k].hi > cap)
      iv[k].hi = cap;
    if (iv[k].lo >= iv[k].hi)
      continue;
    if (count > 0 && iv[k].lo <= out[count - 1].hi) {
      if (iv[k].hi > out[count - 1].hi)
        out[count - 1].hi = iv[k].hi;
    } else {
      out[count++] = iv[k];
    }
  }
  return count;
}

/* Does tile (m, n) need no element mask, i.e. is every pair (i, j), i an existing row of block m and j any
 * column of block n, visible? Requires: n not the tail key block; n < m when causal; and either the blocks
 * share the tree (tree_shared) or every column j >= S of the tile is within the window of every row. */
static inline int dua_tile_full(const dua_rule *r, int32_t m, int32_t n, int tree_shared) {
  if (dua_block_is_tail(r, n) || (r->causal && n >= m))
    return 0;
  if (tree_shared)
    return 1;
  int64_t jlo = (int64_t)n * r->block, jhi = jlo + r->block - 1; /* columns needing the window */
  if (jlo < r->sink)
    jlo = r->sink;
  if (jlo > jhi)
    return 1; /* all sink */
  if (r->window <= 0)
    return 0;
  int64_t first = (int64_t)m * r->block, last = dua_block_last_row(r, m);
  return jlo >= last - r->window && jhi <= first + r->window;
}

/* ---------------------------------------------------------------- content tree */

/* Path of block n for (b, h): max_depth digits, root first. */
static inline const uint8_t *dua_layout_path(const struct dua_layout *l, int32_t b, int32_t h, int32_t n) {
  return l->paths + (((size_t)b * l->heads + h) * l->num_blocks + n) * l->max_depth;
}

/* Content lca: common prefix length of the two paths, capped at D_h. */
static inline int32_t dua_content_lca(const struct dua_layout *l, int32_t b, int32_t h, int32_t m,
                                      int32_t n) {
  const uint8_t *pm = dua_layout_path(l, b, h, m), *pn = dua_layout_path(l, b, h, n);
  int32_t d = 0;
  while (d < l->tree_depth[h] && pm[d] == pn[d])
    d++;
  return d;
}

/* ---------------------------------------------------------------- layout-wide queries (layout*.c) */

/* Do query block m and key block n share the tree at head h's depth (rule layouts; list layouts: is n in
 * the caller's list of row m)? */
int dua_layout_block_shared(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, int32_t n);

/* lca(m, n) in [0, D_h] (rule layouts; 0 for list layouts). */
int32_t dua_layout_lca(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, int32_t n);

/* Visited key blocks of (b, h, m), computed from the rule (or the caller's lists) in time proportional to
 * their number: writes them ascending to blocks[0..count) and, when full != NULL, whether each tile
 * needs no element mask (dua_tile_full). blocks and full hold nb entries. Returns count. */
int32_t dua_layout_row_blocks(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, int32_t *blocks,
                              uint8_t *full);

/* Visible token pairs in tile (m, n) of (b, h), in O(BLK) (O(1) for full tiles). */
int64_t dua_layout_tile_pairs(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, int32_t n,
                              int full);

/* The last `tail` entries of a launch over (batch, head, block) entries, e = (b heads + h) nb + block (heads:
 * query heads, keys = 0; KV heads, keys = 1), reordered longest first (tail_order.c): order[i] is the entry
 * to take in place of entry total - *count + i. *count = 0 (entry order stays) where the tail's lengths are
 * all equal, tail < 2 or the entries overflow int32; order has room for min(tail, total) entries.
 * lengths->uniform: the length every one of the last `window` entries has, where they are equal (and window
 * >= 2), else -1; lengths->longest: the longest of them (-1 where window < 2). The lengths are counted once,
 * over the longer of the two. Errors are written to l->error. */
typedef struct {
  int64_t uniform, longest;
} dua_tail_lengths;
dua_status dua_layout_tail_entries(struct dua_layout *l, int keys, int64_t window, int64_t tail,
                                   int32_t *order, int64_t *count, dua_tail_lengths *lengths);

/* Formats a message into error (may be NULL / size 0) and returns status. */
dua_status dua_layout_fail(char *error, size_t error_size, dua_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif /* DUA_LAYOUT_INTERNAL_H */
