/* wgmma_probe.c: can dua reach Hopper's warpgroup MMA (wgmma.mma_async, sm_90a) from OpenCL, and with which
 * shared-memory operand layout? Issue 5's next step (bench/NOTES-mma.md): the peers' dense forward runs on
 * wgmma, dua's on mma.sync at a third of its ceiling.
 *
 * NVIDIA's OpenCL compiles for sm_90, where wgmma does not assemble, but returns PTX as the program binary
 * and accepts PTX retargeted to sm_90a (shared/NV-PTX-COOKBOOK.md). So the kernel below carries each
 * Hopper-only instruction as a PTX comment inside its inline asm ("// DUA_SM90A <instruction>"): the compiler
 * substitutes the operands' registers into the comment like into any asm text, the sm_90 build succeeds, and
 * the probe then uncomments those lines, retargets the PTX to sm_90a and rebuilds it with
 * clCreateProgramWithBinary.
 *
 * The kernel: one warpgroup (128 work-items) computes C [64 x N] = A [64 x 16] B [16 x N] (f16 in, f32 out)
 * with one wgmma.mma_async m64nNk16, A from registers (each warp's 16 rows as an mma.sync m16n8k16 A
 * fragment), B from local (shared) memory through a matrix descriptor without swizzle. B's 8 x 8 core
 * matrices (8 rows of N, 16 bytes of K each, 128 contiguous bytes) are stored in one of two orders, and the
 * descriptor's two byte offsets (bits 16-29 "leading", bits 32-45 "stride", both >> 4) are tried both ways,
 * so the run tells which convention the hardware uses. C is read back in the mma.sync C layout per 8-column
 * tile (register 4i + {0,1,2,3} = rows g, g, g + 8, g + 8 of the warp's 16, columns 8i + 2t, 8i + 2t + 1),
 * and compared with a CPU product of the same values (small integers: exact in f16 and f32).
 *
 *   dua_wgmma_probe [--device SEL]
 *
 * Each variant runs in a process of its own: a descriptor that points outside local memory faults, and a
 * fault leaves the OpenCL context unusable (the first run on an H100 lost 31 of 32 variants that way).
 *
 * Output: one JSON object per variant (n, core-matrix order, leading and stride byte offsets, the stage
 * reached, the largest error, an OpenCL error or build log when a stage fails). Exit 0 when any variant is
 * exact, 1 when none is, 2 on bad use or a device that is not NVIDIA. Development tool, not installed; not
 * run by the test suites (it needs an sm_90 GPU). */
#include "dua_cl.h"
#include "sm90a_build.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Appends printf-style text to a growing buffer (16 KB is plenty for N <= 64). */
typedef struct text {
  char s[16384];
  int o;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const int room = (int)sizeof t->s - t->o, w = vsnprintf(t->s + t->o, (size_t)room, fmt, ap);
  va_end(ap);
  t->o += w < room ? w : room - 1;
}

/* The accumulators as "+f" operands 0 .. nd - 1. */
static void put_acc(text *t, int nd) {
  for (int i = 0; i < nd; i++)
    put(t, "\"+f\"(d[%d])%s", i, i + 1 < nd ? ", " : "");
}

/* The kernel source for N columns and B's transpose flag (the wgmma's imm-trans-b): its 4 N / 8 accumulator
 * registers per work-item are spelled out as operands. Arguments: a [64][16], bt [N][16] (row n holds column
 * n of B), c [64][N]; B's core matrices in local memory are stored with K contiguous in their 8 rows (major
 * 0) or N contiguous (major 1), in core order (n / 8, k / 8) (order 0: K neighbours adjacent) or (k / 8, n /
 * 8). */
