/* nv_mma_probe.cl: compile-and-run probe for NVIDIA inline-PTX mma.sync (built only on NVIDIA devices).
 * One warp computes a 16x8 tile with m16n8k16 (f16 in, f32 out) and with m16n8k8 (tf32); the host checks
 * both bit-exactly against the CPU on small integers. Fragment layouts: shared/NV-PTX-COOKBOOK.md. */

/* A: 16x16 halves row-major; Bt: 8x16 halves (B^T, n x k); C: 16x8 floats */
__kernel void dua_probe_mma_f16(__global const ushort *A, __global const ushort *Bt, __global float *C) {
  int lane = get_local_id(0) & 31, g = lane >> 2, t = lane & 3;
  uint a0 = (uint)A[g * 16 + 2 * t] | ((uint)A[g * 16 + 2 * t + 1] << 16);
  uint a1 = (uint)A[(g + 8) * 16 + 2 * t] | ((uint)A[(g + 8) * 16 + 2 * t + 1] << 16);
  uint a2 = (uint)A[g * 16 + 2 * t + 8] | ((uint)A[g * 16 + 2 * t + 9] << 16);
  uint a3 = (uint)A[(g + 8) * 16 + 2 * t + 8] | ((uint)A[(g + 8) * 16 + 2 * t + 9] << 16);
  uint b0 = (uint)Bt[g * 16 + 2 * t] | ((uint)Bt[g * 16 + 2 * t + 1] << 16);
  uint b1 = (uint)Bt[g * 16 + 2 * t + 8] | ((uint)Bt[g * 16 + 2 * t + 9] << 16);
  float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  C[g * 8 + 2 * t] = d0;
  C[g * 8 + 2 * t + 1] = d1;
  C[(g + 8) * 8 + 2 * t] = d2;
  C[(g + 8) * 8 + 2 * t + 1] = d3;
}

/* A: 16x8 floats row-major; Bt: 8x8 floats (B^T, n x k); C: 16x8 floats */
__kernel void dua_probe_mma_tf32(__global const float *A, __global const float *Bt, __global float *C) {
  int lane = get_local_id(0) & 31, g = lane >> 2, t = lane & 3;
  uint a0 = as_uint(A[g * 8 + t]), a1 = as_uint(A[(g + 8) * 8 + t]);
  uint a2 = as_uint(A[g * 8 + t + 4]), a3 = as_uint(A[(g + 8) * 8 + t + 4]);
  uint b0 = as_uint(Bt[g * 8 + t]), b1 = as_uint(Bt[g * 8 + t + 4]);
  float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  C[g * 8 + 2 * t] = d0;
  C[g * 8 + 2 * t + 1] = d1;
  C[(g + 8) * 8 + 2 * t] = d2;
  C[(g + 8) * 8 + 2 * t + 1] = d3;
}
