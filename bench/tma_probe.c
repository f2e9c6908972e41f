/* tma_probe.c: can dua reach Hopper's tensor memory accelerator (TMA: cp.async.bulk.tensor, sm_90) from
 * OpenCL? A TMA copy reads its tensor's shape, strides and shared-memory swizzle from a 128-byte tensor map,
 * which CUDA programs encode on the host with the driver API (cuTensorMapEncodeTiled). OpenCL has no such
 * call, so this probe builds the map on the device: 128 zero bytes in local memory, each field written with
 * `tensormap.replace` (sm_90a), the map copied to global memory with `tensormap.cp_fenceproxy`, then used by
 * `cp.async.bulk.tensor` after `fence.proxy.tensormap::generic.acquire`, completion through an mbarrier.
 *
 * The copy: a 64 x 64 fp16 box of a 4-d tensor (batch 2, heads 3, tokens 200, head dim 64; tokens strided by
 * heads x 64, as dua's BSHD views) at token r0, head 2, batch 1, into a 1024-byte aligned local tile with the
 * 128-byte swizzle that dua's wgmma tiles use (16-byte chunk c of row r at chunk c ^ r % 8); rows past token
 * 199 must arrive as zeros. The tile is written back raw and compared on the host, element by element.
 * Variants: the global strides as bytes or as bytes >> 4 (an older ptxas wanted the latter), r0 160 (a tail)
 * and 64; each in a process of its own (a bad map faults and leaves the context unusable). Also timed: the
 * map builder alone as a kernel of one warp (what a launch would add before each forward).
 *
 *   dua_tma_probe [--device SEL]
 *
 * Output: one JSON object per variant. Exit 0 when any variant is exact, 1 when none is, 2 on bad use or a
 * device that is not NVIDIA. Development tool, not installed; needs an sm_90 GPU. */
