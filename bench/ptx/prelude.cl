/* prelude.cl: the OpenCL built-ins dua's NVIDIA kernels use, mapped to NVVM intrinsics, so that clang's nvptx
 * back end builds those kernels without libclc (bench/ptx/build.sh; local PTX and SASS, no GPU needed). */
#define OVL __attribute__((overloadable, always_inline))
OVL size_t get_local_id(uint d) {
  return d == 0   ? __nvvm_read_ptx_sreg_tid_x()
         : d == 1 ? __nvvm_read_ptx_sreg_tid_y()
                  : __nvvm_read_ptx_sreg_tid_z();
}
OVL size_t get_group_id(uint d) {
  return d == 0   ? __nvvm_read_ptx_sreg_ctaid_x()
         : d == 1 ? __nvvm_read_ptx_sreg_ctaid_y()
                  : __nvvm_read_ptx_sreg_ctaid_z();
}
OVL size_t get_num_groups(uint d) {
  return d == 0   ? __nvvm_read_ptx_sreg_nctaid_x()
         : d == 1 ? __nvvm_read_ptx_sreg_nctaid_y()
                  : __nvvm_read_ptx_sreg_nctaid_z();
}
OVL int min(int a, int b) {
  return a < b ? a : b;
}
OVL int max(int a, int b) {
  return a > b ? a : b;
}
OVL void barrier(cl_mem_fence_flags f) {
  __syncthreads();
}
OVL float fmax(float a, float b) {
  return __nvvm_fmax_f(a, b);
}
OVL float fma(float a, float b, float c) {
  return __nvvm_fma_rn_f(a, b, c);
}
OVL float log2(float a) {
  return __nvvm_lg2_approx_f(a);
}
OVL int isinf(float x) {
  return __builtin_isinf(x);
}
OVL int atomic_inc(volatile __global int *p) {
  int r;
  asm volatile("atom.global.add.u32 %0, [%1], 1;" : "=r"(r) : "l"(p) : "memory");
  return r;
}
OVL float exp2(float a) {
  return __nvvm_ex2_approx_f(a);
}
