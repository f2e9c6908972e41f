/* attn_decode.cl: sparse paged-KV decode (OpenCL 1.2 C; needs common.cl and attn_decode_units.cl before it).
 *
 * dua_decode: one work-group per (split, KV head x head chunk, sequence). It serves HPW query heads of one
 * GQA group and TOKENS query tokens of one sequence (ROWS = HPW * TOKENS rows), so every K/V element it
 * loads is used by all of them. Steps:
 *   1-2. attn_decode_units.cl: mark the visible key units in a local bitmap; take the split's share of
 *      them, TILE_N / UNIT units per tile, walked with a set-bit cursor (each unit's page from the block
 *      table). Skipped units are never read.
 *   3. Per tile: scores S = Q K^T with the exact element mask (tree or window or sink, j <= t) and level
 *      bias; online softmax in fp32 with exp2 (log2(e) folded into Q); O = alpha O + P V. Two kernels:
 *      DUA_DECODE_STAGED=1 stages K/V through local memory (4-element loads); DUA_DECODE_STAGED=0 ("regs")
 *      keeps K and V in registers, loaded 16 bytes at a time. host/attention/decode.c picks one per cache
 *      dtype, GQA group and tokens from the H100 measurements (bench/RESULTS.md).
 *   4. One split: O and LSE written directly. Several: normalized partial O and log2-LSE per split go to a
 *      scratch buffer and dua_decode_merge (attn_decode_merge.cl) combines them (rows where nothing is
 *      visible give O = 0 and LSE = -inf, never NaN).
 * Cache layout per layer: [num_pages][Hkv][PAGE][HEAD_DIM] (see kv_cache.cl); q, o: (S, Hq, TOKENS, HEAD_DIM)
 * views, fp32 or fp16 (qo_fp16); cache dtype: DUA_FP16 (common.cl). */

#ifndef TILE_N
#define TILE_N 32 /* keys per tile: a multiple of UNIT (>= 16) */
#endif
#ifndef DUA_DECODE_STAGED
#define DUA_DECODE_STAGED 0 /* 1: K/V staged through local memory; 0: K/V in registers */
#endif
#ifndef DUA_HALF_CVT
#define DUA_HALF_CVT                                                                                         \
  0 /* fp16 cache: 0 raw 16-byte loads + vload_half8 at use, 1 the same + integer                            \
     * conversion, 2 vloada_half8 loads (converted at load) */
#endif

#define MAX_UPT (TILE_N / 16) /* most units per tile */

#if (TILE_N % 16) || (HEAD_DIM % 4)
#error "TILE_N must be a multiple of 16 and HEAD_DIM of 4"
#endif

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

#if DUA_DECODE_STAGED
/* ---------------------------------------------------------------- the staged kernel */
#define STRIDE (HEAD_DIM + 4) /* local row pitch in floats */
#define VEC (HEAD_DIM / 4)
#define KV_VECS (TILE_N * VEC)
#define KV_PER_THREAD ((KV_VECS + NT - 1) / NT)
#define PV_ITEMS (ROWS * VEC)
#define PV_PER_THREAD ((PV_ITEMS + NT - 1) / NT)

#if DUA_FP16
#define KV_LOAD4(p, i) vload_half4(0, (p) + (i))
#else
#define KV_LOAD4(p, i) vload4(0, (p) + (i))
#endif

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

  /* ---- 1. mark the units holding a visible key of some row; 2. this split's share of them */
  mark_visible_units(bitmap, len, h0, unit_shift, shape, head_rules, lb, order, rank_range, tid);
  barrier(CLK_LOCAL_MEM_FENCE);
  unit_cursor cur = split_cursor(bitmap, nwords, split, splits);
  const int n_units = cur.n_units, n_tiles = (n_units + upt - 1) / upt;
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
    write_out4(acc[e], l, mx, h, i, c, sidx, split, splits, shape.hq, o, lse, part, part_lse_offset,
               o_strides, lse_strides, offsets, qo_fp16, has_lse);
  }
}

#else

