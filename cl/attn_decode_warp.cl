/* attn_decode_warp.cl: sparse paged-KV decode with warp-independent key streams (NVIDIA: shfl.sync inline
 * PTX; needs common.cl, attn_decode_units.cl and nv_mma_ops.cl before it). Same arguments, semantics and
 * outputs as dua_decode in attn_decode.cl; host/attention/decode.c chooses between them.
 *
 * The work-group (NW = NT / 32 warps) marks the visible key units and takes its split's share of them
 * (attn_decode_units.cl). Then every warp works alone, with no barrier until the end: warp w takes units w,
 * w + NW, w + 2 NW... of the share. A key row of HEAD_DIM elements is LPK = HEAD_DIM / VE 16-byte loads, so a
 * warp holds KPW = 32 / LPK keys at once (lane = slot * LPK + part: key slot, VPL 16-byte parts of the row;
 * VPL = 2 halves the lanes per key and so the shuffles per score, for work-groups with several query rows).
 * Per batch of KPW x UNROLL keys of a unit, each lane issues UNROLL K loads and UNROLL V loads (all in flight
 * together), forms its partial dot products with the query rows held in registers, sums them over the LPK
 * lanes of the key with butterfly shuffles, applies the exact element mask (tree or window or sink, j <= t)
 * and level bias, and updates an online softmax (fp32, exp2 with log2(e) folded into Q) and O += P V for its
 * key slot. At the end the KPW slots of a warp merge by shuffles, the NW warps through local memory (one
 * barrier), and O and LSE are written, or with several splits the split's normalized partial O and log2-LSE
 * for dua_decode_merge (attn_decode_merge.cl). Rows with nothing visible give O = 0, LSE = -inf.
 *
 * Why (bench/RESULTS.md, decode): the tile kernels of attn_decode.cl spend each tile in serial steps between
 * barriers (scores, one row's softmax on a few work-items, P V), so their time per tile hardly depends on the
 * bytes it loads (fp16 ran as slow as fp32); here the only per-key work is a few FMAs and shuffles per lane,
 * and a warp never waits for another.
 *
 * DUA_DECODE_MMA=1 builds the "mma" variant for fp16 caches (ROWS <= 8 query rows per work-group: a GQA
 * group's heads x tokens, or one row): the same unit walk and merge, but each warp takes 16 keys of its unit
 * at a time and computes S = Q K^T and O += P V with mma.sync m16n8k16 (Q's ROWS rows padded to 16; fp32
 * accumulation), so the per-key work no longer grows with the rows (and leaves the FMA units). Lane 4g + t
 * owns query row g. K goes straight from global memory into B fragments: lane (g, t) loads 16 bytes of key g
 * at columns 32c + 8t, which are the b registers of k-steps 2c and 2c + 1 when those k-steps stand for the
 * columns in that order (Q's A fragments use the same order; a dot product does not care). V needs keys 2t,
 * 2t+1, 2t+8, 2t+9 at column n of each n-tile: lane (g, t) loads those four keys' columns [g OT, g OT + OT)
 * (OT = HEAD_DIM / 8) and n-tile x stands for column g OT + x of lane group g, so each b register is two
 * halves of two loaded words (a byte permute); the C fragment of O then holds, for row g, columns
 * [2t OT, 2t OT + 2 OT). P is rounded to f16 and re-packed from C into A fragments (as FlashAttention-2), the
 * softmax and sums are fp32. With fp32 queries (DUA_MMA_SPLIT) Q and P each go in as two f16 parts, x = hi +
 * lo (lo = x - f16(x)), and every product is two mma: about 22 significant bits, as the fp32 reference
 * tolerance needs (one f16 rounding of Q and P missed 1e-4 + 1e-3 |ref| in test_decode). Loading the next 16
 * keys into a second set of registers before using the current ones was measured 4-6% slower on an H100
 * (bench/RESULTS.md): not kept. Registers per lane at head dim 128: Q 16 words (32 with DUA_MMA_SPLIT), O 64
 * floats (half of them the mma's unused rows 8..15), one tile's loads 64 words.
 *
 * DUA_MMA_EMULATE=1 replaces shfl.sync and mma.sync by local memory and barriers (nv_mma_ops.cl; every loop
 * that shuffles has a trip count uniform over the work-group), so the kernel's logic can be checked on any
 * device (PoCL); tests only. */

