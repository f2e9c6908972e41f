/* probe.c: compile-and-run capability probes, never guesses from names (DESIGN.md section 5):
 * the preferred work-group multiple of a real kernel, and NVIDIA inline-PTX mma.sync (f16, tf32),
 * each checked bit-exactly against the CPU. A failing probe only turns its fast path off. */
#include "runtime/context_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void probe_work_group_multiple(dua_context *ctx) {
  cl_kernel k = NULL;
  if (dua_program_kernel(ctx, "probe", "", "dua_probe_axpy", &k) != DUA_SUCCESS) {
    dua_log(ctx, DUA_LOG_WARNING, "probe kernel did not build: %s", ctx->last_error);
    ctx->last_error[0] = '\0';
    return;
  }
  size_t multiple = 0;
  if (clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE, sizeof multiple,
                               &multiple, NULL) == CL_SUCCESS)
    ctx->info.preferred_work_group_multiple = multiple;
}

/* Runs one probe kernel over 32 work-items with buffers a (na bytes), b (nb bytes), c (16x8 floats). */
static int run_probe(dua_context *ctx, const char *kernel, const void *a, size_t na, const void *b, size_t nb,
                     float c[128]) {
  cl_kernel k = NULL;
  if (dua_program_kernel(ctx, "nv_mma_probe", "", kernel, &k) != DUA_SUCCESS)
    return 0;
  cl_int err = CL_SUCCESS;
  cl_mem ma = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, na, (void *)a, &err);
  cl_mem mb = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, nb, (void *)b, &err);
  cl_mem mc = clCreateBuffer(ctx->cl_ctx, CL_MEM_WRITE_ONLY, 128 * sizeof(float), NULL, &err);
  int ok = 0;
  if (ma && mb && mc) {
    size_t global = 32, local = 32;
    err = clSetKernelArg(k, 0, sizeof ma, &ma);
    err |= clSetKernelArg(k, 1, sizeof mb, &mb);
    err |= clSetKernelArg(k, 2, sizeof mc, &mc);
    if (err == CL_SUCCESS)
      err = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &global, &local, 0, NULL, NULL);
    if (err == CL_SUCCESS)
      err = clEnqueueReadBuffer(ctx->queue, mc, CL_TRUE, 0, 128 * sizeof(float), c, 0, NULL, NULL);
    ok = err == CL_SUCCESS;
  }
  if (ma)
    clReleaseMemObject(ma);
  if (mb)
    clReleaseMemObject(mb);
  if (mc)
    clReleaseMemObject(mc);
  return ok;
}

static int probe_mma_f16(dua_context *ctx) {
  uint16_t A[256], Bt[128];
  float Af[256], Btf[128], C[128];
  for (int i = 0; i < 256; i++) {
    Af[i] = (float)((i * 5) % 7 - 3);
    A[i] = dua_float_to_half(Af[i]);
  }
  for (int i = 0; i < 128; i++) {
    Btf[i] = (float)((i * 3) % 5 - 2);
    Bt[i] = dua_float_to_half(Btf[i]);
  }
  if (!run_probe(ctx, "dua_probe_mma_f16", A, sizeof A, Bt, sizeof Bt, C))
    return 0;
  for (int m = 0; m < 16; m++)
    for (int n = 0; n < 8; n++) {
      float s = 0.f;
      for (int k = 0; k < 16; k++)
        s += Af[m * 16 + k] * Btf[n * 16 + k];
      if (C[m * 8 + n] != s)
        return 0;
    }
  return 1;
}

static int probe_mma_tf32(dua_context *ctx) {
  float A[128], Bt[64], C[128];
  for (int i = 0; i < 128; i++)
    A[i] = (float)((i * 7) % 9 - 4);
  for (int i = 0; i < 64; i++)
    Bt[i] = (float)((i * 3) % 5 - 2);
  if (!run_probe(ctx, "dua_probe_mma_tf32", A, sizeof A, Bt, sizeof Bt, C))
    return 0;
  for (int m = 0; m < 16; m++)
    for (int n = 0; n < 8; n++) {
      float s = 0.f;
      for (int k = 0; k < 8; k++)
        s += A[m * 8 + k] * Bt[n * 8 + k];
      if (C[m * 8 + n] != s)
        return 0;
    }
  return 1;
}

/* Hopper's wgmma (cl/nv_wgmma_probe.cl, built for sm_90a): C += A B as the forward's two products (A and B^T
 * K-major tiles in local memory; A in registers, B an N-major tile), from non-zero accumulators: each exact.
 */