static char *kernel_source(int n, int tnsp) {
  const int nd = n / 2; /* f32 accumulator registers per work-item: 64 x N / 128 */
  text *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  put(t,
      "#define N %d\n"
      "__kernel __attribute__((reqd_work_group_size(128, 1, 1))) void\n"
      "wgmma_probe(__global const ushort *a, __global const ushort *bt, __global float *c,\n"
      "            uint lead, uint stride, int order, int major) {\n"
      "  __local ushort bs[N * 16] __attribute__((aligned(128)));\n"
      "  const int tid = get_local_id(0), lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;\n"
      "  for (int i = tid; i < N * 16; i += 128) {\n"
      "    const int nn = i / 16, k = i %% 16;\n"
      "    const int core = order == 0 ? (nn >> 3) * 2 + (k >> 3) : (k >> 3) * (N / 8) + (nn >> 3);\n"
      "    const int at = major == 0 ? (nn & 7) * 8 + (k & 7) : (k & 7) * 8 + (nn & 7);\n"
      "    bs[core * 64 + at] = bt[i];\n"
      "  }\n"
      "  barrier(CLK_LOCAL_MEM_FENCE);\n"
      "  asm volatile(\"// DUA_SM90A fence.proxy.async.shared::cta;\" ::: \"memory\");\n"
      "  const int r = 16 * w + g;\n"
      "  const uint a0 = a[r * 16 + 2 * t] | ((uint)a[r * 16 + 2 * t + 1] << 16);\n"
      "  const uint a1 = a[(r + 8) * 16 + 2 * t] | ((uint)a[(r + 8) * 16 + 2 * t + 1] << 16);\n"
      "  const uint a2 = a[r * 16 + 2 * t + 8] | ((uint)a[r * 16 + 2 * t + 9] << 16);\n"
      "  const uint a3 = a[(r + 8) * 16 + 2 * t + 8] | ((uint)a[(r + 8) * 16 + 2 * t + 9] << 16);\n"
      "  const ulong desc = (ulong)((((uint)(size_t)bs) >> 4) & 0x3FFF) |\n"
      "                     ((ulong)((lead >> 4) & 0x3FFF) << 16) | ((ulong)((stride >> 4) & 0x3FFF) << "
      "32);\n"
      "  float d[%d];\n"
      "  for (int i = 0; i < %d; i++)\n"
      "    d[i] = 0.0f;\n"
      "  asm volatile(\"// DUA_SM90A wgmma.fence.sync.aligned;\" : ",
      n, nd, nd);
  put_acc(t, nd); /* zeroed before the fence */
  put(t,
      " :: \"memory\");\n"
      "  asm volatile(\"{\\n.reg .pred p;\\nsetp.ne.b32 p, %%%d, 0;\\n"
      "// DUA_SM90A wgmma.mma_async.sync.aligned.m64n%dk16.f32.f16.f16 {",
      nd + 5, n);
  for (int i = 0; i < nd; i++)
    put(t, "%%%d%s", i, i + 1 < nd ? ", " : "");
  put(t, "}, {%%%d, %%%d, %%%d, %%%d}, %%%d, p, 1, 1, %d;\\n}\\n\"\n      : ", nd, nd + 1, nd + 2, nd + 3,
      nd + 4, tnsp);
  put_acc(t, nd);
  put(t, "\n      : \"r\"(a0), \"r\"(a1), \"r\"(a2), \"r\"(a3), \"l\"(desc), \"r\"(0)\n"
         "      : \"memory\");\n"
         "  asm volatile(\"// DUA_SM90A wgmma.commit_group.sync.aligned;\" ::: \"memory\");\n"
         "  asm volatile(\"// DUA_SM90A wgmma.wait_group.sync.aligned 0;\" : ");
  put_acc(t, nd); /* the accumulators are final only after the wait: no use moves above it */
  put(t, " :: \"memory\");\n"
         "  for (int i = 0; i < N / 8; i++) {\n"
         "    c[r * N + 8 * i + 2 * t] = d[4 * i];\n"
         "    c[r * N + 8 * i + 2 * t + 1] = d[4 * i + 1];\n"
         "    c[(r + 8) * N + 8 * i + 2 * t] = d[4 * i + 2];\n"
         "    c[(r + 8) * N + 8 * i + 2 * t + 1] = d[4 * i + 3];\n"
         "  }\n"
         "}\n");
  char *out = strdup(t->s);
  free(t);
  return out;
}

static unsigned short f16_of_small_int(int v) { /* exact for |v| < 2048 */
  if (v == 0)
    return 0;
  const unsigned sign = v < 0 ? 0x8000u : 0u;
  unsigned m = (unsigned)(v < 0 ? -v : v);
  int e = 0;
  while (m >= 2u << e)
    e++;
  const unsigned frac = (unsigned)(((unsigned long)m << 10 >> e) & 0x3FFu);
  return (unsigned short)(sign | (unsigned)(e + 15) << 10 | frac);
}