#define THREADS NT /* the work-group size for nv_mma_ops.cl's emulation scratch (EMU_LOCALS) */
#ifndef DUA_DECODE_MMA
#define DUA_DECODE_MMA 0
#endif
#ifndef UNROLL
#define UNROLL 4 /* key steps per batch: loads in flight per lane = 2 x UNROLL x VPL */
#endif
#ifndef VPL
/* 16-byte loads per lane and key row: 2 halves the lanes per key, and the shuffles per score */
#define VPL 1
#endif

#if DUA_FP16
#define VE 8 /* elements per 16-byte load */
typedef uint4 kv_raw;
typedef float8 kv_f;
inline kv_f kv_cvt(kv_raw w) {
  return vload_half8(0, (const __private half *)&w);
}
#else
#define VE 4
typedef float4 kv_raw;
typedef float4 kv_f;
#define kv_cvt(w) (w)
#endif
#define KV_LD(p) (*(__global const kv_raw *)(p))

#define NW (NT / 32) /* warps per work-group */
#if DUA_DECODE_MMA
#define OT (HEAD_DIM / 8)  /* n-tiles of O (8 columns each) */
#define QC (HEAD_DIM / 32) /* 16-byte K loads per lane and key row: 2 k-steps each */
#define VL (HEAD_DIM / 64) /* 16-byte V loads per lane and key row: OT columns */
#ifndef DUA_MMA_SPLIT
#define DUA_MMA_SPLIT 0 /* fp32 queries: Q and P as f16 hi + lo pairs (two mma each), fp32-grade scores */
#endif
#if !DUA_FP16 || (HEAD_DIM != 64 && HEAD_DIM != 128) || ROWS > 8 || (NT % 32)
#error "the mma decode needs an fp16 cache, head dim 64 or 128, at most 8 query rows and whole warps"
#endif
#else
#define LPK (HEAD_DIM / (VE * VPL)) /* lanes per key */
#define KPW (32 / LPK)              /* keys per warp step */
#if (HEAD_DIM % (VE * VPL)) || LPK < 1 || (32 % LPK) || (NT % 32)
#error "the warp decode needs HEAD_DIM / (VE VPL) lanes per key dividing 32 and whole warps"
#endif
#endif

#if !DUA_DECODE_MMA
/* Sum over the LPK lanes of one key (every one of them gets it). */
inline float key_sum(float x EMU_PARAMS) {
  for (int o = 1; o < LPK; o <<= 1)
    x += shfl_xor(x, o EMU_ARGS);
  return x;
}

inline kv_f shfl_vec(kv_f x, int mask EMU_PARAMS) {
#if DUA_FP16
  return (kv_f)(shfl_xor(x.s0, mask EMU_ARGS), shfl_xor(x.s1, mask EMU_ARGS), shfl_xor(x.s2, mask EMU_ARGS),
                shfl_xor(x.s3, mask EMU_ARGS), shfl_xor(x.s4, mask EMU_ARGS), shfl_xor(x.s5, mask EMU_ARGS),
                shfl_xor(x.s6, mask EMU_ARGS), shfl_xor(x.s7, mask EMU_ARGS));
#else
  return (kv_f)(shfl_xor(x.s0, mask EMU_ARGS), shfl_xor(x.s1, mask EMU_ARGS), shfl_xor(x.s2, mask EMU_ARGS),
                shfl_xor(x.s3, mask EMU_ARGS));
#endif
}

