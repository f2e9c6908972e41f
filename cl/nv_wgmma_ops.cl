/* nv_wgmma_ops.cl: Hopper's warpgroup MMA (wgmma.mma_async, sm_90a) for dua's tensor-core kernels, with a
 * plain OpenCL emulation (DUA_MMA_EMULATE=1, tests only). Built after nv_mma_ops.cl.
 *
 * NVIDIA's OpenCL compiler targets sm_90, where wgmma does not assemble; so each Hopper-only instruction is
 * written as a PTX comment "// DUA_SM90A <instruction>" inside the inline asm. The compiler substitutes the
 * operands' registers into it like into any asm text; the runtime (program.c, DUA_SM90A=1 in the build
 * options) then uncomments the marked lines, retargets the PTX to sm_90a and builds it again from that
 * binary. bench/wgmma_probe.c established the route on an H100.
 *
 * One call = one warpgroup (4 warps, 128 work-items: dua's work-groups are one) computes D (64 x 64, f32)
 * += A (64 x 64, f16) B (64 x 64, f16) in four k-steps of 16, all inside one asm statement (fence, four
 * wgmma, commit, wait; the _pair helpers at the end: two such products, eight wgmma, one commit and wait;
 * the head-dim-128 helpers: products over two 64-column panels, m64n32 for 32-row query tiles, up to 16 wgmma
 * per statement), so the compiler never sees the accumulators while the tensor core owns them. The forward's
 * m-tile pipeline (the last three helpers) returns with one commit group in flight; its accumulators and A
 * registers are then operands of the statement that waits for them, so the compiler neither reads nor reuses
 * them before. D is held as 8 mma.sync C tiles of 8 columns per warp (warp w of the warpgroup: rows 16 w .. +
 * 15; d[i] = rows g, g, g + 8, g + 8 x columns 8 i + 2 t, + 1).
 *
 * Operands in local memory are tiles of 64-half (128-byte) rows, 1024-byte aligned, in the 128-byte swizzle
 * the tensor core reads without bank conflicts: 16-byte chunk c of row r is stored at chunk c ^ (r % 8)
 * (WGMMA_TILE_AT). The same rows stay whole for cp.async: the 8 work-items that copy one 128-byte row write
 * 8 different chunks of one 128-byte row of local memory. Descriptors: 128-byte swizzle, 1024 bytes between
 * groups of 8 rows (and the same number as the other offset, which these 64-wide tiles never use); a k-step
 * of a K-major operand starts 32 bytes further along the rows, one of an N-major operand 16 rows further.
 *
 * The local data must be visible to the tensor core's (async) proxy: writers call wgmma_proxy_fence() after
 * their writes land and before the barrier that precedes the wgmma. */

/* Offset (halves) of element (r, c) of a swizzled tile of 64-half rows; WGMMA_PANEL: halves of one 64 x 64
 * tile (a 64-row tile of head dim 128 is two, columns 64.. in the second). */
#define WGMMA_TILE_AT(r, c) ((r)*64 + (((((c) >> 3) ^ ((r)&7))) << 3) + ((c)&7))
#define WGMMA_PANEL 4096

#if DUA_MMA_EMULATE
inline void wgmma_proxy_fence(void) {}

inline float wgmma_tile_elem(__local const ushort *tile, int r, int c) {
  return vload_half(WGMMA_TILE_AT(r, c), (__local const half *)tile);
}

/* k_steps k-steps of n_tiles n-tiles (8 columns each) as emulated mma.sync m16n8k16 per warp, with A
 * fragments a[kk] and B fragments b = {(k 2t, 2t + 1; n g), (k 2t + 8, 2t + 9; n g)} of n-tile i gathered
 * from the tile: K-major (row n holds B's column n) or N-major (row k holds B's row k). */
inline void wgmma_emulated_kn(float4 *d, const uint4 *a, __local const ushort *b, int n_major, int k_steps,
                              int n_tiles EMU_PARAMS) {
  const int lane = get_local_id(0) & 31, g = lane >> 2, t = lane & 3;
  for (int kk = 0; kk < k_steps; kk++)
    for (int i = 0; i < n_tiles; i++) {
      float v[4];
      for (int e = 0; e < 4; e++) {
        const int k = 16 * kk + 2 * t + (e & 1) + 8 * (e >> 1), n = 8 * i + g;
        v[e] = n_major ? wgmma_tile_elem(b, k, n) : wgmma_tile_elem(b, n, k);
      }
      d[i] = mma_16816(d[i], a[kk], (uint2)(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]))EMU_ARGS);
    }
}

/* One m64n64k16 product's four k-steps */
inline void wgmma_emulated(float4 *d, const uint4 *a, __local const ushort *b, int n_major EMU_PARAMS) {
  wgmma_emulated_kn(d, a, b, n_major, 4, 8 EMU_ARGS);
}

