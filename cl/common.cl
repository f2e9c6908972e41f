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
inline int dua_block_last_row(int m, int blk, int n_tokens) { return min(n_tokens, (m + 1) * blk) - 1; }

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

/* Window or sink pair (bias 0), ignoring causality. */
inline int dua_token_extra(int i, int j, int window, int sink) {
  int d = i - j;
  return j < sink || (window > 0 && d <= window && -d <= window);
}

/* Tile (m, n) needs no element mask (see layout_internal.h dua_tile_full). */
inline int dua_tile_full(int m, int n, int tree_shared, int blk, int n_tokens, int window, int sink, int causal) {
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
inline int dua_visit_intervals(int m, int2 tree, int blk, int n_tokens, int nb, int window, int sink, int causal,
                               int2 *out) {
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