inline float dot_kv(kv_f a, kv_f b) {
#if DUA_FP16
  return dot(a.lo, b.lo) + dot(a.hi, b.hi);
#else
  return dot(a, b);
#endif
}
#endif

/* VE query elements at q + off (fp16 or fp32 storage). */
inline kv_f load_q(__global const float *q, long off, int qo_fp16) {
  __global const half *qh = (__global const half *)q;
#if DUA_FP16
  return qo_fp16 ? vload_half8(0, qh + off) : vload8(0, q + off);
#else
  return qo_fp16 ? vload_half4(0, qh + off) : vload4(0, q + off);
#endif
}

/* For query row (head h, position pos) and the unit starting at token j0: does the unit's block share the
 * row's tree (else only window and sink keys are visible), and the block pair's level bias (log2 units). */
inline int unit_rule(int h, int pos, int j0, dua_shape shape, __global const dua_head_rule *head_rules,
                     __global const uchar *paths, long lb, __global const float *level_bias, int bias_stride,
                     long bias_offset, float *bias) {
  *bias = 0.0f;
  if (pos < 0)
    return 0;
  const int m = pos / shape.blk, n = j0 / shape.blk;
  const dua_head_rule hr = head_rules[h];
  __global const uchar *paths_bh = paths + (lb * shape.hq + h) * shape.nb * shape.max_depth;
  __global const uchar *path_m = paths_bh + (long)m * shape.max_depth;
  const int shared = block_shared(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth);
#if DUA_BIAS
  if (shared)
    *bias = level_bias[bias_offset + h * bias_stride +
                       block_lca(hr, m, n, shape.shift, path_m, paths_bh, shape.max_depth)] *
            DUA_LOG2E;
#else
  (void)level_bias, (void)bias_stride, (void)bias_offset;
#endif
  return shared;
}

#if DUA_DECODE_MMA
/* x rounded to f16 (nearest even), as a float. */
inline float f16_round(float x) {
  ushort h;
  vstore_half_rte(x, 0, (__private half *)&h);
  return vload_half(0, (__private const half *)&h);
}
#endif

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
  __local float red[NW * ROWS * HEAD_DIM] __attribute__((aligned(16))); /* [warp][row][col] partial O */
  __local float red_ml[NW * ROWS * 2];                                  /* [warp][row] (max, sum) */
  EMU_LOCALS

  const int tid = get_local_id(0), split = get_group_id(0);
  const int lane = tid & 31, warp = tid >> 5;
  const int hk = get_group_id(1) / hchunks;
  const int h0 = hk * (shape.hq / shape.hkv) + (get_group_id(1) % hchunks) * HPW;
  const int sidx = get_group_id(2);
  const int2 call = calls[sidx];
  const int seq = call.x, len = call.y;
  const int ukeys = 1 << unit_shift;
  const long lb = layout_batch == 1 ? 0 : sidx;
  (void)paths, (void)level_bias, (void)bias_stride;

  /* ---- bitmap cleared; the query rows in registers */
  const int nwords = (((len + ukeys - 1) >> unit_shift) + 31) >> 5;
  for (int w = tid; w < nwords; w += NT)
    bitmap[w] = 0u;
#if DUA_DECODE_MMA
  /* lane 4g + t: row g's columns 32c + 8t .. + 8 as A-fragment words (f16 pairs); its O columns are
   * [2t OT, 2t OT + 2 OT)
   */
  const int g = lane >> 2, t = lane & 3, row_ok = g < ROWS;
  const int pos_g = row_ok ? len - TOKENS + g % TOKENS : -1, h_g = h0 + (row_ok ? g / TOKENS : 0);
  uint qa[QC][4];
#if DUA_MMA_SPLIT
  uint ql[QC][4]; /* the f16 remainders */