/* The A fragment (mma.sync m16n8k16 layout, this warp's rows) of k-step kk of a K-major tile (row m holds A's
 * row m). */
inline uint4 wgmma_a_fragment(__local const ushort *a, int kk) {
  const int lane = get_local_id(0) & 31, r = 16 * ((get_local_id(0) >> 5) & 3) + (lane >> 2);
  const int c = 16 * kk + 2 * (lane & 3);
  return (uint4)(pack_half2(wgmma_tile_elem(a, r, c), wgmma_tile_elem(a, r, c + 1)),
                 pack_half2(wgmma_tile_elem(a, r + 8, c), wgmma_tile_elem(a, r + 8, c + 1)),
                 pack_half2(wgmma_tile_elem(a, r, c + 8), wgmma_tile_elem(a, r, c + 9)),
                 pack_half2(wgmma_tile_elem(a, r + 8, c + 8), wgmma_tile_elem(a, r + 8, c + 9)));
}
#else
inline void wgmma_proxy_fence(void) {
  asm volatile("// DUA_SM90A fence.proxy.async.shared::cta;\n" ::: "memory");
}

/* The matrix descriptor of a swizzled tile: start address >> 4, both byte offsets 1024 (>> 4), 128-byte
 * swizzle (layout type 1 in bits 62-63). */
inline ulong wgmma_desc(__local const ushort *tile) {
  return (ulong)((smem_addr(tile) >> 4) & 0x3FFFu) | ((ulong)(1024 >> 4) << 16) | ((ulong)(1024 >> 4) << 32) |
         ((ulong)1 << 62);
}
#endif

/* The 32 accumulator operands of one m64n64 wgmma in the asm statements below (%0 .. %31 = d[0].s0 ..
 * d[7].s3). */
#define WGMMA_D64                                                                                            \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                  \
  "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"

/* The asm output list matching WGMMA_D64: the 32 accumulators of d[0..7], read and written. */
#define WGMMA_D64_OPERANDS(d)                                                                                \
  "+f"(d[0].s0), "+f"(d[0].s1), "+f"(d[0].s2), "+f"(d[0].s3), "+f"(d[1].s0), "+f"(d[1].s1), "+f"(d[1].s2),   \
      "+f"(d[1].s3), "+f"(d[2].s0), "+f"(d[2].s1), "+f"(d[2].s2), "+f"(d[2].s3), "+f"(d[3].s0),              \
      "+f"(d[3].s1), "+f"(d[3].s2), "+f"(d[3].s3), "+f"(d[4].s0), "+f"(d[4].s1), "+f"(d[4].s2),              \
      "+f"(d[4].s3), "+f"(d[5].s0), "+f"(d[5].s1), "+f"(d[5].s2), "+f"(d[5].s3), "+f"(d[6].s0),              \
      "+f"(d[6].s1), "+f"(d[6].s2), "+f"(d[6].s3), "+f"(d[7].s0), "+f"(d[7].s1), "+f"(d[7].s2),              \
      "+f"(d[7].s3)

/* The second accumulator set of the paired statements below (%32 .. %63 = d[0].s0 .. d[7].s3 of the second
 * product). */
#define WGMMA_D64_SECOND                                                                                     \
  "{%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                                        \
  "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"

/* Input operands of the statements below: the 16 registers of an A operand's four k-steps (a[kk], mma.sync
 * A fragments), and the four k-steps' descriptors of a tile whose first is d (ks: one k-step, declared by the
 * caller). */
#define WGMMA_A_FRAGMENTS(a)                                                                                 \
  "r"(a[0].s0), "r"(a[0].s1), "r"(a[0].s2), "r"(a[0].s3), "r"(a[1].s0), "r"(a[1].s1), "r"(a[1].s2),          \
      "r"(a[1].s3), "r"(a[2].s0), "r"(a[2].s1), "r"(a[2].s2), "r"(a[2].s3), "r"(a[3].s0), "r"(a[3].s1),      \
      "r"(a[3].s2), "r"(a[3].s3)
#define WGMMA_DESC4(d) "l"(d), "l"(d + ks), "l"(d + 2 * ks), "l"(d + 3 * ks)

/* The asm text of the statements below. WGMMA_BEGIN(P): predicate p from operand %P (1: D = A B + D), the
 * warp converged, the fence; WGMMA_COMMIT; WGMMA_WAIT(N): until at most N groups are pending, and the end. */
#define WGMMA_BEGIN(P)                                                                                       \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %" #P ", 0;\nbar.warp.sync -1;\n"                                        \
  "// DUA_SM90A wgmma.fence.sync.aligned;\n"