#include "dua_cl.h"
#include "sm90a_build.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The map's fields; ord = the dimension (0 innermost). Every instruction is a DUA_SM90A comment. */
static const char *src[] = {
    "#define SM90A(x) \"// DUA_SM90A \" x \"\\n\"\n"
    "inline uint sa(__local const void *p) { return (uint)(size_t)p; }\n"
    "inline void build_map(__local uint *tm, __global const ushort *base, uint d0, uint d1, uint d2, uint "
    "d3,\n"
    "                      ulong s1, ulong s2, ulong s3, int shift, __global ulong *map_out) {\n"
    "  const int tid = get_local_id(0);\n"
    "  if (tid < 32) tm[tid] = 0;\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  if (tid == 0) {\n"
    "    const uint a = sa(tm);\n"
    "    asm volatile(SM90A(\"tensormap.replace.tile.global_address.shared::cta.b1024.b64 [%0], %1;\")\n"
    "                 SM90A(\"tensormap.replace.tile.rank.shared::cta.b1024.b32 [%0], 3;\")\n"
    "                 SM90A(\"tensormap.replace.tile.box_dim.shared::cta.b1024.b32 [%0], 0, 64;\")\n"
    "                 SM90A(\"tensormap.replace.tile.box_dim.shared::cta.b1024.b32 [%0], 1, 64;\")\n"
    "                 SM90A(\"tensormap.replace.tile.box_dim.shared::cta.b1024.b32 [%0], 2, 1;\")\n"
    "                 SM90A(\"tensormap.replace.tile.box_dim.shared::cta.b1024.b32 [%0], 3, 1;\")\n"
    "                 SM90A(\"tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 0, %2;\")\n"
    "                 SM90A(\"tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 1, %3;\")\n"
    "                 SM90A(\"tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 2, %4;\")\n"
    "                 SM90A(\"tensormap.replace.tile.global_dim.shared::cta.b1024.b32 [%0], 3, %5;\")\n"
    "                 SM90A(\"tensormap.replace.tile.global_stride.shared::cta.b1024.b64 [%0], 0, %6;\")\n"
    "                 SM90A(\"tensormap.replace.tile.global_stride.shared::cta.b1024.b64 [%0], 1, %7;\")\n"
    "                 SM90A(\"tensormap.replace.tile.global_stride.shared::cta.b1024.b64 [%0], 2, %8;\")\n"
    "                 SM90A(\"tensormap.replace.tile.element_stride.shared::cta.b1024.b32 [%0], 0, 1;\")\n"
    "                 SM90A(\"tensormap.replace.tile.element_stride.shared::cta.b1024.b32 [%0], 1, 1;\")\n"
    "                 SM90A(\"tensormap.replace.tile.element_stride.shared::cta.b1024.b32 [%0], 2, 1;\")\n"
    "                 SM90A(\"tensormap.replace.tile.element_stride.shared::cta.b1024.b32 [%0], 3, 1;\")\n"
    "                 SM90A(\"tensormap.replace.tile.elemtype.shared::cta.b1024.b32 [%0], 1;\")\n"
    "                 SM90A(\"tensormap.replace.tile.swizzle_mode.shared::cta.b1024.b32 [%0], 3;\")\n"
    "                 :: \"r\"(a), \"l\"(base), \"r\"(d0), \"r\"(d1), \"r\"(d2), \"r\"(d3), \"l\"(s1 >> "
    "shift),\n"
    "                 \"l\"(s2 >> shift), \"l\"(s3 >> shift) : \"memory\");\n"
    "  }\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  if (tid < 32)\n"
    "    asm volatile(SM90A(\"tensormap.cp_fenceproxy.global.shared::cta.tensormap::generic.release.gpu.sync."
    "aligned [%0], [%1], 128;\") :: \"l\"(map_out), \"r\"(sa(tm)) : \"memory\");\n"
    "}\n",
    "__kernel __attribute__((reqd_work_group_size(32, 1, 1))) void\n"
    "tma_build(__global const ushort *src, __global ulong *map, uint d0, uint d1, uint d2, uint d3, ulong "
    "s1,\n"
    "          ulong s2, ulong s3, int shift) {\n"
    "  __local uint tm[32] __attribute__((aligned(128)));\n"
    "  build_map(tm, src, d0, d1, d2, d3, s1, s2, s3, shift, map);\n"
    "}\n",
    "__kernel __attribute__((reqd_work_group_size(128, 1, 1))) void\n"
    "tma_probe(__global const ushort *src, __global ulong *map, __global ushort *out, uint d0, uint d1, uint "
    "d2,\n"
    "          uint d3, ulong s1, ulong s2, ulong s3, int shift, int r0, int h, int b) {\n"
    "  __local uint tm[32] __attribute__((aligned(128)));\n"
    "  __local ushort tile[64 * 64] __attribute__((aligned(1024)));\n"
    "  __local ulong bar[1] __attribute__((aligned(8)));\n"
    "  const int tid = get_local_id(0);\n"
    "  build_map(tm, src, d0, d1, d2, d3, s1, s2, s3, shift, map);\n"
    "  for (int i = tid; i < 64 * 64; i += 128) tile[i] = 0xFFFF;\n"
    "  if (tid == 0)\n"
    "    asm volatile(SM90A(\"mbarrier.init.shared::cta.b64 [%0], 1;\")\n"
    "                 SM90A(\"fence.mbarrier_init.release.cluster;\") :: \"r\"(sa(bar)) : \"memory\");\n"
    "  barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);\n"
    "  if (tid == 0)\n"
    "    asm volatile(\"{\\n.reg .b64 st;\\n\"\n"
    "                 SM90A(\"fence.proxy.async.shared::cta;\")\n"
    "                 SM90A(\"fence.proxy.tensormap::generic.acquire.gpu [%0], 128;\")\n"
    "                 SM90A(\"mbarrier.arrive.expect_tx.shared::cta.b64 st, [%1], 8192;\")\n"
    "                 "
    "SM90A(\"cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
    " [%2], [%0, {%3, %4, %5, %6}], [%1];\")\n"
    "                 \"}\\n\" :: \"l\"(map), \"r\"(sa(bar)), \"r\"(sa(tile)), \"r\"(0), \"r\"(r0), \"r\"(h),"
    " \"r\"(b) : \"memory\");\n"
    "  uint done = 0;\n"
    "  for (int spin = 0; !done && spin < (1 << 24); spin++)\n"
    "    asm volatile(\"{\\n.reg .pred p;\\nmov.u32 %0, 0;\\n\"\n"
    "                 SM90A(\"mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;\")\n"
    "                 SM90A(\"selp.u32 %0, 1, 0, p;\")\n"
    "                 \"}\\n\" : \"=r\"(done) : \"r\"(sa(bar)) : \"memory\");\n"
    "  for (int i = tid; i < 64 * 64; i += 128) out[i] = done ? tile[i] : 0xDEAD;\n"
    "}\n"};