/* ---------------------------------------------------------------- the regs kernel
 * Work-item roles per tile of TILE_N keys, NT = KG * NV work-items (NV 16-byte loads per K/V row):
 *   Q.K:  G = NT / TILE_N work-items per key; work-item (key t / G, part g = t % G) holds loads g, g + G, ...
 *         of its key's K row in registers and writes one partial dot product per row to s_part.
 *   softmax: work-item (row, key group kg) sums the partials of its KPT = TILE_N / KG keys, applies the exact
 *         element mask and keeps an online softmax state (max, sum) of its own keys: no reduction across the
 *         work-group per tile; the KG states meet once, after the last tile.
 *   P.V:  work-item (kg = t / NV, load c = t % NV) holds load c of its group's KPT V rows and accumulates all
 *         ROWS rows of output columns [c VE, (c+1) VE).
 * Every K/V byte is loaded straight into registers with 16-byte loads (no local-memory staging): per tile
 * each work-item issues KL K loads and KPT V loads; the next tile's K loads are issued before this tile's
 * softmax and P.V, and its V loads before its own Q.K. Two barriers per tile. */

#if DUA_FP16
#define VE 8 /* elements per 16-byte load */
#if DUA_HALF_CVT == 2
typedef float8 kv_raw;
#define KV_LD(p) vloada_half8(0, (p))
#define kv_cvt(w) (w)
#else
typedef uint4 kv_raw;
#define KV_LD(p) (*(__global const uint4 *)(p))
#endif
#if DUA_HALF_CVT == 1
/* IEEE half bits to float by integer operations (exact: normals, subnormals, inf, nan). */
inline float half_bits(uint h) {
  const uint a = h & 0x7fffu;
  const float f = a < 0x400u     ? (float)a * 0x1p-24f
                  : a >= 0x7c00u ? as_float((a << 13) | 0x7f800000u)
                                 : as_float((a << 13) + 0x38000000u);
  return as_float(as_uint(f) | ((h & 0x8000u) << 16));
}
inline float8 kv_cvt(kv_raw w) {
  return (float8)(half_bits(w.x & 0xffffu), half_bits(w.x >> 16), half_bits(w.y & 0xffffu),
                  half_bits(w.y >> 16), half_bits(w.z & 0xffffu), half_bits(w.z >> 16),
                  half_bits(w.w & 0xffffu), half_bits(w.w >> 16));
}
#elif DUA_HALF_CVT == 0
/* The 8 halves of a register value through vload_half8 on its private copy. */
inline float8 kv_cvt(kv_raw w) {
  return vload_half8(0, (const __private half *)&w);
}
#endif
typedef float8 kv_f;
#define Q_LOAD(p) vload8(0, (p))
#else
#define VE 4
typedef float4 kv_raw;
typedef float4 kv_f;
#define KV_LD(p) (*(__global const float4 *)(p))
#define kv_cvt(w) (w)
#define Q_LOAD(p) vload4(0, (p))
#endif

#define NV (HEAD_DIM / VE)       /* 16-byte loads per K/V row */
#define KG (NT / NV)             /* key groups of the softmax and P.V */
#define KPT (TILE_N / KG)        /* keys per key group */
#define G (NT / TILE_N)          /* work-items per key in Q.K */
#define KL ((NV + G - 1) / G)    /* K loads per work-item */
#define RED_ITEMS (HEAD_DIM / 4) /* float4 outputs per row */

#if (HEAD_DIM % VE) || (NT % NV) || (NT % TILE_N) || (TILE_N % KG) || KG < 1
#error "the decode plan needs NT = KG * HEAD_DIM / VE, TILE_N | NT and KG | TILE_N"
#endif

inline float dot_kv(kv_f a, kv_f b) {
#if DUA_FP16
  return dot(a.lo, b.lo) + dot(a.hi, b.hi);
#else
  return dot(a, b);
#endif
}

/* The next tile's units (units[x], -1 past the split) from the cursor and the element offset of each unit's
 * first key (its page from the sequence's block-table row). */
inline void next_units(__local const uint *bm, unit_cursor *cur, int *units, long *base,
                       __global const int *bt_row, int unit_shift, int page_shift, long page_stride,
                       long head_rows) {
  const int upt = TILE_N >> unit_shift;
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
}