#define WGMMA_COMMIT "// DUA_SM90A wgmma.commit_group.sync.aligned;\n"
#define WGMMA_WAIT(N) "// DUA_SM90A wgmma.wait_group.sync.aligned " #N ";\n}\n"
/* One k-step into accumulators D (WGMMA_D64 or WGMMA_D64_SECOND): SS, A and B both K-major tiles by
 * descriptor (operands %A, %B); RS, A from registers %R0 .. %R3 and an N-major B by descriptor %B. */
#define WGMMA_OP "// DUA_SM90A wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
#define WGMMA_SS(D, A, B) WGMMA_OP D ", %" #A ", %" #B ", p, 1, 1, 0, 0;\n"
#define WGMMA_RS(D, R0, R1, R2, R3, B)                                                                       \
  WGMMA_OP D ", {%" #R0 ",%" #R1 ",%" #R2 ",%" #R3 "}, %" #B ", p, 1, 1, 1;\n"
/* The four k-steps of one product: SS with descriptors %A0.. and %B0.. (consecutive), RS with A fragments
 * from %R (16 consecutive registers) and descriptors from %B0. Operand numbers are spelled out (the
 * preprocessor cannot add). */
#define WGMMA_SS4(D, A0, A1, A2, A3, B0, B1, B2, B3)                                                         \
  WGMMA_SS(D, A0, B0) WGMMA_SS(D, A1, B1) WGMMA_SS(D, A2, B2) WGMMA_SS(D, A3, B3)
#define WGMMA_RS4(D, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, R11, R12, R13, R14, R15, B0, B1, B2, B3)   \
  WGMMA_RS(D, R0, R1, R2, R3, B0)                                                                            \
  WGMMA_RS(D, R4, R5, R6, R7, B1) WGMMA_RS(D, R8, R9, R10, R11, B2) WGMMA_RS(D, R12, R13, R14, R15, B3)

/* D += A B^T with A (64 x 64, row m = A's row m) and B (64 x 64, row n = B^T's row n) both K-major tiles in
 * local memory (imm-trans-a 0, imm-trans-b 0): S = Q K^T. A stays in local memory: ptxas (CUDA 13) treated
 * the registers of an A operand read by wgmma as free once the wgmma was issued, so a Q held in registers
 * across the key loop was overwritten by the softmax (bench/NOTES-mma.md). Operands after the accumulators:
 * %32 .. %35 A's descriptors, %36 .. %39 B's, %40 = 1 (the scale-d predicate: D = A B + D). */
inline void wgmma_ss_kmajor(float4 *d, __local const ushort *a, __local const ushort *b EMU_PARAMS) {
#if DUA_MMA_EMULATE
  uint4 af[4];
  for (int kk = 0; kk < 4; kk++)
    af[kk] = wgmma_a_fragment(a, kk);
  wgmma_emulated(d, af, b, 0 EMU_ARGS);
#else
  const ulong da = wgmma_desc(a), db = wgmma_desc(b), ks = 32 >> 4; /* a k-step: 32 bytes along the rows */
  asm volatile(WGMMA_BEGIN(40) WGMMA_SS4(WGMMA_D64, 32, 33, 34, 35, 36, 37, 38, 39) WGMMA_COMMIT WGMMA_WAIT(0)
               : WGMMA_D64_OPERANDS(d)
               : WGMMA_DESC4(da), WGMMA_DESC4(db), "r"(1)
               : "memory");
#endif
}

/* D += A B with A in registers (a[kk]: this warp's mma.sync m16n8k16 A fragment of k-step kk) and B (64 x 64,
 * row k = B's row k) an N-major tile in local memory (imm-trans-b 1): O += P V. Operands after the
 * accumulators: %32 .. %47 the A fragments, %48 .. %51 B's descriptors, %52 = 1. */
inline void wgmma_rs_nmajor(float4 *d, const uint4 *a, __local const ushort *b EMU_PARAMS) {
#if DUA_MMA_EMULATE
  wgmma_emulated(d, a, b, 1 EMU_ARGS);
#else
  const ulong db = wgmma_desc(b), ks = 2048 >> 4; /* a k-step: 16 rows */
  asm volatile(WGMMA_BEGIN(52) WGMMA_RS4(WGMMA_D64, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45,
                                         46, 47, 48, 49, 50, 51) WGMMA_COMMIT WGMMA_WAIT(0)
               : WGMMA_D64_OPERANDS(d)
               : WGMMA_A_FRAGMENTS(a), WGMMA_DESC4(db), "r"(1)
               : "memory");
#endif
}

/* Two independent products of wgmma_ss_kmajor, d0 += a0 b0^T and d1 += a1 b1^T, in one asm statement: eight
 * wgmma in one commit group, one wait (the backward's S and dP, whose operands are all in local memory); with
 * issue_only, two commit groups and a return at once (the forward's two m-tiles: wgmma_wait_first_of_pair
 * waits for d0, then d1's registers are tied to the statement that waits for them; the backward's dK/dV pass:
 * wgmma_wait_all_of_pair). Operands after the 64
 * accumulators: %64 .. %67 a0's descriptors, %68 .. %71 b0's, %72 .. %75 a1's, %76 .. %79 b1's, %80 = 1. */