#endif
  float4 acc[OT];
  float m_g = -INFINITY, l_g = 0.0f;
  for (int c = 0; c < QC; c++) {
    float8 x = (float8)(0.0f);
    if (pos_g >= 0) {
      const long off = offsets.s0 + sidx * q_strides.s0 + h_g * q_strides.s1 + (g % TOKENS) * q_strides.s2 +
                       c * 32 + t * 8;
      x = load_q(q, off, qo_fp16);
    }
    qa[c][0] = pack_half2(x.s0, x.s1), qa[c][1] = pack_half2(x.s2, x.s3);
    qa[c][2] = pack_half2(x.s4, x.s5), qa[c][3] = pack_half2(x.s6, x.s7);
#if DUA_MMA_SPLIT
    const float8 r = x - (float8)(f16_round(x.s0), f16_round(x.s1), f16_round(x.s2), f16_round(x.s3),
                                  f16_round(x.s4), f16_round(x.s5), f16_round(x.s6), f16_round(x.s7));
    ql[c][0] = pack_half2(r.s0, r.s1), ql[c][1] = pack_half2(r.s2, r.s3);
    ql[c][2] = pack_half2(r.s4, r.s5), ql[c][3] = pack_half2(r.s6, r.s7);
#endif
  }
  for (int x = 0; x < OT; x++)
    acc[x] = (float4)(0.0f);
#else
  const int slot = lane / LPK, qpart = lane % LPK; /* this lane's key slot and columns, pre-scaled Q */
  kv_f qf[ROWS][VPL], acc[ROWS][VPL];
  float m_r[ROWS], l_r[ROWS];
  for (int r = 0; r < ROWS; r++) {
    const int i = r % TOKENS, pos = len - TOKENS + i;
    for (int v = 0; v < VPL; v++) {
      const long off = offsets.s0 + sidx * q_strides.s0 + (h0 + r / TOKENS) * q_strides.s1 +
                       i * q_strides.s2 + (qpart * VPL + v) * VE;
      qf[r][v] = pos >= 0 ? load_q(q, off, qo_fp16) * scale_log2 : (kv_f)(0.0f);
      acc[r][v] = (kv_f)(0.0f);
    }
    m_r[r] = -INFINITY;
    l_r[r] = 0.0f;
  }