static int probe_wgmma(dua_context *ctx) {
  cl_kernel k = NULL;
  if (dua_program_kernel(ctx, "nv_mma_ops,nv_wgmma_ops,nv_wgmma_probe", DUA_SM90A_OPTION, "dua_probe_wgmma",
                         &k) != DUA_SUCCESS) {
    dua_log(ctx, DUA_LOG_INFO, "wgmma probe did not build: %s", ctx->last_error);
    return 0;
  }
  enum { n = 64 * 64 };
  uint16_t *A = malloc(2 * n * sizeof *A), *B = A ? A + n : NULL; /* per call: contexts are independent */
  float *Af = malloc(5 * n * sizeof *Af), *Bf = Af ? Af + n : NULL, *C = Af ? Af + 2 * n : NULL;
  if (!A || !Af) {
    free(A);
    free(Af);
    return 0;
  }
  for (int i = 0; i < n; i++) {
    Af[i] = (float)((i * 5) % 7 - 3), A[i] = dua_float_to_half(Af[i]);
    Bf[i] = (float)((i * 3) % 11 - 5), B[i] = dua_float_to_half(Bf[i]);
    C[i] = C[n + i] = (float)(i % 13 - 6); /* the accumulators start here: D = A B + D */
  }
  cl_int err = CL_SUCCESS;
  cl_mem ma = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * sizeof *A, A, &err);
  cl_mem mb = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * sizeof *B, B, &err);
  cl_mem mc =
      clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, 2 * n * sizeof *C, C, &err);
  int ok = 0;
  if (ma && mb && mc) {
    size_t global = 128, local = 128;
    err = clSetKernelArg(k, 0, sizeof ma, &ma);
    err |= clSetKernelArg(k, 1, sizeof mb, &mb);
    err |= clSetKernelArg(k, 2, sizeof mc, &mc);
    if (err == CL_SUCCESS)
      err = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &global, &local, 0, NULL, NULL);
    if (err == CL_SUCCESS)
      err = clEnqueueReadBuffer(ctx->queue, mc, CL_TRUE, 0, 2 * n * sizeof *C, C, 0, NULL, NULL);
    ok = err == CL_SUCCESS;
  }
  for (int m = 0; ok && m < 64; m++)
    for (int j = 0; ok && j < 64; j++) {
      float s = 0.f;
      for (int kk = 0; kk < 64; kk++)
        s += Af[m * 64 + kk] * Bf[kk * 64 + j];
      s += (float)((m * 64 + j) % 13 - 6);
      ok = C[m * 64 + j] == s && C[n + m * 64 + j] == s;
    }
  cl_mem mems[3] = {ma, mb, mc};
  for (int i = 0; i < 3; i++)
    if (mems[i])
      clReleaseMemObject(mems[i]);
  free(A);
  free(Af);
  return ok;
}

void dua_probe_run(dua_context *ctx) {
  probe_work_group_multiple(ctx);
  /* inline PTX only exists on NVIDIA's compiler; sm_80+ has these shapes */
  const int nvidia = dua_device_is_nvidia(&ctx->info);
  if (!nvidia || (ctx->info.nv_compute_capability && ctx->info.nv_compute_capability < 80) ||
      ctx->fast_paths_disabled) /* the kill switch also keeps inline PTX off the device */
    return;
  ctx->info.nv_mma_probed = 1;
  ctx->info.nv_mma_f16 = probe_mma_f16(ctx);
  ctx->info.nv_mma_tf32 = probe_mma_tf32(ctx);
  dua_log(ctx, DUA_LOG_INFO, "mma.sync probe: f16 %s, tf32 %s", ctx->info.nv_mma_f16 ? "ok" : "failed",
          ctx->info.nv_mma_tf32 ? "ok" : "failed");
  /* wgmma exists on sm_90 only (sm_90a PTX); DUA_NO_WGMMA=1 keeps the forward and backward on mma.sync */
  if (ctx->info.nv_mma_f16 && ctx->info.nv_compute_capability == 90 && !dua_env_flag("DUA_NO_WGMMA")) {
    ctx->info.nv_wgmma = probe_wgmma(ctx);
    dua_log(ctx, DUA_LOG_INFO, "wgmma probe: %s", ctx->info.nv_wgmma ? "ok" : "failed");
  }
  ctx->last_error[0] = '\0'; /* a failed probe is not an error of the caller's */
}