inline void wgmma_ss_kmajor_two(float4 *d0, __local const ushort *a0, __local const ushort *b0, float4 *d1,
                                __local const ushort *a1, __local const ushort *b1,
                                const int issue_only EMU_PARAMS) {
#if DUA_MMA_EMULATE
  wgmma_ss_kmajor(d0, a0, b0 EMU_ARGS);
  wgmma_ss_kmajor(d1, a1, b1 EMU_ARGS);
#else
  const ulong da0 = wgmma_desc(a0), db0 = wgmma_desc(b0), da1 = wgmma_desc(a1), db1 = wgmma_desc(b1);
  const ulong ks = 32 >> 4;
#define SS_TWO_OPERANDS                                                                                      \
  : WGMMA_D64_OPERANDS(d0), WGMMA_D64_OPERANDS(d1)                                                           \
  : WGMMA_DESC4(da0), WGMMA_DESC4(db0), WGMMA_DESC4(da1), WGMMA_DESC4(db1), "r"(1)                          \
  : "memory"
#define SS_TWO_FIRST WGMMA_SS4(WGMMA_D64, 64, 65, 66, 67, 68, 69, 70, 71)
#define SS_TWO_SECOND WGMMA_SS4(WGMMA_D64_SECOND, 72, 73, 74, 75, 76, 77, 78, 79)
  if (issue_only)
    asm volatile(WGMMA_BEGIN(80) SS_TWO_FIRST WGMMA_COMMIT SS_TWO_SECOND WGMMA_COMMIT "}\n" SS_TWO_OPERANDS);
  else
    asm volatile(WGMMA_BEGIN(80) SS_TWO_FIRST SS_TWO_SECOND WGMMA_COMMIT WGMMA_WAIT(0) SS_TWO_OPERANDS);
#undef SS_TWO_FIRST
#undef SS_TWO_SECOND
#undef SS_TWO_OPERANDS
#endif
}

inline void wgmma_ss_kmajor_pair(float4 *d0, __local const ushort *a0, __local const ushort *b0, float4 *d1,
                                 __local const ushort *a1, __local const ushort *b1 EMU_PARAMS) {
  wgmma_ss_kmajor_two(d0, a0, b0, d1, a1, b1, 0 EMU_ARGS);
}

/* The forward's two m-tiles in a pipeline (MT 2): S0 = Q0 K^T and S1 = Q1 K^T issued, returning at once;
 * wgmma_wait_first_of_pair returns once S0 is done (the walk and the next tile's copies run meanwhile). */
inline void wgmma_ss_kmajor_pair_issue(float4 *d0, __local const ushort *a0, __local const ushort *b0,
                                       float4 *d1, __local const ushort *a1,
                                       __local const ushort *b1 EMU_PARAMS) {
  wgmma_ss_kmajor_two(d0, a0, b0, d1, a1, b1, 1 EMU_ARGS);
}

/* Waits for wgmma_ss_kmajor_pair_issue's groups: until at most N commit groups are pending, d0 and d1 (their
 * accumulators) tied to the statement, so that no read of them moves above it and their registers are not
 * reused while in flight. */
#define WGMMA_WAIT_PAIR(N, d0, d1)                                                                           \
  asm volatile("{\n// DUA_SM90A wgmma.wait_group.sync.aligned " #N ";\n}\n"                                  \
               : WGMMA_D64_OPERANDS(d0), WGMMA_D64_OPERANDS(d1)                                              \
               :                                                                                             \
               : "memory")

/* Until the older of the two is done (S0 of the forward's pair). */
inline void wgmma_wait_first_of_pair(float4 *d0, float4 *d1 EMU_PARAMS) {
#if !DUA_MMA_EMULATE
  WGMMA_WAIT_PAIR(1, d0, d1);
#endif
}

/* Until both are done (the backward's S^T and dP^T). */
inline void wgmma_wait_all_of_pair(float4 *d0, float4 *d1 EMU_PARAMS) {
#if !DUA_MMA_EMULATE
  WGMMA_WAIT_PAIR(0, d0, d1);
#endif
}

/* Two independent products of wgmma_rs_nmajor, d0 += a0 b0 and d1 += a1 b1, in one asm statement (the
 * backward's dV += P^T dO and dK += dS^T Q). Operands after the 64
 * accumulators: %64 .. %79 a0's fragments, %80 .. %95 a1's, %96 .. %99 b0's descriptors, %100 .. %103 b1's,
 * %104 = 1. */