/* Load `which` (0..NV-1) of tile key kr, or zeros for a key past the split or the context. */
inline kv_raw load_kv(__global const dua_store_t *p, const int *units, const long *base, int kr, int which,
                      int len, int unit_shift) {
  const int x = kr >> unit_shift, u = pick_unit(units, x), r = kr & ((1 << unit_shift) - 1);
  kv_raw w = (kv_raw)(0);
  if (u >= 0 && (u << unit_shift) + r < len)
    w = KV_LD(p + pick_base(base, x) + (long)r * HEAD_DIM + which * VE);
  return w;
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
  __local float q_loc[ROWS * HEAD_DIM] __attribute__((aligned(32)));
  __local float s_part[ROWS * NT];    /* [row][key][part] partial scores */
  __local float p_loc[ROWS * TILE_N]; /* [row][key] probabilities */
  __local float a_loc[ROWS * KG];     /* [row][key group] this tile's rescale factor */
  __local float m_st[ROWS * KG];      /* running max (log2 units) */
  __local float l_st[ROWS * KG];      /* running sum */
  __local float red[KG * HEAD_DIM] __attribute__((aligned(16))); /* final merge of the key groups */

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

  /* ---- bitmap cleared, Q rows (pre-scaled) loaded, softmax states reset */
  const int nwords = (((len + unit - 1) >> unit_shift) + 31) >> 5;
  for (int w = tid; w < nwords; w += NT)
    bitmap[w] = 0u;
  for (int idx = tid; idx < ROWS * (HEAD_DIM / 4); idx += NT) {
    const int r = idx / (HEAD_DIM / 4), c = (idx % (HEAD_DIM / 4)) * 4, i = r % TOKENS,
              pos = len - TOKENS + i;
    float4 x = (float4)(0.0f);
    if (pos >= 0) {
      const long off =
          offsets.s0 + sidx * q_strides.s0 + (h0 + r / TOKENS) * q_strides.s1 + i * q_strides.s2 + c;
      x = qo_fp16 ? vload_half4(0, (__global const half *)q + off) : vload4(0, q + off);
    }
    vstore4(x * scale_log2, 0, q_loc + r * HEAD_DIM + c);
  }
  for (int x = tid; x < ROWS * KG; x += NT) {
    m_st[x] = -INFINITY;
    l_st[x] = 0.0f;
  }
  barrier(CLK_LOCAL_MEM_FENCE);

  /* ---- 1. mark the units holding a visible key of some row; 2. this split's share of them */
  mark_visible_units(bitmap, len, h0, unit_shift, shape, head_rules, lb, order, rank_range, tid);
  barrier(CLK_LOCAL_MEM_FENCE);
  unit_cursor cur = split_cursor(bitmap, nwords, split, splits);
  const int n_units = cur.n_units, n_tiles = (n_units + upt - 1) / upt;
  __global const int *bt_row = block_table + (long)seq * max_pages;
  const long page_stride = (long)shape.hkv << page_shift, head_rows = (long)hk << page_shift;

  const int kq = tid / G, g = tid % G;      /* Q.K role */
  const int kg = tid / NV, vc_i = tid % NV; /* P.V role */
  int cur_units[MAX_UPT], nxt_units[MAX_UPT];
  long cur_base[MAX_UPT], nxt_base[MAX_UPT];
  kv_raw kraw[KL], vraw[KPT];
  kv_f acc[ROWS];
  for (int r = 0; r < ROWS; r++)
    acc[r] = (kv_f)(0.0f);

  if (n_tiles > 0) {
    next_units(bitmap, &cur, nxt_units, nxt_base, bt_row, unit_shift, page_shift, page_stride, head_rows);
    for (int i = 0; i < KL; i++)
      kraw[i] =
          g + i * G < NV ? load_kv(kc, nxt_units, nxt_base, kq, g + i * G, len, unit_shift) : (kv_raw)(0);
  }
  for (int t = 0; t < n_tiles; t++) {
    for (int x = 0; x < MAX_UPT; x++) {
      cur_units[x] = nxt_units[x];
      cur_base[x] = nxt_base[x];
    }
    /* ---- 3a. this tile's V loads in flight; partial scores from the K rows in registers */
    for (int i = 0; i < KPT; i++)
      vraw[i] = load_kv(vc, cur_units, cur_base, kg * KPT + i, vc_i, len, unit_shift);
    for (int r = 0; r < ROWS; r++) {
      float d = 0.0f;
      for (int i = 0; i < KL; i++)
        if (g + i * G < NV)
          d += dot_kv(kv_cvt(kraw[i]), Q_LOAD(q_loc + r * HEAD_DIM + (g + i * G) * VE));
      s_part[r * NT + tid] = d;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* ---- 3b. the next tile's K loads in flight; scores, mask and online softmax per (row, key group) */
    if (t + 1 < n_tiles) {
      next_units(bitmap, &cur, nxt_units, nxt_base, bt_row, unit_shift, page_shift, page_stride, head_rows);
      for (int i = 0; i < KL; i++)
        kraw[i] =
            g + i * G < NV ? load_kv(kc, nxt_units, nxt_base, kq, g + i * G, len, unit_shift) : (kv_raw)(0);
    }
    for (int it = tid; it < ROWS * KG; it += NT) {
      const int r = it / KG, grp = it % KG, pos = len - TOKENS + r % TOKENS;
      const int h = h0 + r / TOKENS, m = pos / shape.blk;
      const dua_head_rule hr = head_rules[h];
      __global const uchar *paths_bh = paths + (lb * shape.hq + h) * shape.nb * shape.max_depth;
      __global const uchar *path_m = paths_bh + (long)max(m, 0) * shape.max_depth;
      float mt = -INFINITY;
      for (int i = 0; i < KPT; i++) {
        const int kr = grp * KPT + i;
        const int u = pick_unit(cur_units, kr >> unit_shift), j = (u << unit_shift) + (kr & (unit - 1));
        float sc = -INFINITY;
        if (u >= 0 && pos >= 0 && j <= pos) {
          const int n = j / shape.blk;
          const int shared = block_shared(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth);
          const int extra = dua_token_extra(pos, j, shape.window, shape.sink);
          if (shared || extra) {
            sc = 0.0f;
            for (int x = 0; x < G; x++)
              sc += s_part[r * NT + kr * G + x];
#if DUA_BIAS
            if (!extra)
              sc += level_bias[offsets.s3 + h * bias_stride +
                               block_lca(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth)] *
                    DUA_LOG2E;
#endif
          }
        }
        p_loc[r * TILE_N + kr] = sc;
        mt = fmax(mt, sc);
      }
      const float mo = m_st[it], mn = fmax(mo, mt);
      const float alpha = mo == -INFINITY ? 1.0f : DUA_EXP2(mo - mn);
      float sum = 0.0f;
      for (int i = 0; i < KPT; i++) {
        const float s = p_loc[r * TILE_N + grp * KPT + i], p = s == -INFINITY ? 0.0f : DUA_EXP2(s - mn);
        p_loc[r * TILE_N + grp * KPT + i] = p;
        sum += p;
      }
      m_st[it] = mn;
      l_st[it] = l_st[it] * alpha + sum;
      a_loc[it] = alpha;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* ---- 3c. O = alpha O + P V over the group's keys */
    for (int r = 0; r < ROWS; r++)
      acc[r] *= a_loc[r * KG + kg];
    for (int i = 0; i < KPT; i++) {
      const kv_f v = kv_cvt(vraw[i]);
      for (int r = 0; r < ROWS; r++)
        acc[r] = fma((kv_f)(p_loc[r * TILE_N + kg * KPT + i]), v, acc[r]);
    }
  }

  /* ---- 4. merge the key groups per row; write O and LSE, or this split's partials */
  for (int r = 0; r < ROWS; r++) {
    float mx = -INFINITY;
    for (int x = 0; x < KG; x++)
      mx = fmax(mx, m_st[r * KG + x]);
    const float mk = m_st[r * KG + kg], wk = mk == -INFINITY ? 0.0f : DUA_EXP2(mk - mx);
#if DUA_FP16
    vstore8(acc[r] * wk, 0, red + kg * HEAD_DIM + vc_i * VE);
#else
    vstore4(acc[r] * wk, 0, red + kg * HEAD_DIM + vc_i * VE);
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
    float l = 0.0f;
    for (int x = 0; x < KG; x++)
      l += m_st[r * KG + x] == -INFINITY ? 0.0f : l_st[r * KG + x] * DUA_EXP2(m_st[r * KG + x] - mx);
    const int h = h0 + r / TOKENS, i = r % TOKENS;
    for (int it = tid; it < RED_ITEMS; it += NT) {
      const int c = it * 4;
      float4 s = (float4)(0.0f);
      for (int x = 0; x < KG; x++)
        s += vload4(0, red + x * HEAD_DIM + c);
      write_out4(s, l, mx, h, i, c, sidx, split, splits, shape.hq, o, lse, part, part_lse_offset, o_strides,
                 lse_strides, offsets, qo_fp16, has_lse);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
}

#endif /* DUA_DECODE_STAGED */