enum { B = 2, H = 3, N = 200, D = 64 };

typedef struct variant {
  int shift, r0;
} variant;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static cl_program build_sm90a(cl_context c, cl_device_id dev, char *why, size_t why_size) {
  return bench_build_sm90a(c, dev, sizeof src / sizeof src[0], src, -1, getenv("TMA_PROBE_PTX"), why,
                           why_size);
}

/* The tensor's element (b, h, n, d) as a distinct non-zero fp16 bit pattern */
static unsigned short value_at(int b, int h, int n, int d) {
  return (unsigned short)(0x1000 + ((((b * H + h) * N + n) * D + d) % 0x6000));
}

static void set_args(cl_kernel k, int first, int shift) {
  const cl_uint d0 = D, d1 = N, d2 = H, d3 = B;
  const cl_ulong s1 = (cl_ulong)H * D * 2, s2 = (cl_ulong)D * 2, s3 = (cl_ulong)N * H * D * 2;
  clSetKernelArg(k, first, sizeof d0, &d0);
  clSetKernelArg(k, first + 1, sizeof d1, &d1);
  clSetKernelArg(k, first + 2, sizeof d2, &d2);
  clSetKernelArg(k, first + 3, sizeof d3, &d3);
  clSetKernelArg(k, first + 4, sizeof s1, &s1);
  clSetKernelArg(k, first + 5, sizeof s2, &s2);
  clSetKernelArg(k, first + 6, sizeof s3, &s3);
  clSetKernelArg(k, first + 7, sizeof shift, &shift);
}

