/* attn_decode.cl: sparse paged-KV decode (OpenCL 1.2 C; needs common.cl before it).
 *
 * dua_decode: one work-group per (split, KV head x head chunk, sequence). It serves HPW query heads of one
 * GQA group and TOKENS query tokens of one sequence (ROWS = HPW * TOKENS rows), so every K/V element it
 * loads is used by all of them. Steps:
 *   1. Mark, in a local bitmap over key units of UNIT = 2^unit_shift tokens (UNIT = min(page, layout block,
 *      TILE_N): a unit lies inside one page and one layout block), the units that hold a visible key of some
 *      row: per row the sink keys [0, min(S, t+1)), the window keys [t-W, t] and the tree keys (positional:
 *      one contiguous block range; content: the bucket of blocks sharing the query block's path prefix),
 *      all clipped to the causal bound t. Work is proportional to the visible units (plus clearing and
 *      counting nwords = ceil(L / UNIT / 32) bitmap words).
 *   2. The split takes its share [u0, u1) of the visible units, TILE_N / UNIT units per tile, walks them with
 *      a set-bit cursor and reads each unit's page from the block table. Skipped units are never read.
 *   3. Per tile: K and V (prefetched into registers during the previous tile) go to local memory; scores
 *      S = Q K^T with the exact element mask (tree or window or sink, j <= t) and level bias; online softmax
 *      in fp32 with exp2 (log2(e) folded into Q); O = alpha O + P V.
 *   4. One split: O and LSE written directly. Several: normalized partial O and log2-LSE per split go to a
 *      scratch buffer and dua_decode_merge (attn_decode_merge.cl) combines them (rows where nothing is
 *      visible give O = 0 and LSE = -inf, never NaN).
 * Cache layout per layer: [num_pages][Hkv][PAGE][HEAD_DIM] (see kv_cache.cl); q, o: (S, Hq, TOKENS, HEAD_DIM)
 * views, fp32 or fp16 (qo_fp16); cache dtype: DUA_FP16 (common.cl). */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef TOKENS
#define TOKENS 1 /* query tokens per sequence */
#endif
#ifndef HPW
#define HPW 1 /* query heads per work-group (a divisor of the GQA group) */
#endif
#ifndef TILE_N
#define TILE_N 32 /* keys per tile: a multiple of UNIT (>= 16) */
#endif
#ifndef NT
#define NT 128 /* work-items per work-group */
#endif
#ifndef WORDS
#define WORDS 64 /* bitmap words: >= ceil(units of the layout's N / 32) */
#endif
#ifndef DUA_BIAS
#define DUA_BIAS 0
#endif

#define ROWS (HPW * TOKENS)
#define STRIDE (HEAD_DIM + 4) /* local row pitch in floats */
#define VEC (HEAD_DIM / 4)
#define KV_VECS (TILE_N * VEC)
#define KV_PER_THREAD ((KV_VECS + NT - 1) / NT)
#define PV_ITEMS (ROWS * VEC)
#define PV_PER_THREAD ((PV_ITEMS + NT - 1) / NT)
#define MAX_UPT (TILE_N / 16) /* most units per tile */

#if (TILE_N % 16) || (HEAD_DIM % 4)
#error "TILE_N must be a multiple of 16 and HEAD_DIM of 4"
#endif

#ifdef DUA_PRECISE_EXP
#define DUA_EXP2 exp2
#else
#define DUA_EXP2 native_exp2 /* never called with -inf (guarded) */
#endif

#if DUA_FP16
#define KV_LOAD4(p, i) vload_half4(0, (p) + (i))
#else
#define KV_LOAD4(p, i) vload4(0, (p) + (i))
#endif

/* Sets bits [ulo, uhi) of the bitmap; work-item `first` of `stride` takes words first, first+stride... */
inline void mark_units(volatile __local uint *bm, int ulo, int uhi, int first, int stride) {
  if (uhi <= ulo)
    return;
  for (int w = (ulo >> 5) + first; w <= ((uhi - 1) >> 5); w += stride) {
    const int a = max(ulo, w << 5) - (w << 5), b = min(uhi, (w << 5) + 32) - (w << 5);
    const uint mask = b - a == 32 ? 0xffffffffu : ((1u << (b - a)) - 1u) << a;
    atomic_or(&bm[w], mask);
  }
}

/* Units holding key tokens [lo, hi), marked by all work-items together. */
inline void mark_tokens(volatile __local uint *bm, int lo, int hi, int unit_shift, int tid) {
  if (hi > lo)
    mark_units(bm, lo >> unit_shift, ((hi - 1) >> unit_shift) + 1, tid, NT);
}