inline void wgmma_rs_nmajor_pair(float4 *d0, const uint4 *a0, __local const ushort *b0, float4 *d1,
                                 const uint4 *a1, __local const ushort *b1 EMU_PARAMS) {
#if DUA_MMA_EMULATE
  wgmma_rs_nmajor(d0, a0, b0 EMU_ARGS);
  wgmma_rs_nmajor(d1, a1, b1 EMU_ARGS);
#else
  const ulong db0 = wgmma_desc(b0), db1 = wgmma_desc(b1), ks = 2048 >> 4;
  asm volatile(WGMMA_BEGIN(104) WGMMA_RS4(WGMMA_D64, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77,
                                          78, 79, 96, 97, 98, 99)
                   WGMMA_RS4(WGMMA_D64_SECOND, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
                             100, 101, 102, 103) WGMMA_COMMIT WGMMA_WAIT(0)
               : WGMMA_D64_OPERANDS(d0), WGMMA_D64_OPERANDS(d1)
               : WGMMA_A_FRAGMENTS(a0), WGMMA_A_FRAGMENTS(a1), WGMMA_DESC4(db0), WGMMA_DESC4(db1), "r"(1)
               : "memory");
#endif
}

/* O0 += P0 V issued as its own commit group, returning once the oldest pending group (S1 of
 * wgmma_ss_kmajor_pair_issue) is done; d1 names S1's accumulators so that no read of them moves above. */
inline void wgmma_rs_nmajor_then_wait1(float4 *d0, const uint4 *a0, __local const ushort *b0,
                                       float4 *d1 EMU_PARAMS) {
#if DUA_MMA_EMULATE
  wgmma_rs_nmajor(d0, a0, b0 EMU_ARGS);
#else
  const ulong db0 = wgmma_desc(b0), ks = 2048 >> 4;
  asm volatile(WGMMA_BEGIN(84) WGMMA_RS4(WGMMA_D64, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77,
                                         78, 79, 80, 81, 82, 83) WGMMA_COMMIT WGMMA_WAIT(1)
               : WGMMA_D64_OPERANDS(d0), WGMMA_D64_OPERANDS(d1)
               : WGMMA_A_FRAGMENTS(a0), WGMMA_DESC4(db0), "r"(1)
               : "memory");
#endif
}

/* O1 += P1 V as the last commit group, then every group done; d0 and a0 (O0 += P0 V's accumulators and A
 * fragments, in flight until here) are tied to this statement so that their registers stay untouched. */
#define WGMMA_A_FRAGMENTS_RW(a)                                                                              \
  "+r"(a[0].s0), "+r"(a[0].s1), "+r"(a[0].s2), "+r"(a[0].s3), "+r"(a[1].s0), "+r"(a[1].s1), "+r"(a[1].s2),   \
      "+r"(a[1].s3), "+r"(a[2].s0), "+r"(a[2].s1), "+r"(a[2].s2), "+r"(a[2].s3), "+r"(a[3].s0),              \
      "+r"(a[3].s1), "+r"(a[3].s2), "+r"(a[3].s3)
inline void wgmma_rs_nmajor_then_wait0(float4 *d1, const uint4 *a1, __local const ushort *b1, float4 *d0,
                                       uint4 *a0 EMU_PARAMS) {
#if DUA_MMA_EMULATE
  wgmma_rs_nmajor(d1, a1, b1 EMU_ARGS);
#else
  const ulong db1 = wgmma_desc(b1), ks = 2048 >> 4;
  asm volatile(WGMMA_BEGIN(100) WGMMA_RS4(WGMMA_D64, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93,
                                          94, 95, 96, 97, 98, 99) WGMMA_COMMIT WGMMA_WAIT(0)
               : WGMMA_D64_OPERANDS(d1), WGMMA_D64_OPERANDS(d0), WGMMA_A_FRAGMENTS_RW(a0)
               : WGMMA_A_FRAGMENTS(a1), WGMMA_DESC4(db1), "r"(1)
               : "memory");
#endif
}

/* Head dim 128 (one m-tile): each 64-row operand is two 64 x 64 panels (WGMMA_PANEL halves apart). S = Q K^T
 * over both panels: eight k-steps into one accumulator set, one commit and wait; operands after the
 * accumulators: %32 .. %35 A's descriptors (panel 0), %36 .. %39 B's, %40 .. %43 and %44 .. %47 panel 1's,
 * %48 = 1. */