static void json_string(const char *s) {
  putchar('"');
  for (; s && *s; s++) {
    if (*s == '"' || *s == '\\')
      printf("\\%c", *s);
    else if (*s == '\n')
      printf("\\n");
    else if ((unsigned char)*s >= 32)
      putchar(*s);
  }
  putchar('"');
}

typedef struct variant {
  int n, tnsp, major, order; /* width, imm-trans-b, core-matrix rows (0: K contiguous), core order */
  unsigned lead, stride;     /* the descriptor's two byte offsets */
} variant;

/* Builds the sm_90a program of width n and transpose flag tnsp; returns NULL with why set. */
static cl_program build_sm90a(cl_context c, cl_device_id dev, int n, int tnsp, char *why, size_t why_size) {
  char *src = kernel_source(n, tnsp);
  if (!src) {
    snprintf(why, why_size, "out of memory");
    return NULL;
  }
  cl_program p = bench_build_sm90a(c, dev, 1, (const char **)&src, 5, NULL, why, why_size);
  free(src);
  return p;
}

/* Runs one variant; returns the largest |error| or -1 (why set). */
static double run_variant(cl_context c, cl_command_queue q, cl_program p, const variant *v, char *why,
                          size_t why_size) {
  const int n = v->n;
  unsigned short ah[64 * 16], bth[64 * 16];
  float af[64 * 16], btf[64 * 16], ref[64 * 64], out[64 * 64];
  for (int i = 0; i < 64 * 16; i++) {
    const int x = (i * 7 + 3) % 9 - 4, y = (i * 5 + 1) % 7 - 3;
    af[i] = (float)x, ah[i] = f16_of_small_int(x);
    btf[i] = (float)y, bth[i] = f16_of_small_int(y);
  }
  for (int r = 0; r < 64; r++)
    for (int j = 0; j < n; j++) {
      float s = 0.0f;
      for (int k = 0; k < 16; k++)
        s += af[r * 16 + k] * btf[j * 16 + k];
      ref[r * n + j] = s;
      out[r * n + j] = NAN;
    }
  cl_int err;
  cl_mem ma = clCreateBuffer(c, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof ah, ah, &err);
  cl_mem mb = clCreateBuffer(c, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof bth, bth, &err);
  cl_mem mc = clCreateBuffer(c, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof(float) * 64 * n, out, &err);
  cl_kernel k = clCreateKernel(p, "wgmma_probe", &err);
  double worst = -1.0;
  if (ma && mb && mc && k) {
    const cl_uint lead = v->lead, stride = v->stride;
    const cl_int order = v->order, major = v->major;
    clSetKernelArg(k, 0, sizeof ma, &ma);
    clSetKernelArg(k, 1, sizeof mb, &mb);
    clSetKernelArg(k, 2, sizeof mc, &mc);
    clSetKernelArg(k, 3, sizeof lead, &lead);
    clSetKernelArg(k, 4, sizeof stride, &stride);
    clSetKernelArg(k, 5, sizeof order, &order);
    clSetKernelArg(k, 6, sizeof major, &major);
    const size_t gsz = 128, lsz = 128;
    err = clEnqueueNDRangeKernel(q, k, 1, NULL, &gsz, &lsz, 0, NULL, NULL);
    if (err == CL_SUCCESS)
      err = clEnqueueReadBuffer(q, mc, CL_TRUE, 0, sizeof(float) * 64 * n, out, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
      snprintf(why, why_size, "run failed: OpenCL error %d", (int)err);
    } else {
      worst = 0.0;
      for (int i = 0; i < 64 * n; i++) {
        const double e = isnan(out[i]) ? INFINITY : fabs((double)out[i] - ref[i]);
        worst = e > worst ? e : worst;
      }
    }
  } else {
    snprintf(why, why_size, "buffers or kernel: OpenCL error %d", (int)err);
  }
  if (k)
    clReleaseKernel(k);
  cl_mem mems[3] = {ma, mb, mc};
  for (int i = 0; i < 3; i++)
    if (mems[i])
      clReleaseMemObject(mems[i]);
  return worst;
}