/* Next set bit at or after the cursor (word *cw, remaining bits *rem); the caller knows one exists. */
inline int next_unit(__local const uint *bm, int *cw, uint *rem) {
  while (*rem == 0u)
    *rem = bm[++*cw];
  const uint low = *rem & (0u - *rem);
  *rem &= *rem - 1u;
  return (*cw << 5) + (31 - (int)clz(low));
}

/* units[x] of a private array by selects over a constant trip count (no dynamic register indexing). */
inline int pick_unit(const int *units, int x) {
  int u = -1;
  for (int y = 0; y < MAX_UPT; y++)
    u = y == x ? units[y] : u;
  return u;
}
inline long pick_base(const long *bases, int x) {
  long b = 0;
  for (int y = 0; y < MAX_UPT; y++)
    b = y == x ? bases[y] : b;
  return b;
}

/* A walk over a split's visible units: bitmap word, its bits not taken yet, units taken, units to take. */
typedef struct {
  int cw, taken, n_units;
  uint rem;
} unit_cursor;

/* The next tile: up to TILE_N / UNIT units from the cursor (units[x], -1 past the split), each unit's page
 * from the sequence's block-table row, and their K and V rows in registers (zeros past the context). */
inline void fetch_tile(__local const uint *bm, unit_cursor *cur, int *units, float4 *kreg, float4 *vreg,
                       __global const dua_store_t *kc, __global const dua_store_t *vc,
                       __global const int *bt_row, int len, int unit_shift, int page_shift,
                       long page_stride /* Hkv * PAGE */, long head_rows /* hk * PAGE */, int tid) {
  long base[MAX_UPT]; /* element offset of each unit's first key */
  const int unit = 1 << unit_shift, upt = TILE_N >> unit_shift;
  for (int x = 0; x < MAX_UPT; x++) {
    units[x] = -1;
    base[x] = 0;
    if (x < upt && cur->taken < cur->n_units) {
      const int u = next_unit(bm, &cur->cw, &cur->rem), j = u << unit_shift;
      units[x] = u;
      base[x] =
          (bt_row[j >> page_shift] * page_stride + head_rows + (j & ((1 << page_shift) - 1))) * HEAD_DIM;
      cur->taken++;
    }
  }
  for (int e = 0; e < KV_PER_THREAD; e++) {
    const int f = tid + e * NT, kr = f / VEC, c = (f % VEC) * 4, x = kr >> unit_shift;
    const int u = f < KV_VECS ? pick_unit(units, x) : -1;
    kreg[e] = vreg[e] = (float4)(0.0f);
    if (u >= 0 && (u << unit_shift) + (kr & (unit - 1)) < len) {
      const long at = pick_base(base, x) + (long)(kr & (unit - 1)) * HEAD_DIM + c;
      kreg[e] = KV_LOAD4(kc, at);
      vreg[e] = KV_LOAD4(vc, at);
    }
  }
}