inline void wgmma_ss_kmajor_d128(float4 *d, __local const ushort *a, __local const ushort *b EMU_PARAMS) {
#if DUA_MMA_EMULATE
  wgmma_ss_kmajor(d, a, b EMU_ARGS);
  wgmma_ss_kmajor(d, a + WGMMA_PANEL, b + WGMMA_PANEL EMU_ARGS);
#else
  const ulong da = wgmma_desc(a), db = wgmma_desc(b), da1 = wgmma_desc(a + WGMMA_PANEL),
              db1 = wgmma_desc(b + WGMMA_PANEL), ks = 32 >> 4;
  asm volatile(WGMMA_BEGIN(48) WGMMA_SS4(WGMMA_D64, 32, 33, 34, 35, 36, 37, 38, 39)
                   WGMMA_SS4(WGMMA_D64, 40, 41, 42, 43, 44, 45, 46, 47) WGMMA_COMMIT WGMMA_WAIT(0)
               : WGMMA_D64_OPERANDS(d)
               : WGMMA_DESC4(da), WGMMA_DESC4(db), WGMMA_DESC4(da1), WGMMA_DESC4(db1), "r"(1)
               : "memory");
#endif
}

/* O += P V at head dim 128: the two 64-column halves of O (d[0..7], d[8..15]) against V's two panels, P's
 * fragments shared. */
inline void wgmma_rs_nmajor_d128(float4 *d, const uint4 *a, __local const ushort *b EMU_PARAMS) {
  wgmma_rs_nmajor_pair(d, a, b, d + 8, a, b + WGMMA_PANEL EMU_ARGS);
}

/* One k-step, RS with a K-major B (imm-trans-b 0), and the four k-steps of one 64-column panel (A fragments
 * from %R0 .. %R15, descriptors %B0 ..): the head-dim-128 backward's S = Q K^T and dP = dO V^T. */
#define WGMMA_RSK(D, R0, R1, R2, R3, B)                                                                      \
  WGMMA_OP D ", {%" #R0 ",%" #R1 ",%" #R2 ",%" #R3 "}, %" #B ", p, 1, 1, 0;\n"
#define WGMMA_RSK4(D, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, R11, R12, R13, R14, R15, B0, B1, B2, B3)  \
  WGMMA_RSK(D, R0, R1, R2, R3, B0)                                                                           \
  WGMMA_RSK(D, R4, R5, R6, R7, B1) WGMMA_RSK(D, R8, R9, R10, R11, B2) WGMMA_RSK(D, R12, R13, R14, R15, B3)

/* Head dim 128, two independent products d0 += a0 b0^T and d1 += a1 b1^T with A in registers (a0[kk], a1[kk]:
 * this warp's mma.sync A fragments of the eight k-steps) and B K-major tiles of two panels, in one asm
 * statement (16 wgmma, one commit and wait): the backward's dQ pass, S = Q K^T and dP = dO V^T, its own rows
 * held as register operands for the whole key loop, since local memory has room only for K and V (issued and
 * waited in this one statement, so ptxas's reuse of issued A registers, nv_wgmma_ops.cl above, cannot bite).
 * Operands after the 64 accumulators: %64 .. %95 a0's fragments, %96 .. %127 a1's, %128 .. %135 b0's
 * descriptors (panel 0's four k-steps, then panel 1's), %136 .. %143 b1's, %144 = 1. */
inline void wgmma_rs_kmajor_d128_pair(float4 *d0, const uint4 *a0, __local const ushort *b0, float4 *d1,
                                      const uint4 *a1, __local const ushort *b1 EMU_PARAMS) {
#if DUA_MMA_EMULATE
  wgmma_emulated(d0, a0, b0, 0 EMU_ARGS);
  wgmma_emulated(d0, a0 + 4, b0 + WGMMA_PANEL, 0 EMU_ARGS);
  wgmma_emulated(d1, a1, b1, 0 EMU_ARGS);
  wgmma_emulated(d1, a1 + 4, b1 + WGMMA_PANEL, 0 EMU_ARGS);
#else
  const ulong db0 = wgmma_desc(b0), db0p = wgmma_desc(b0 + WGMMA_PANEL), db1 = wgmma_desc(b1),
              db1p = wgmma_desc(b1 + WGMMA_PANEL), ks = 32 >> 4; /* a k-step: 32 bytes along the rows */
  asm volatile(WGMMA_BEGIN(144) WGMMA_RSK4(WGMMA_D64, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77,
                                           78, 79, 128, 129, 130, 131)
                   WGMMA_RSK4(WGMMA_D64, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 132,
                              133, 134, 135)
                       WGMMA_RSK4(WGMMA_D64_SECOND, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107,
                                  108, 109, 110, 111, 136, 137, 138, 139)
                           WGMMA_RSK4(WGMMA_D64_SECOND, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122,
                                      123, 124, 125, 126, 127, 140, 141, 142, 143) WGMMA_COMMIT WGMMA_WAIT(0)
               : WGMMA_D64_OPERANDS(d0), WGMMA_D64_OPERANDS(d1)
               : WGMMA_A_FRAGMENTS(a0), WGMMA_A_FRAGMENTS((a0 + 4)), WGMMA_A_FRAGMENTS(a1),
                 WGMMA_A_FRAGMENTS((a1 + 4)), WGMMA_DESC4(db0), WGMMA_DESC4(db0p), WGMMA_DESC4(db1),
                 WGMMA_DESC4(db1p), "r"(1)
               : "memory");
#endif
}