/* One variant in a process of its own (a fault in one, such as a descriptor that points outside local
 * memory, leaves the OpenCL context unusable for the rest): prints its JSON line; returns 1 if exact. */
static int probe_one(const dua_context_options *co, const variant *v) {
  dua_context *ctx = NULL;
  if (dua_context_create(co, &ctx) != DUA_SUCCESS) {
    fprintf(stderr, "dua_wgmma_probe: no device\n");
    return 0;
  }
  cl_context c = dua_context_cl_context(ctx);
  cl_device_id dev = dua_context_cl_device(ctx);
  cl_command_queue q = dua_context_cl_queue(ctx);
  char why[4608] = "";
  cl_program p = build_sm90a(c, dev, v->n, v->tnsp, why, sizeof why);
  double worst = -1.0;
  if (p)
    worst = run_variant(c, q, p, v, why, sizeof why);
  printf("{\"n\": %d, \"trans_b\": %d, \"core_rows\": \"%s\", \"core_order\": \"%s\", "
         "\"leading_bytes\": %u, \"stride_bytes\": %u, \"stage\": \"%s\", \"max_error\": ",
         v->n, v->tnsp, v->major ? "n-contiguous" : "k-contiguous", v->order ? "k-outer" : "n-outer", v->lead,
         v->stride,
         !p          ? "build"
         : worst < 0 ? "run"
                     : "checked");
  if (worst >= 0 && isfinite(worst))
    printf("%g", worst);
  else
    printf("null");
  printf(", \"why\": ");
  json_string(why);
  printf("}\n");
  fflush(stdout);
  if (p)
    clReleaseProgram(p);
  dua_context_destroy(ctx);
  return worst == 0.0;
}

int main(int argc, char **argv) {
  dua_context_options co;
  dua_context_options_init(&co);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      co.selector = argv[++i];
    } else {
      fprintf(stderr, "usage: dua_wgmma_probe [--device SEL]\n");
      return 2;
    }
  }
  { /* the vendor check in a child too: the parent never touches OpenCL, so that it can fork */
    const pid_t pid = fork();
    if (pid == 0) {
      dua_context *ctx = NULL;
      if (dua_context_create(&co, &ctx) != DUA_SUCCESS) {
        fprintf(stderr, "dua_wgmma_probe: no device\n");
        _exit(2);
      }
      char vendor[256] = "";
      clGetDeviceInfo(dua_context_cl_device(ctx), CL_DEVICE_VENDOR, sizeof vendor, vendor, NULL);
      const int nv = strstr(vendor, "NVIDIA") != NULL;
      if (!nv)
        fprintf(stderr, "dua_wgmma_probe: the device's vendor is \"%s\"; wgmma needs an NVIDIA sm_90 GPU\n",
                vendor);
      dua_context_destroy(ctx);
      _exit(nv ? 0 : 2);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
      return 2;
  }
  /* per width and transpose flag, both core-matrix row layouts and both core orders, each with its natural
   * byte offsets (leading = the K neighbour's, stride = the N neighbour's) and the same two numbers swapped
   */
  const int widths[2] = {8, 64};
  int exact = 0, runs = 0;
  for (int pi = 0; pi < 4; pi++) {
    const int n = widths[pi >> 1], tnsp = pi & 1;
    const unsigned k_next[2] = {128, (unsigned)n / 8 * 128}, n_next[2] = {256, 128};
    for (int major = 0; major < 2; major++)
      for (int order = 0; order < 2; order++)
        for (int swap = 0; swap < 2; swap++) {
          const variant v = {n,
                             tnsp,
                             major,
                             order,
                             swap ? n_next[order] : k_next[order],
                             swap ? k_next[order] : n_next[order]};
          fflush(stdout);
          const pid_t pid = fork();
          if (pid == 0)
            _exit(probe_one(&co, &v) ? 0 : 1);
          int st = 0;
          if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
            exact++;
          runs++;
        }
  }
  fprintf(stderr, "dua_wgmma_probe: %d of %d variants exact\n", exact, runs);
  return exact ? 0 : 1;
}