__kernel __attribute__((reqd_work_group_size(NT, 1, 1))) void
dua_decode(__global const dua_store_t *kc, __global const dua_store_t *vc, __global const int *block_table,
           int max_pages, __global const int2 *calls /* [S] (seq, length) */, int page_shift, int unit_shift,
           __global const float *q, __global float *o, __global float *lse, /* q, o: half when qo_fp16 */
           long4 q_strides, long4 o_strides, long4 lse_strides, long4 offsets /* elements: q, o, lse, bias */,
           int qo_fp16, int has_lse, __global float *part, long part_lse_offset, int splits, dua_shape shape,
           float scale_log2, __global const dua_head_rule *head_rules, __global const uchar *paths,
           int layout_batch, __global const int *order, __global const int *rank_range,
           __global const float *level_bias, int bias_stride, int hchunks) {
  __local uint bitmap[WORDS];
  __local float q_loc[ROWS * STRIDE] __attribute__((aligned(16)));
  __local float k_loc[TILE_N * STRIDE] __attribute__((aligned(16)));
  __local float v_loc[TILE_N * STRIDE] __attribute__((aligned(16)));
  __local float s_loc[ROWS * TILE_N];
  __local float p_loc[ROWS * TILE_N];
  __local float m_loc[2 * ROWS]; /* running row max (log2 units), ping-pong by tile parity */
  __local float l_loc[ROWS];     /* running row sum */

  const int tid = get_local_id(0), split = get_group_id(0);
  const int hk = get_group_id(1) / hchunks;
  const int h0 = hk * (shape.hq / shape.hkv) + (get_group_id(1) % hchunks) * HPW;
  const int sidx = get_group_id(2);
  const int2 call = calls[sidx];
  const int seq = call.x, len = call.y;
  const int unit = 1 << unit_shift;
  const int upt = TILE_N >> unit_shift;
  const long lb = layout_batch == 1 ? 0 : sidx;
  (void)paths, (void)order, (void)rank_range, (void)level_bias, (void)bias_stride;

  /* ---- bitmap cleared, Q rows (pre-scaled) loaded, softmax state reset */
  const int nwords = (((len + unit - 1) >> unit_shift) + 31) >> 5;
  for (int w = tid; w < nwords; w += NT)
    bitmap[w] = 0u;
  for (int idx = tid; idx < ROWS * VEC; idx += NT) {
    const int r = idx / VEC, c = (idx % VEC) * 4, i = r % TOKENS, pos = len - TOKENS + i;
    float4 x = (float4)(0.0f);
    if (pos >= 0) {
      const long off =
          offsets.s0 + sidx * q_strides.s0 + (h0 + r / TOKENS) * q_strides.s1 + i * q_strides.s2 + c;
      x = qo_fp16 ? vload_half4(0, (__global const half *)q + off) : vload4(0, q + off);
    }
    vstore4(x * scale_log2, 0, q_loc + r * STRIDE + c);
  }
  if (tid < ROWS) {
    m_loc[tid] = -INFINITY;
    l_loc[tid] = 0.0f;
  }
  barrier(CLK_LOCAL_MEM_FENCE);

  /* ---- 1. mark the units holding a visible key of some row */
  for (int r = 0; r < ROWS; r++) {
    const int pos = len - TOKENS + r % TOKENS;
    if (pos < 0)
      continue; /* uniform */
    const int h = h0 + r / TOKENS, m = pos / shape.blk;
    if (shape.sink > 0)
      mark_tokens(bitmap, 0, min(shape.sink, pos + 1), unit_shift, tid);
    if (shape.window > 0)
      mark_tokens(bitmap, max(0, pos - shape.window), pos + 1, unit_shift, tid);
#if DUA_TREE == 0
    const int2 tr = dua_tree_range(head_rules[h], m, shape.shift, shape.nb);
    mark_tokens(bitmap, tr.x * shape.blk, min(tr.y * shape.blk, pos + 1), unit_shift, tid);
#else
    const long row = (lb * shape.hq + h) * shape.nb;
    const int e0 = rank_range[2 * (row + m)], e1 = rank_range[2 * (row + m) + 1];
    for (int e = e0 + tid; e < e1; e += NT) {
      const int n = order[row + e];
      if (n <= m) /* one block: at most 16 units, inside one bitmap word */
        mark_units(bitmap, (n * shape.blk) >> unit_shift,
                   ((min((n + 1) * shape.blk, pos + 1) - 1) >> unit_shift) + 1, 0, 1);
    }
#endif
  }
  barrier(CLK_LOCAL_MEM_FENCE);

  /* ---- 2. this split's visible units [u0, u1) and a cursor on unit u0 */
  int total = 0;
  for (int w = 0; w < nwords; w++)
    total += popcount(bitmap[w]);
  const int u0 = (int)(((long)total * split) / splits), u1 = (int)(((long)total * (split + 1)) / splits);
  int cw = 0, skip = u0;
  uint rem = nwords > 0 ? bitmap[0] : 0u;
  while (cw + 1 < nwords && skip >= (int)popcount(rem)) {
    skip -= popcount(rem);
    rem = bitmap[++cw];
  }
  for (; skip > 0; skip--)
    rem &= rem - 1u;
  const int n_units = u1 - u0, n_tiles = (n_units + upt - 1) / upt;
  unit_cursor cur = {cw, 0, n_units, rem};
  __global const int *bt_row = block_table + (long)seq * max_pages;
  const long page_stride = (long)shape.hkv << page_shift, head_rows = (long)hk << page_shift;

  int cur_units[MAX_UPT], nxt_units[MAX_UPT];
  float4 kreg[KV_PER_THREAD], vreg[KV_PER_THREAD];
  float4 acc[PV_PER_THREAD];
  for (int e = 0; e < PV_PER_THREAD; e++)
    acc[e] = (float4)(0.0f);

  if (n_tiles > 0)
    fetch_tile(bitmap, &cur, nxt_units, kreg, vreg, kc, vc, bt_row, len, unit_shift, page_shift, page_stride,
               head_rows, tid);
  for (int t = 0; t < n_tiles; t++) {
    const int par = t & 1;
    for (int x = 0; x < MAX_UPT; x++)
      cur_units[x] = nxt_units[x];
    for (int e = 0; e < KV_PER_THREAD; e++) {
      const int f = tid + e * NT;
      if (f < KV_VECS) {
        vstore4(kreg[e], 0, k_loc + (f / VEC) * STRIDE + (f % VEC) * 4);
        vstore4(vreg[e], 0, v_loc + (f / VEC) * STRIDE + (f % VEC) * 4);
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (t + 1 < n_tiles) /* the next tile's loads overlap this tile's arithmetic */
      fetch_tile(bitmap, &cur, nxt_units, kreg, vreg, kc, vc, bt_row, len, unit_shift, page_shift,
                 page_stride, head_rows, tid);

    /* ---- 3a. scores with the exact element mask */
    for (int p = tid; p < ROWS * TILE_N; p += NT) {
      const int r = p / TILE_N, kr = p % TILE_N, pos = len - TOKENS + r % TOKENS;
      const int u = pick_unit(cur_units, kr >> unit_shift), j = (u << unit_shift) + (kr & (unit - 1));
      float sc = -INFINITY;
      if (u >= 0 && pos >= 0 && j <= pos) {
        const int h = h0 + r / TOKENS, m = pos / shape.blk, n = j / shape.blk;
        const dua_head_rule hr = head_rules[h];
        __global const uchar *paths_bh = paths + (lb * shape.hq + h) * shape.nb * shape.max_depth;
        __global const uchar *path_m = paths_bh + (long)m * shape.max_depth;
        const int shared = block_shared(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth);
        const int extra = dua_token_extra(pos, j, shape.window, shape.sink);
        if (shared || extra) {
          float d = 0.0f;
          for (int c = 0; c < HEAD_DIM; c += 4) {
            const float4 a = vload4(0, q_loc + r * STRIDE + c), b = vload4(0, k_loc + kr * STRIDE + c);
            d = fma(a.x, b.x, fma(a.y, b.y, fma(a.z, b.z, fma(a.w, b.w, d))));
          }
#if DUA_BIAS
          if (!extra)
            d += level_bias[offsets.s3 + h * bias_stride +
                            block_lca(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth)] *
                 DUA_LOG2E;
#endif
          sc = d;
        }
      }
      s_loc[p] = sc;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* ---- 3b. new row maxima and probabilities */
    for (int p = tid; p < ROWS * TILE_N; p += NT) {
      const int r = p / TILE_N;
      float mx = m_loc[par * ROWS + r];
      for (int k = 0; k < TILE_N; k++)
        mx = fmax(mx, s_loc[r * TILE_N + k]);
      const float s = s_loc[p];
      p_loc[p] = s == -INFINITY ? 0.0f : DUA_EXP2(s - mx);
      if (p % TILE_N == 0)
        m_loc[(par ^ 1) * ROWS + r] = mx;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* ---- 3c. O = alpha O + P V */
    for (int e = 0; e < PV_PER_THREAD; e++) {
      const int it = tid + e * NT;
      if (it < PV_ITEMS) {
        const int r = it / VEC, c = (it % VEC) * 4;
        const float mo = m_loc[par * ROWS + r], mn = m_loc[(par ^ 1) * ROWS + r];
        const float alpha = mo == -INFINITY ? 1.0f : DUA_EXP2(mo - mn);
        float4 a = acc[e] * alpha;
        float sum = 0.0f;
        for (int k = 0; k < TILE_N; k++) {
          const float pk = p_loc[r * TILE_N + k];
          a = fma((float4)(pk), vload4(0, v_loc + k * STRIDE + c), a);
          sum += pk;
        }
        acc[e] = a;
        if (c == 0)
          l_loc[r] = l_loc[r] * alpha + sum;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }

  /* ---- 4. write O and LSE, or this split's partials */
  const int pf = n_tiles & 1;
  for (int e = 0; e < PV_PER_THREAD; e++) {
    const int it = tid + e * NT;
    if (it >= PV_ITEMS)
      continue;
    const int r = it / VEC, c = (it % VEC) * 4, h = h0 + r / TOKENS, i = r % TOKENS;
    const float l = l_loc[r], mx = m_loc[pf * ROWS + r];
    const float4 out = l > 0.0f ? acc[e] * (1.0f / l) : (float4)(0.0f);
    if (splits == 1) {
      const long off = offsets.s1 + sidx * o_strides.s0 + h * o_strides.s1 + i * o_strides.s2 + c;
      if (qo_fp16)
        vstore_half4(out, 0, (__global half *)o + off);
      else
        vstore4(out, 0, o + off);
      if (has_lse && c == 0)
        lse[offsets.s2 + sidx * lse_strides.s0 + h * lse_strides.s1 + i * lse_strides.s2] =
            l > 0.0f ? (mx + log2(l)) * DUA_LN2 : -INFINITY;
    } else {
      const long gr = ((long)sidx * shape.hq + h) * TOKENS + i;
      vstore4(out, 0, part + (gr * splits + split) * HEAD_DIM + c);
      if (c == 0)
        part[part_lse_offset + gr * splits + split] = l > 0.0f ? mx + log2(l) : -INFINITY;
    }
  }
}