static int probe_one(const dua_context_options *co, const variant *v) {
  dua_context *ctx = NULL;
  if (dua_context_create(co, &ctx) != DUA_SUCCESS)
    return 0;
  cl_context c = dua_context_cl_context(ctx);
  cl_device_id dev = dua_context_cl_device(ctx);
  cl_command_queue q = dua_context_cl_queue(ctx);
  char why[4608] = "";
  const char *stage = "build";
  long wrong = -1, first_bad = -1;
  double build_us = -1.0;
  cl_program p = build_sm90a(c, dev, why, sizeof why);
  if (p) {
    stage = "run";
    static unsigned short host[B * H * N * D], out[64 * 64];
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++)
        for (int n = 0; n < N; n++)
          for (int d = 0; d < D; d++)
            host[((b * N + n) * H + h) * D + d] = value_at(b, h, n, d); /* BSHD */
    cl_int err;
    cl_mem ms = clCreateBuffer(c, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof host, host, &err);
    cl_mem mm = clCreateBuffer(c, CL_MEM_READ_WRITE, 128, NULL, &err);
    cl_mem mo = clCreateBuffer(c, CL_MEM_READ_WRITE, sizeof out, NULL, &err);
    cl_kernel k = clCreateKernel(p, "tma_probe", &err);
    const cl_int r0 = v->r0, hh = 2, bb = 1;
    clSetKernelArg(k, 0, sizeof ms, &ms);
    clSetKernelArg(k, 1, sizeof mm, &mm);
    clSetKernelArg(k, 2, sizeof mo, &mo);
    set_args(k, 3, v->shift);
    clSetKernelArg(k, 11, sizeof r0, &r0);
    clSetKernelArg(k, 12, sizeof hh, &hh);
    clSetKernelArg(k, 13, sizeof bb, &bb);
    const size_t g = 128;
    err = clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &g, 0, NULL, NULL);
    if (err == CL_SUCCESS)
      err = clEnqueueReadBuffer(q, mo, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
      snprintf(why, sizeof why, "run failed: OpenCL error %d", (int)err);
    } else {
      stage = "checked";
      wrong = 0;
      for (int r = 0; r < 64; r++)
        for (int col = 0; col < 64; col++) {
          const int at = r * 64 + ((((col >> 3) ^ (r & 7))) << 3) + (col & 7);
          const int n = r0 + r;
          const unsigned short want = n < N ? value_at(bb, hh, n, col) : 0;
          if (out[at] != want) {
            if (first_bad < 0)
              first_bad = r * 64 + col,
              snprintf(why, sizeof why, "row %d col %d: got 0x%04x want 0x%04x", r, col, out[at], want);
            wrong++;
          }
        }
      /* the map builder alone, as a launch of one warp: median of 101 */
      cl_kernel kb = clCreateKernel(p, "tma_build", &err);
      if (kb) {
        clSetKernelArg(kb, 0, sizeof ms, &ms);
        clSetKernelArg(kb, 1, sizeof mm, &mm);
        set_args(kb, 2, v->shift);
        const size_t g1 = 32;
        double t[101];
        for (int i = 0; i < 101; i++) {
          clFinish(q);
          const double t0 = now_s();
          clEnqueueNDRangeKernel(q, kb, 1, NULL, &g1, &g1, 0, NULL, NULL);
          clFinish(q);
          t[i] = now_s() - t0;
        }
        for (int i = 0; i < 101; i++)
          for (int j = i + 1; j < 101; j++)
            if (t[j] < t[i]) {
              const double x = t[i];
              t[i] = t[j], t[j] = x;
            }
        build_us = 1e6 * t[50];
        clReleaseKernel(kb);
      }
    }
    clReleaseKernel(k);
    clReleaseMemObject(ms);
    clReleaseMemObject(mm);
    clReleaseMemObject(mo);
    clReleaseProgram(p);
  }
  printf("{\"stride_shift\": %d, \"r0\": %d, \"stage\": \"%s\", \"wrong\": %ld, \"build_launch_us\": %.1f, "
         "\"why\": \"",
         v->shift, v->r0, stage, wrong, build_us);
  for (const char *s = why; *s; s++)
    if (*s == '"' || *s == '\\')
      printf("\\%c", *s);
    else if (*s == '\n')
      printf("\\n");
    else if ((unsigned char)*s >= 32)
      putchar(*s);
  printf("\"}\n");
  fflush(stdout);
  dua_context_destroy(ctx);
  return wrong == 0;
}

int main(int argc, char **argv) {
  dua_context_options co;
  dua_context_options_init(&co);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      co.selector = argv[++i];
    } else {
      fprintf(stderr, "usage: dua_tma_probe [--device SEL]\n");
      return 2;
    }
  }
  const variant vs[4] = {{0, 160}, {0, 64}, {4, 160}, {4, 64}};
  int exact = 0;
  for (int i = 0; i < 4; i++) {
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0)
      _exit(probe_one(&co, &vs[i]) ? 0 : 1);
    int st = 0;
    if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
      exact++;
  }
  fprintf(stderr, "dua_tma_probe: %d of 4 variants exact\n", exact);
  return exact ? 0 : 1;
}
