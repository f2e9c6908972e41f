/* nv_mma_ops.cl: the warp-level NVIDIA instructions dua's tensor-core kernels share (inline PTX: ldmatrix,
 * mma.sync f16 and tf32, shfl.sync, cvt to f16x2, ex2.approx), each with a plain OpenCL emulation over local
 * memory (DUA_MMA_EMULATE=1) so that a kernel's fragment logic can be checked on any device (PoCL); tests
 * only. Built before attn_fwd_mma.cl and attn_decode_warp.cl. A kernel that emulates declares EMU_LOCALS with
 * THREADS (its work-group size) defined, and passes EMU_ARGS to the helpers. Fragment layouts:
 * shared/NV-PTX-COOKBOOK.md. */

#ifndef DUA_MMA_EMULATE
#define DUA_MMA_EMULATE 0
#endif

#if DUA_MMA_EMULATE
/* Scratch of the emulated warp instructions: one slot per work-item, declared by each kernel (EMU_LOCALS). */
#define EMU_LOCALS                                                                                           \
  __local int emu_i[THREADS];                                                                                \
  __local uint emu_u[THREADS * 6];                                                                           \
  __local float emu_f[THREADS];
#define EMU_PARAMS , __local int *emu_i, __local uint *emu_u, __local float *emu_f
#define EMU_ARGS , emu_i, emu_u, emu_f
#else
#define EMU_LOCALS
#define EMU_PARAMS
#define EMU_ARGS
inline uint smem_addr(__local const void *p) {
  return (uint)(size_t)p;
}
#endif

/* ldmatrix .x4: lane l gives the local offset (halves) of row l % 8 of 8x8 matrix l / 8; register i receives
 * (row g, columns 2t, 2t+1) of matrix i (lane = 4g + t), lower column in the low 16 bits. */
inline uint4 ldsm_x4(__local const ushort *base, int off EMU_PARAMS) {
  uint4 r;
#if DUA_MMA_EMULATE
  const int tid = get_local_id(0), w0 = tid & ~31, g = (tid & 31) >> 2, t = tid & 3;
  emu_i[tid] = off;
  barrier(CLK_LOCAL_MEM_FENCE);
  uint v[4];
  for (int i = 0; i < 4; i++) {
    const int ro = emu_i[w0 + 8 * i + g];
    v[i] = (uint)base[ro + 2 * t] | ((uint)base[ro + 2 * t + 1] << 16);
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  r = (uint4)(v[0], v[1], v[2], v[3]);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.s0), "=r"(r.s1), "=r"(r.s2), "=r"(r.s3)
               : "r"(smem_addr(base + off))
               : "memory");
#endif
  return r;
}

/* ldmatrix .x4 .trans: same addressing; register i receives (rows 2t, 2t+1; column g) of matrix i. */
inline uint4 ldsm_x4_trans(__local const ushort *base, int off EMU_PARAMS) {
  uint4 r;
#if DUA_MMA_EMULATE
  const int tid = get_local_id(0), w0 = tid & ~31, g = (tid & 31) >> 2, t = tid & 3;
  emu_i[tid] = off;
  barrier(CLK_LOCAL_MEM_FENCE);
  uint v[4];
  for (int i = 0; i < 4; i++)
    v[i] = (uint)base[emu_i[w0 + 8 * i + 2 * t] + g] | ((uint)base[emu_i[w0 + 8 * i + 2 * t + 1] + g] << 16);
  barrier(CLK_LOCAL_MEM_FENCE);
  r = (uint4)(v[0], v[1], v[2], v[3]);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.s0), "=r"(r.s1), "=r"(r.s2), "=r"(r.s3)
               : "r"(smem_addr(base + off))
               : "memory");
#endif
  return r;
}

#if DUA_MMA_EMULATE
/* Emulated mma: every work-item's A (4 registers) and B (2) fragments into emu_u[6 tid ..], then a barrier.
 */
inline void emu_stage(uint4 a, uint2 b, __local uint *emu_u) {
  const int tid = get_local_id(0);
  vstore4(a, 0, emu_u + 6 * tid);
  vstore2(b, 0, emu_u + 6 * tid + 4);
  barrier(CLK_LOCAL_MEM_FENCE);
}
#endif

/* D = A B + D, m16n8k16, A 16x16 row-major f16, B 16x8 "col" f16, D 16x8 f32 (lane = 4g + t):
 * a = {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}, b = {(k 2t.., n g), (k 2t+8.., n g)},
 * d = {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}. */
inline float4 mma_16816(float4 d, uint4 a, uint2 b EMU_PARAMS) {
#if DUA_MMA_EMULATE
  const int tid = get_local_id(0), w0 = tid & ~31, g = (tid & 31) >> 2, t = tid & 3;
  emu_stage(a, b, emu_u);
  __local const half *hv = (__local const half *)emu_u; /* little-endian: half 2i is the low half of uint i */
  float out[4];
  for (int e = 0; e < 4; e++) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    float acc = 0.0f;
    for (int k = 0; k < 16; k++) {
      const int a_lane = 4 * (row & 7) + ((k & 7) >> 1), a_reg = (row >> 3) + 2 * (k >> 3);
      const int b_lane = 4 * col + ((k & 7) >> 1), b_reg = 4 + (k >> 3);
      acc += vload_half(2 * (6 * (w0 + a_lane) + a_reg) + (k & 1), hv) *
             vload_half(2 * (6 * (w0 + b_lane) + b_reg) + (k & 1), hv);
    }
    out[e] = acc;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  return d + (float4)(out[0], out[1], out[2], out[3]);
#else
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d.s0), "+f"(d.s1), "+f"(d.s2), "+f"(d.s3)
               : "r"(a.s0), "r"(a.s1), "r"(a.s2), "r"(a.s3), "r"(b.s0), "r"(b.s1));
  return d;