#endif
  barrier(CLK_LOCAL_MEM_FENCE);

  /* ---- 1. mark the units holding a visible key of some row; 2. this split's share of them */
  mark_visible_units(bitmap, len, h0, unit_shift, shape, head_rules, lb, order, rank_range, tid);
  barrier(CLK_LOCAL_MEM_FENCE);
  unit_cursor cur = split_cursor(bitmap, nwords, split, splits);
  const int n_units = cur.n_units, n_iter = (n_units + NW - 1) / NW; /* uniform over the work-group */
  for (int s = 0; s < warp && s < n_units; s++)                      /* this warp starts at unit u0 + w */
    next_unit(bitmap, &cur.cw, &cur.rem);
  __global const int *bt_row = block_table + (long)seq * max_pages;
  const long page_stride = (long)shape.hkv << page_shift, head_rows = (long)hk << page_shift;

  /* ---- 3. the warp's units */
  for (int it = 0; it < n_iter; it++) {
    const int idx = warp + it * NW;
    int u = -1;
    long base = 0;
    if (idx < n_units) {
      u = next_unit(bitmap, &cur.cw, &cur.rem);
      for (int s = 1; s < NW && idx + s < n_units; s++) /* the other warps' units */
        next_unit(bitmap, &cur.cw, &cur.rem);
    }
    const int j0 = u << unit_shift; /* the unit's first token */
    if (u >= 0)
      base = (bt_row[j0 >> page_shift] * page_stride + head_rows + (j0 & ((1 << page_shift) - 1))) * HEAD_DIM;
#if DUA_DECODE_MMA
    float bias_g;
    const int shared_g = u >= 0 && unit_rule(h_g, pos_g, j0, shape, head_rules, paths, lb, level_bias,
                                             bias_stride, offsets.s3, &bias_g);
    if (u < 0)
      bias_g = 0.0f;
    for (int kb = 0; kb < ukeys; kb += 16) { /* 16 keys: two n-tiles of S, one k-step of P V */
      uint kw[2][QC * 4], vw[4][VL * 4];
      for (int nt = 0; nt < 2; nt++) { /* K: key kb + 8 nt + g, columns 32c + 8t .. + 8 */
        const int key = kb + 8 * nt + g, ok = u >= 0 && j0 + key < len;
        for (int c = 0; c < QC; c++) {
          const uint4 w = ok ? KV_LD(kc + base + (long)key * HEAD_DIM + c * 32 + t * 8) : (uint4)(0u);
          kw[nt][4 * c] = w.s0, kw[nt][4 * c + 1] = w.s1, kw[nt][4 * c + 2] = w.s2, kw[nt][4 * c + 3] = w.s3;
        }
      }
      for (int x = 0; x < 4; x++) { /* V: keys kb + 2t + {0, 1, 8, 9}, columns [g OT, g OT + OT) */
        const int key = kb + 2 * t + (x & 1) + 8 * (x >> 1), ok = u >= 0 && j0 + key < len;
        for (int v = 0; v < VL; v++) {
          const uint4 w = ok ? KV_LD(vc + base + (long)key * HEAD_DIM + g * OT + v * 8) : (uint4)(0u);
          vw[x][4 * v] = w.s0, vw[x][4 * v + 1] = w.s1, vw[x][4 * v + 2] = w.s2, vw[x][4 * v + 3] = w.s3;
        }
      }
      /* S = Q K^T: (row g, keys kb + 8 nt + 2t + e) in sc[nt].s{e} */
      float4 sc[2];
      for (int nt = 0; nt < 2; nt++) {
        sc[nt] = (float4)(0.0f);
        for (int c = 0; c < QC; c++) {
          sc[nt] = mma_16816(sc[nt], (uint4)(qa[c][0], 0u, qa[c][1], 0u),
                             (uint2)(kw[nt][4 * c], kw[nt][4 * c + 1]) EMU_ARGS);
          sc[nt] = mma_16816(sc[nt], (uint4)(qa[c][2], 0u, qa[c][3], 0u),
                             (uint2)(kw[nt][4 * c + 2], kw[nt][4 * c + 3]) EMU_ARGS);
#if DUA_MMA_SPLIT
          sc[nt] = mma_16816(sc[nt], (uint4)(ql[c][0], 0u, ql[c][1], 0u),
                             (uint2)(kw[nt][4 * c], kw[nt][4 * c + 1]) EMU_ARGS);
          sc[nt] = mma_16816(sc[nt], (uint4)(ql[c][2], 0u, ql[c][3], 0u),
                             (uint2)(kw[nt][4 * c + 2], kw[nt][4 * c + 3]) EMU_ARGS);
#endif
        }
      }
      /* mask, scale, online softmax of row g (its 16 keys live in the 4 lanes of quad g) */
      float p[4], mt = -INFINITY;
      for (int e = 0; e < 4; e++) {
        const int j = j0 + kb + 8 * (e >> 1) + 2 * t + (e & 1);
        const float d = (e >> 1) ? ((e & 1) ? sc[1].s1 : sc[1].s0) : ((e & 1) ? sc[0].s1 : sc[0].s0);
        const int extra = u >= 0 && dua_token_extra(pos_g, j, shape.window, shape.sink);
        p[e] = u >= 0 && j < len && j <= pos_g && (shared_g || extra)
                   ? d * scale_log2 + (extra ? 0.0f : bias_g)
                   : -INFINITY;
        mt = fmax(mt, p[e]);
      }
      mt = fmax(mt, shfl_xor(mt, 1 EMU_ARGS));
      mt = fmax(mt, shfl_xor(mt, 2 EMU_ARGS));
      const float mn = fmax(m_g, mt), alpha = m_g == -INFINITY ? 1.0f : DUA_EXP2(m_g - mn);
      float sum = 0.0f;
      for (int e = 0; e < 4; e++) {
        p[e] = p[e] == -INFINITY ? 0.0f : DUA_EXP2(p[e] - mn);
        sum += p[e];
      }
      l_g = l_g * alpha + sum;
      m_g = mn;
      /* O += P V: P's A fragment (rows g; keys 2t.., 2t+8..), V's b registers by byte permutes */
      const uint4 pa = (uint4)(pack_half2(p[0], p[1]), 0u, pack_half2(p[2], p[3]), 0u);
#if DUA_MMA_SPLIT
      const uint4 pl = (uint4)(pack_half2(p[0] - f16_round(p[0]), p[1] - f16_round(p[1])), 0u,
                               pack_half2(p[2] - f16_round(p[2]), p[3] - f16_round(p[3])), 0u);
#endif
      for (int x = 0; x < OT; x++) {
        const int w = x >> 1;
        const uint b0 =
            (x & 1) ? (vw[0][w] >> 16) | (vw[1][w] & 0xffff0000u) : (vw[0][w] & 0xffffu) | (vw[1][w] << 16);
        const uint b1 =
            (x & 1) ? (vw[2][w] >> 16) | (vw[3][w] & 0xffff0000u) : (vw[2][w] & 0xffffu) | (vw[3][w] << 16);
        acc[x] = mma_16816(acc[x] * alpha, pa, (uint2)(b0, b1)EMU_ARGS);
#if DUA_MMA_SPLIT
        acc[x] = mma_16816(acc[x], pl, (uint2)(b0, b1)EMU_ARGS);
#endif
      }
    }
#else
    /* per row: does the unit's block share the row's tree (else only window/sink keys), and its bias */
    int shared_r[ROWS];
    float bias_r[ROWS];
    for (int r = 0; r < ROWS; r++) {
      shared_r[r] = u >= 0 && unit_rule(h0 + r / TOKENS, len - TOKENS + r % TOKENS, j0, shape, head_rules,
                                        paths, lb, level_bias, bias_stride, offsets.s3, &bias_r[r]);
      if (u < 0)
        bias_r[r] = 0.0f;
    }
    for (int kb = 0; kb < ukeys; kb += KPW * UNROLL) {
      kv_raw kr[UNROLL][VPL], vr[UNROLL][VPL];
      int jj[UNROLL];
      for (int x = 0; x < UNROLL; x++) {
        const int key = kb + x * KPW + slot, j = (u << unit_shift) + key;
        const int ok = u >= 0 && key < ukeys && j < len;
        jj[x] = ok ? j : -1;
        for (int v = 0; v < VPL; v++) {
          kr[x][v] = vr[x][v] = (kv_raw)(0);
          if (ok) {
            const long at = base + (long)key * HEAD_DIM + (qpart * VPL + v) * VE;
            kr[x][v] = KV_LD(kc + at);
            vr[x][v] = KV_LD(vc + at);
          }
        }
      }
      for (int r = 0; r < ROWS; r++) {
        const int pos = len - TOKENS + r % TOKENS;
        float sc[UNROLL], mt = -INFINITY;
        for (int x = 0; x < UNROLL; x++) {
          float part = 0.0f;
          for (int v = 0; v < VPL; v++)
            part += dot_kv(qf[r][v], kv_cvt(kr[x][v]));
          const float d = key_sum(part EMU_ARGS);
          const int j = jj[x], extra = j >= 0 && dua_token_extra(pos, j, shape.window, shape.sink);
          sc[x] = j >= 0 && j <= pos && (shared_r[r] || extra) ? d + (extra ? 0.0f : bias_r[r]) : -INFINITY;
          mt = fmax(mt, sc[x]);
        }
        const float mo = m_r[r], mn = fmax(mo, mt);
        const float alpha = mo == -INFINITY ? 1.0f : DUA_EXP2(mo - mn);
        float sum = 0.0f;
        for (int v = 0; v < VPL; v++)
          acc[r][v] *= alpha;
        for (int x = 0; x < UNROLL; x++) {
          const float p = sc[x] == -INFINITY ? 0.0f : DUA_EXP2(sc[x] - mn);
          for (int v = 0; v < VPL; v++)
            acc[r][v] = fma((kv_f)(p), kv_cvt(vr[x][v]), acc[r][v]);
          sum += p;
        }
        l_r[r] = l_r[r] * alpha + sum;
        m_r[r] = mn;
      }
    }
#endif
  }

