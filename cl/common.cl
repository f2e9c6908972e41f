/* common.cl: helpers shared by dua's kernels: storage loads/stores for fp32 and fp16 (vload_half, so no
 * cl_khr_fp16 is needed) and the layout rule of DESIGN.md section 2, mirroring host/attention/
 * layout_internal.h line for line so host and device agree on every visible pair. */

#ifndef DUA_FP16
#define DUA_FP16 0 /* 1: tensors are stored as IEEE half */
#endif

#if DUA_FP16
typedef half dua_store_t;
#define DUA_LOAD(p, i) vload_half((i), (p))
#define DUA_STORE(v, p, i) vstore_half((v), (i), (p))
#else
typedef float dua_store_t;
#define DUA_LOAD(p, i) ((p)[(i)])
#define DUA_STORE(v, p, i) ((p)[(i)] = (v))
#endif

#define DUA_LOG2E 1.4426950408889634f
#define DUA_LN2 0.6931471805599453f

/* Per-head routing: x = depth d_h, y = group g_h = p^(D-d), z = tree depth D_h, w = arity p_h. */
typedef int4 dua_head_rule;

/* Last existing row of query block m. */
inline int dua_block_last_row(int m, int blk, int n_tokens) {
  return min(n_tokens, (m + 1) * blk) - 1;
}

/* Positional tree range [lo, hi) of blocks sharing m's depth-d subtree (d == 0: all). */
inline int2 dua_tree_range(dua_head_rule hr, int m, int shift, int nb) {
  if (hr.x == 0)
    return (int2)(0, nb);
  int lo0 = ((m + shift) / hr.y) * hr.y - shift;
  return (int2)(max(0, lo0), min(nb, lo0 + hr.y));
}

inline int dua_tree_shared(dua_head_rule hr, int m, int n, int shift) {
  return hr.x == 0 || (m + shift) / hr.y == (n + shift) / hr.y;
}

/* Positional lca in [0, D]. */
inline int dua_tree_lca(dua_head_rule hr, int m, int n, int shift) {
  long g = 1;
  for (int d = hr.z; d > 0; d--, g *= hr.w)
    if ((m + shift) / g == (n + shift) / g)
      return d;
  return 0;
}

/* Window key-block range of query block m ([0,0) without a window). */
inline int2 dua_window_range(int m, int blk, int n_tokens, int window, int causal) {
  if (window <= 0)
    return (int2)(0, 0);
  int first = m * blk, last = dua_block_last_row(m, blk, n_tokens);
  int jlo = max(0, first - window), jhi = min(n_tokens - 1, causal ? last : last + window);
  return (int2)(jlo / blk, jhi / blk + 1);
}

/* Sink key blocks [0, count) visible from some row of block m. */
inline int dua_sink_blocks(int m, int blk, int n_tokens, int sink, int causal) {
  int keys = sink;
  if (causal)
    keys = min(keys, dua_block_last_row(m, blk, n_tokens) + 1);
  return (keys + blk - 1) / blk;
}

/* Token-tree level of positions (i, j) in a tree of depth `depth` (host: token_bias.h dua_tok_level):
 * depth - bit_length(i ^ j), clamped at 0 for the rows/columns past the sequence that full tiles compute. */
inline int dua_tok_level(int i, int j, int depth) {
  return max(0, depth - (32 - (int)clz(i ^ j)));
}
#define DUA_MAX_TOKEN_LEVELS 33

/* Window or sink pair (bias 0), ignoring causality. */
inline int dua_token_extra(int i, int j, int window, int sink) {
  int d = i - j;
  return j < sink || (window > 0 && d <= window && -d <= window);
}

/* Tile (m, n) needs no element mask (see layout_internal.h dua_tile_full). */
inline int dua_tile_full(int m, int n, int tree_shared, int blk, int n_tokens, int window, int sink,
                         int causal) {
  if ((n + 1) * blk > n_tokens || (causal && n >= m))
    return 0;
  if (tree_shared)
    return 1;
  int jlo = max(n * blk, sink), jhi = n * blk + blk - 1;
  if (jlo > jhi)
    return 1;
  if (window <= 0)
    return 0;
  int first = m * blk, last = dua_block_last_row(m, blk, n_tokens);
  return jlo >= last - window && jhi <= first + window;
}

