/* nv_wgmma_probe.cl: compile-and-run probe for Hopper's warpgroup MMA (nv_wgmma_ops.cl; built with
 * DUA_SM90A=1, only on NVIDIA sm_90 devices). One warpgroup computes C += A B (64 x 64 x 64, f16 in, f32 out)
 * from a non-zero C, twice, as the forward does: A and B^T both K-major tiles in local
 * memory (S = Q K^T), and A in registers with B an N-major tile (O += P V), in the swizzled tile layout
 * (WGMMA_TILE_AT); the host checks both bit-exactly on small integers. */

/* A, B: 64 x 64 halves row-major (B[k][n]); C: 2 x 64 x 64 floats, read as the start and overwritten. */
__kernel __attribute__((reqd_work_group_size(128, 1, 1))) void
dua_probe_wgmma(__global const ushort *A, __global const ushort *B, __global float *C) {
  __local ushort as[64 * 64] __attribute__((aligned(1024))); /* row m = A's row m (as Q) */
  __local ushort bk[64 * 64] __attribute__((aligned(1024))); /* row n = B's column n (as K) */
  __local ushort bn[64 * 64] __attribute__((aligned(1024))); /* row k = B's row k (as V) */
  const int tid = get_local_id(0), lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  for (int i = tid; i < 64 * 64; i += 128) {
    const int r = i / 64, c = i % 64;
    as[WGMMA_TILE_AT(r, c)] = A[i];
    bk[WGMMA_TILE_AT(c, r)] = B[i];
    bn[WGMMA_TILE_AT(r, c)] = B[i];
  }
  wgmma_proxy_fence();
  barrier(CLK_LOCAL_MEM_FENCE);
  uint4 a[4]; /* this warp's rows 16 w .. + 15 as mma.sync A fragments, k-steps of 16 */
  const int r = 16 * w + g;
  for (int kk = 0; kk < 4; kk++) {
    const int c = 16 * kk + 2 * t;
    a[kk] = (uint4)(A[r * 64 + c] | ((uint)A[r * 64 + c + 1] << 16),
                    A[(r + 8) * 64 + c] | ((uint)A[(r + 8) * 64 + c + 1] << 16),
                    A[r * 64 + c + 8] | ((uint)A[r * 64 + c + 9] << 16),
                    A[(r + 8) * 64 + c + 8] | ((uint)A[(r + 8) * 64 + c + 9] << 16));
  }
  for (int pass = 0; pass < 2; pass++) {
    __global float *c = C + pass * 4096;
    float4 d[8]; /* from C: the host's non-zero start */
    for (int i = 0; i < 8; i++)
      d[i] = (float4)(c[r * 64 + 8 * i + 2 * t], c[r * 64 + 8 * i + 2 * t + 1],
                      c[(r + 8) * 64 + 8 * i + 2 * t], c[(r + 8) * 64 + 8 * i + 2 * t + 1]);
    if (pass == 0)
      wgmma_ss_kmajor(d, as, bk);
    else
      wgmma_rs_nmajor(d, a, bn);
    for (int i = 0; i < 8; i++) {
      c[r * 64 + 8 * i + 2 * t] = d[i].s0;
      c[r * 64 + 8 * i + 2 * t + 1] = d[i].s1;
      c[(r + 8) * 64 + 8 * i + 2 * t] = d[i].s2;
      c[(r + 8) * 64 + 8 * i + 2 * t + 1] = d[i].s3;
    }
  }
}