#endif
}

/* D = A B + D, m16n8k8, A 16x8 row-major tf32, B 8x8 "col" tf32, D 16x8 f32 (lane = 4g + t): a = {(g, t),
 * (g+8, t), (g, t+4), (g+8, t+4)}, b = {(k t, n g), (k t+4, n g)}, d as mma_16816. The tensor core reads
 * the upper 19 bits of each operand; the emulation does the same. */
inline float4 mma_1688(float4 d, uint4 a, uint2 b EMU_PARAMS) {
#if DUA_MMA_EMULATE
  const int tid = get_local_id(0), w0 = tid & ~31, g = (tid & 31) >> 2, t = tid & 3;
  emu_stage(a, b, emu_u);
  float out[4];
  for (int e = 0; e < 4; e++) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    float acc = 0.0f;
    for (int k = 0; k < 8; k++) {
      const uint av = emu_u[6 * (w0 + 4 * (row & 7) + (k & 3)) + (row >> 3) + 2 * (k >> 2)];
      const uint bv = emu_u[6 * (w0 + 4 * col + (k & 3)) + 4 + (k >> 2)];
      acc += as_float(av & 0xffffe000u) * as_float(bv & 0xffffe000u);
    }
    out[e] = acc;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
  return d + (float4)(out[0], out[1], out[2], out[3]);
#else
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d.s0), "+f"(d.s1), "+f"(d.s2), "+f"(d.s3)
               : "r"(a.s0), "r"(a.s1), "r"(a.s2), "r"(a.s3), "r"(b.s0), "r"(b.s1));
  return d;
#endif
}

/* An fp32 bit pattern rounded to tf32 (nearest, ties away from zero) as the tensor core reads it: half a tf32
 * ulp added below its 10-bit mantissa (a finite value past the tf32 range becomes infinite, as it should). */
inline uint tf32_bits(uint x) {
  return x + 0x1000u;
}

#if DUA_MMA_EMULATE
/* x of lane src of this warp, through local memory (every work-item of the work-group calls it) */
inline float shfl_emulated(float x, int src EMU_PARAMS) {
  const int tid = get_local_id(0);
  emu_f[tid] = x;
  barrier(CLK_LOCAL_MEM_FENCE);
  const float y = emu_f[(tid & ~31) + src];
  barrier(CLK_LOCAL_MEM_FENCE);
  return y;
}
#endif

/* Butterfly exchange with lane ^ mask (mask 1 or 2: inside a quad, the 4 lanes holding one C-fragment row).
 */
inline float shfl_xor(float x, int mask EMU_PARAMS) {
#if DUA_MMA_EMULATE
  return shfl_emulated(x, (get_local_id(0) & 31) ^ mask EMU_ARGS);
#else
  float y;
  asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(y) : "f"(x), "r"(mask));
  return y;
#endif
}

/* 1 where c is nonzero in any lane of the warp, the same answer in every lane (emulated: an OR over the
 * butterfly shuffles). */
inline int warp_any(int c EMU_PARAMS) {
#if DUA_MMA_EMULATE
  float v = c ? 1.0f : 0.0f;
  for (int mask = 16; mask; mask >>= 1)
    v = fmax(v, shfl_xor(v, mask EMU_ARGS));
  return v > 0.0f;
#else
  int r;
  asm volatile("{\n.reg .pred p, q;\nsetp.ne.b32 p, %1, 0;\nvote.sync.any.pred q, p, 0xffffffff;\n"
               "selp.b32 %0, 1, 0, q;\n}\n"
               : "=r"(r)
               : "r"(c));
  return r;
#endif
}

/* x of lane src of this warp. */
inline float shfl_idx(float x, int src EMU_PARAMS) {
#if DUA_MMA_EMULATE
  return shfl_emulated(x, src EMU_ARGS);
#else
  float y;
  asm volatile("shfl.sync.idx.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(y) : "f"(x), "r"(src));
  return y;
#endif
}

/* Two floats -> two f16 (round to nearest even) in one register, lo in the low 16 bits. */
inline uint pack_half2(float lo, float hi) {
#if DUA_MMA_EMULATE
  ushort2 hh;
  vstore_half2_rte((float2)(lo, hi), 0, (__private half *)&hh);
  return (uint)hh.x | ((uint)hh.y << 16);
#else
  uint r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#endif
}

inline float fast_exp2(float x) {
#if DUA_MMA_EMULATE
  return native_exp2(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); /* ex2(-inf) = +0 */
  return y;
#endif
}