/* The head-dim-128 dK/dV pass (query tiles of 32 rows, each two 32 x 64 panels `panel` halves apart). */
/* m64n32 (16 accumulators per product: d[0..3], mma.sync C tiles as above): the operand lists of two products
 * (%0 .. %15, %16 .. %31), and one SS k-step with K-major A and B by descriptors %A, %B. */
#define WGMMA_D32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}"
#define WGMMA_D32_SECOND "{%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define WGMMA_D32_OPERANDS(d)                                                                                \
  "+f"(d[0].s0), "+f"(d[0].s1), "+f"(d[0].s2), "+f"(d[0].s3), "+f"(d[1].s0), "+f"(d[1].s1), "+f"(d[1].s2),   \
      "+f"(d[1].s3), "+f"(d[2].s0), "+f"(d[2].s1), "+f"(d[2].s2), "+f"(d[2].s3), "+f"(d[3].s0),              \
      "+f"(d[3].s1), "+f"(d[3].s2), "+f"(d[3].s3)
#define WGMMA_OP32 "// DUA_SM90A wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
#define WGMMA_SS32(D, A, B) WGMMA_OP32 D ", %" #A ", %" #B ", p, 1, 1, 0, 0;\n"
#define WGMMA_SS32_4(D, A0, A1, A2, A3, B0, B1, B2, B3)                                                      \
  WGMMA_SS32(D, A0, B0) WGMMA_SS32(D, A1, B1) WGMMA_SS32(D, A2, B2) WGMMA_SS32(D, A3, B3)

/* One RS k-step of m64n32 with a K-major B (A fragments %R0 .. %R3, descriptor %B) */
#define WGMMA_RSK32(D, R0, R1, R2, R3, B)                                                                    \
  WGMMA_OP32 D ", {%" #R0 ",%" #R1 ",%" #R2 ",%" #R3 "}, %" #B ", p, 1, 1, 0;\n"
#define WGMMA_RSK32_4(D, R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10, R11, R12, R13, R14, R15, B0, B1, B2,   \
                      B3)                                                                                    \
  WGMMA_RSK32(D, R0, R1, R2, R3, B0)                                                                         \
  WGMMA_RSK32(D, R4, R5, R6, R7, B1)                                                                         \
  WGMMA_RSK32(D, R8, R9, R10, R11, B2) WGMMA_RSK32(D, R12, R13, R14, R15, B3)

/* d0 += a0 b0^T and d1 += a1 b1^T (64 x 32 each, d[0..3]), each over eight k-steps, in one asm statement (16
 * wgmma, one commit and wait): S^T = K Q^T with A the work-group's 64 own K rows (64 x 128, two panels
 * WGMMA_PANEL apart, K-major in local memory) and dP^T = V dO^T with A V's rows in registers (a1[kk]: this
 * warp's mma.sync A fragments of the eight k-steps, held across the caller's loop, so that local memory has
 * room for two stages of query tiles); B a 32-row query tile, K-major, two panels `panel` halves apart.
 * Operands after the 32 accumulators: %32 .. %47 a0's and b0's descriptors (panel 0: a0's four k-steps, b0's;
 * panel 1: the same), %48 .. %79 a1's fragments, %80 .. %87 b1's descriptors (panel 0's four k-steps, panel
 * 1's), %88 = 1. */
inline void wgmma_ss_rs_kmajor_n32_d128_pair(float4 *d0, __local const ushort *a0, __local const ushort *b0,
                                             float4 *d1, const uint4 *a1, __local const ushort *b1,
                                             int panel EMU_PARAMS) {
#if DUA_MMA_EMULATE
  for (int pn = 0; pn < 2; pn++) {
    uint4 af[4];
    for (int kk = 0; kk < 4; kk++)
      af[kk] = wgmma_a_fragment(a0 + pn * WGMMA_PANEL, kk);
    wgmma_emulated_kn(d0, af, b0 + pn * panel, 0, 4, 4 EMU_ARGS);
    wgmma_emulated_kn(d1, a1 + 4 * pn, b1 + pn * panel, 0, 4, 4 EMU_ARGS);
  }
#else
  const ulong da0 = wgmma_desc(a0), da0p = wgmma_desc(a0 + WGMMA_PANEL), db0 = wgmma_desc(b0),
              db0p = wgmma_desc(b0 + panel), db1 = wgmma_desc(b1), db1p = wgmma_desc(b1 + panel),
              ks = 32 >> 4;
  asm volatile(WGMMA_BEGIN(88) WGMMA_SS32_4(WGMMA_D32, 32, 33, 34, 35, 36, 37, 38, 39)
                   WGMMA_SS32_4(WGMMA_D32, 40, 41, 42, 43, 44, 45, 46, 47)
                       WGMMA_RSK32_4(WGMMA_D32_SECOND, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
                                     62, 63, 80, 81, 82, 83)
                           WGMMA_RSK32_4(WGMMA_D32_SECOND, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76,
                                         77, 78, 79, 84, 85, 86, 87) WGMMA_COMMIT WGMMA_WAIT(0)
               : WGMMA_D32_OPERANDS(d0), WGMMA_D32_OPERANDS(d1)
               : WGMMA_DESC4(da0), WGMMA_DESC4(db0), WGMMA_DESC4(da0p), WGMMA_DESC4(db0p),
                 WGMMA_A_FRAGMENTS(a1), WGMMA_A_FRAGMENTS((a1 + 4)), WGMMA_DESC4(db1), WGMMA_DESC4(db1p),
                 "r"(1)
               : "memory");
#endif
}