#if DUA_DECODE_MMA
  /* ---- 4. the quad's sums of row g, then the warps (local memory) */
  l_g += shfl_xor(l_g, 1 EMU_ARGS);
  l_g += shfl_xor(l_g, 2 EMU_ARGS);
  if (row_ok) {
    __local float *red_g = red + (warp * ROWS + g) * HEAD_DIM;
    for (int x = 0; x < OT; x++) {
      red_g[2 * t * OT + x] = acc[x].s0;
      red_g[(2 * t + 1) * OT + x] = acc[x].s1;
    }
    if (t == 0) {
      red_ml[2 * (warp * ROWS + g)] = m_g;
      red_ml[2 * (warp * ROWS + g) + 1] = l_g;
    }
  }
#else
  /* ---- 4. merge the key slots of the warp (shuffles), then the warps (local memory) */
  for (int r = 0; r < ROWS; r++)
    for (int msk = LPK; msk < 32; msk <<= 1) {
      const float mo = shfl_xor(m_r[r], msk EMU_ARGS), lo = shfl_xor(l_r[r], msk EMU_ARGS);
      const float mn = fmax(m_r[r], mo);
      const float wa = m_r[r] == -INFINITY ? 0.0f : DUA_EXP2(m_r[r] - mn),
                  wb = mo == -INFINITY ? 0.0f : DUA_EXP2(mo - mn);
      for (int v = 0; v < VPL; v++)
        acc[r][v] = acc[r][v] * wa + shfl_vec(acc[r][v], msk EMU_ARGS) * wb;
      l_r[r] = l_r[r] * wa + lo * wb;
      m_r[r] = mn;
    }
  if (slot == 0)
    for (int r = 0; r < ROWS; r++) {
      for (int v = 0; v < VPL; v++)
#if DUA_FP16
        vstore8(acc[r][v], 0, red + (warp * ROWS + r) * HEAD_DIM + (qpart * VPL + v) * VE);
#else
        vstore4(acc[r][v], 0, red + (warp * ROWS + r) * HEAD_DIM + (qpart * VPL + v) * VE);
#endif
      if (qpart == 0) {
        red_ml[2 * (warp * ROWS + r)] = m_r[r];
        red_ml[2 * (warp * ROWS + r) + 1] = l_r[r];
      }
    }
#endif
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int it = tid; it < ROWS * (HEAD_DIM / 4); it += NT) {
    const int r = it / (HEAD_DIM / 4), c = (it % (HEAD_DIM / 4)) * 4, h = h0 + r / TOKENS, i = r % TOKENS;
    float mx = -INFINITY;
    for (int w = 0; w < NW; w++)
      mx = fmax(mx, red_ml[2 * (w * ROWS + r)]);
    float4 s = (float4)(0.0f);
    float l = 0.0f;
    for (int w = 0; w < NW; w++) {
      const float mw = red_ml[2 * (w * ROWS + r)], ww = mw == -INFINITY ? 0.0f : DUA_EXP2(mw - mx);
      s += vload4(0, red + (w * ROWS + r) * HEAD_DIM + c) * ww;
      l += red_ml[2 * (w * ROWS + r) + 1] * ww;
    }
    write_out4(s, l, mx, h, i, c, sidx, split, splits, shape.hq, o, lse, part, part_lse_offset, o_strides,
               lse_strides, offsets, qo_fp16, has_lse);
  }
}