/* Up to 3 sorted disjoint visited-block intervals: sink, window and tree range, clipped by causality. */
inline int dua_visit_intervals(int m, int2 tree, int blk, int n_tokens, int nb, int window, int sink,
                               int causal, int2 *out) {
  int cap = causal ? m + 1 : nb;
  int2 iv0 = (int2)(0, dua_sink_blocks(m, blk, n_tokens, sink, causal));
  int2 iv1 = dua_window_range(m, blk, n_tokens, window, causal);
  int2 iv2 = (int2)(tree.x, min(tree.y, cap));
  if (iv2.x < iv1.x) {
    int2 t = iv1;
    iv1 = iv2;
    iv2 = t;
  }
  int2 iv[3] = {iv0, iv1, iv2};
  int count = 0;
  for (int k = 0; k < 3; k++) {
    int2 v = (int2)(iv[k].x, min(iv[k].y, cap));
    if (v.x >= v.y)
      continue;
    if (count > 0 && v.x <= out[count - 1].y)
      out[count - 1].y = max(out[count - 1].y, v.y);
    else
      out[count++] = v;
  }
  return count;
}

#ifndef DUA_TREE
#define DUA_TREE 0 /* 0 positional tree, 1 content paths, 2 none (caller's block lists) */
#endif

/* Do query block m and key block n share the tree at this head's depth? */
inline int block_shared(dua_head_rule hr, int m, int n, int shift, __global const uchar *path_m,
                        __global const uchar *paths_bh, int max_depth) {
#if DUA_TREE == 0
  return dua_tree_shared(hr, m, n, shift);
#elif DUA_TREE == 1
  __global const uchar *pn = paths_bh + (long)n * max_depth;
  for (int d = 0; d < hr.x; d++)
    if (path_m[d] != pn[d])
      return 0;
  return 1;
#else
  return 1;
#endif
}

/* block_shared for block n of one of query block m's visit intervals, tree = m's tree range (dua_tree_range,
 * computed once per row): with the positional tree an interval block shares m's subtree iff it lies in that
 * range, two compares where block_shared divides twice by the group size at every block change (on the wgmma
 * forward's walk at depth 3: bench/NOTES-mma.md, twenty-eighth session); other trees as block_shared. */
inline int dua_interval_block_shared(int2 tree, dua_head_rule hr, int m, int n, int shift,
                                     __global const uchar *path_m, __global const uchar *paths_bh,
                                     int max_depth) {
#if DUA_TREE == 0
  (void)hr, (void)m, (void)shift, (void)path_m, (void)paths_bh, (void)max_depth;
  return n >= tree.x && n < tree.y;
#else
  (void)tree;
  return block_shared(hr, m, n, shift, path_m, paths_bh, max_depth);
#endif
}

/* lca(m, n) for the level bias. */
inline int block_lca(dua_head_rule hr, int m, int n, int shift, __global const uchar *path_m,
                     __global const uchar *paths_bh, int max_depth) {
#if DUA_TREE == 0
  return dua_tree_lca(hr, m, n, shift);
#elif DUA_TREE == 1
  __global const uchar *pn = paths_bh + (long)n * max_depth;
  int d = 0;
  while (d < hr.z && path_m[d] == pn[d])
    d++;
  return d;
#else
  return 0;
#endif
}

/* Problem scalars passed by value to the attention kernels (host: shape_arg in forward_internal.h). */
typedef struct {
  int n_tokens, blk, nb, shift, window, sink, causal, hq, hkv, max_depth;
} dua_shape;

#ifndef DUA_ENUM
#define DUA_ENUM 0 /* 0 rule intervals, 1 intervals + content bucket, 2 device block lists */
#endif

/* The visited key blocks of query block m of (b, h), enumerated as items 0 .. n_items-1 in time
 * proportional to their number: rule intervals (sink, window, positional tree range), then the content
 * bucket (DUA_ENUM 1), or the device list row, full blocks first (DUA_ENUM 2). */
typedef struct {
  int2 iv[3];
  int2 tree; /* m's tree range (positional tree) */
  int n_iv, n_interval_items, n_items, bucket_lo, n_full;
} dua_row_visits;