/* The accumulator lists of the third and fourth 64-column sets of a statement (%64 .. %95, %96 .. %127) */
#define WGMMA_D64_THIRD                                                                                      \
  "{%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"                                        \
  "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95}"
#define WGMMA_D64_FOURTH                                                                                     \
  "{%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"                            \
  "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127}"
#define WGMMA_A_FRAGMENTS2(a)                                                                                \
  "r"(a[0].s0), "r"(a[0].s1), "r"(a[0].s2), "r"(a[0].s3), "r"(a[1].s0), "r"(a[1].s1), "r"(a[1].s2),          \
      "r"(a[1].s3)

/* d0 += a0 b0 and d1 += a1 b1 (64 x 128 each: d[0..7] columns 0-63, d[8..15] 64-127) with A in registers
 * (two k-steps of 16 queries, a[0..1]) and B a 32-row query tile, N-major (its rows are k), two panels
 * `panel` halves apart; 8 wgmma, one commit and wait: dV += P^T dO and dK += dS^T Q. Operands after the 128
 * accumulators: %128 .. %135 a0's fragments, %136 .. %143 a1's, %144 .. %147 b0's descriptors (panel 0's two
 * k-steps, panel 1's), %148 .. %151 b1's, %152 = 1. */
inline void wgmma_rs_nmajor_k32_d128_pair(float4 *d0, const uint4 *a0, __local const ushort *b0, float4 *d1,
                                          const uint4 *a1, __local const ushort *b1, int panel EMU_PARAMS) {
#if DUA_MMA_EMULATE
  for (int pn = 0; pn < 2; pn++) {
    wgmma_emulated_kn(d0 + 8 * pn, a0, b0 + pn * panel, 1, 2, 8 EMU_ARGS);
    wgmma_emulated_kn(d1 + 8 * pn, a1, b1 + pn * panel, 1, 2, 8 EMU_ARGS);
  }
#else
  const ulong db0 = wgmma_desc(b0), db0p = wgmma_desc(b0 + panel), db1 = wgmma_desc(b1),
              db1p = wgmma_desc(b1 + panel), ks = 2048 >> 4; /* a k-step: 16 rows */
  asm volatile(
      WGMMA_BEGIN(152) WGMMA_RS(WGMMA_D64, 128, 129, 130, 131, 144)
          WGMMA_RS(WGMMA_D64, 132, 133, 134, 135, 145) WGMMA_RS(WGMMA_D64_SECOND, 128, 129, 130, 131, 146)
              WGMMA_RS(WGMMA_D64_SECOND, 132, 133, 134, 135, 147)
                  WGMMA_RS(WGMMA_D64_THIRD, 136, 137, 138, 139, 148)
                      WGMMA_RS(WGMMA_D64_THIRD, 140, 141, 142, 143, 149)
                          WGMMA_RS(WGMMA_D64_FOURTH, 136, 137, 138, 139, 150)
                              WGMMA_RS(WGMMA_D64_FOURTH, 140, 141, 142, 143, 151) WGMMA_COMMIT WGMMA_WAIT(0)
      : WGMMA_D64_OPERANDS(d0), WGMMA_D64_OPERANDS((d0 + 8)), WGMMA_D64_OPERANDS(d1),
        WGMMA_D64_OPERANDS((d1 + 8))
      : WGMMA_A_FRAGMENTS2(a0), WGMMA_A_FRAGMENTS2(a1), "l"(db0), "l"(db0 + ks), "l"(db0p), "l"(db0p + ks),
        "l"(db1), "l"(db1 + ks), "l"(db1p), "l"(db1p + ks), "r"(1)
      : "memory");
#endif
}

/* The forward's one-m-tile products by head dim */
#if HEAD_DIM == 128
#define WGMMA_S wgmma_ss_kmajor_d128
#define WGMMA_PV wgmma_rs_nmajor_d128
#else
#define WGMMA_S wgmma_ss_kmajor
#define WGMMA_PV wgmma_rs_nmajor
#endif