inline dua_row_visits dua_row_visits_begin(int m, long bh, dua_head_rule hr, dua_shape shape,
                                           __global const int *rank_range, __global const int *list_counts,
                                           __global const int *list_full) {
  dua_row_visits rv;
  rv.n_iv = rv.n_interval_items = rv.bucket_lo = rv.n_full = 0;
  rv.tree = (int2)(0, 0);
#if DUA_ENUM == 2
  rv.n_items = list_counts[bh * shape.nb + m];
  rv.n_full = list_full[bh * shape.nb + m];
#else
#if DUA_TREE == 0
  rv.tree = dua_tree_range(hr, m, shape.shift, shape.nb);
#endif
  rv.n_iv = dua_visit_intervals(m, rv.tree, shape.blk, shape.n_tokens, shape.nb, shape.window, shape.sink,
                                shape.causal, rv.iv);
  int items = 0;
  for (int t = 0; t < rv.n_iv; t++)
    items += rv.iv[t].y - rv.iv[t].x;
  rv.n_interval_items = items;
#if DUA_ENUM == 1
  rv.bucket_lo = rank_range[2 * (bh * shape.nb + m)];
  items += rank_range[2 * (bh * shape.nb + m) + 1] - rv.bucket_lo;
#endif
  rv.n_items = items;
#endif
  return rv;
}

/* Item `item` of the row: sets *n, *shared (tree-visible) and *full (no element mask needed). Returns 0
 * when the item is to be skipped (a bucket block already visited through an interval, or in the future). */
inline int dua_row_visit(const dua_row_visits *rv, int item, int m, long bh, dua_head_rule hr,
                         dua_shape shape, __global const uchar *path_m, __global const uchar *paths_bh,
                         __global const int *order, __global const int *list_indices, int *n, int *shared,
                         int *full) {
#if DUA_ENUM == 2
  *n = list_indices[(bh * shape.nb + m) * shape.nb + item];
#if DUA_TREE == 2
  *shared = 1;
#else
  *shared = block_shared(hr, m, *n, shape.shift, path_m, paths_bh, shape.max_depth);
#endif
  *full = item < rv->n_full;
  return 1;
#else
#if DUA_ENUM == 1
  if (item >= rv->n_interval_items) {
    int nn = order[bh * shape.nb + rv->bucket_lo + (item - rv->n_interval_items)];
    for (int t = 0; t < rv->n_iv; t++)
      if (nn >= rv->iv[t].x && nn < rv->iv[t].y)
        return 0;
    if (shape.causal && nn > m)
      return 0;
    *n = nn;
    *shared = 1;
    *full = dua_tile_full(m, nn, 1, shape.blk, shape.n_tokens, shape.window, shape.sink, shape.causal);
    return 1;
  }
#endif
  int rest = item, t = 0;
  while (rest >= rv->iv[t].y - rv->iv[t].x) {
    rest -= rv->iv[t].y - rv->iv[t].x;
    t++;
  }
  *n = rv->iv[t].x + rest;
  *shared = dua_interval_block_shared(rv->tree, hr, m, *n, shape.shift, path_m, paths_bh, shape.max_depth);
  *full = dua_tile_full(m, *n, *shared, shape.blk, shape.n_tokens, shape.window, shape.sink, shape.causal);
  return 1;
#endif
}

/* Rows [r0, r0 + rows) of a (tokens x head_dim) slice into local memory with row pitch `pitch` floats,
 * converted to fp32; rows past n_tokens are zero. Every work-item of a group of `threads` calls it. */
inline void dua_load_rows(__local float *dst, __global const dua_store_t *src, long row_stride, int r0,
                          int rows, int n_tokens, int tid, int threads, int head_dim, int pitch) {
  const int vecs = head_dim / 4;
  for (int idx = tid; idx < rows * vecs; idx += threads) {
    const int r = idx / vecs, c = (idx % vecs) * 4;
    float4 v = (float4)(0.0f);
    if (r0 + r < n_tokens) {
#if DUA_FP16
      v = vload_half4(0, src + (long)(r0 + r) * row_stride + c);
#else
      v = vload4(0, src + (long)(r0 + r) * row_stride + c);
#endif
    }
    vstore4(v, 0, dst + r * pitch + c);
  }
}

/* acc[c .. c+3] += s * v (v a float4): the rank-1 update every P.V, dS.K, P^T.dO and dS^T.Q product uses. */
#define DUA_FMA4(acc, c, s, v)                                                                               \
  do {                                                                                                       \
    (acc)[(c) + 0] = fma((s), (v).x, (acc)[(c) + 0]);                                                        \
    (acc)[(c) + 1] = fma((s), (v).y, (acc)[(c) + 1]);                                                        \
    (acc)[(c) + 2] = fma((s), (v).z, (acc)[(c) + 2]);                                                        \
    (acc)[(c) + 3] = fma((s), (v).w, (acc)[(c) + 3]);                                                        \
  } while (0)
