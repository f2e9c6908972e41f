/* read_floor.c: the fastest plain read of B bytes of device memory we can write, per size: the floor under
 * any kernel that must read those bytes once (decode reads its visible K/V pages once), start-up cost
 * included. A streaming kernel XORs 16-byte words (each work-item UNROLL loads in flight per loop trip,
 * grid-stride over the buffer); for each size every configuration below is timed (device time from profiling
 * events, median of 9 after 3 warm-ups) and the best is reported next to a clEnqueueCopyBuffer that moves the
 * same bytes (half read, half written).
 *
 *   dua_read_floor [--device SEL] [--mb M ...]      (default sizes: 134 268 537 1074 2147 MB, decimal)
 *
 * Output: one JSON object per size on stdout (bytes, best read ms and its configuration, GB/s, the bytes the
 * copy moved and its ms, null if it could not run); a table on stderr. Development tool, not installed. */
#include "dua_cl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *kSource =
    "__kernel void read_all(__global const uint4 *a, long n, __global uint *sink) {\n"
    "  const long gs = get_global_size(0);\n"
    "  uint4 acc = (uint4)(0u);\n"
    "  for (long i = get_global_id(0); i < n; i += gs * UNROLL) {\n"
    "    uint4 w[UNROLL];\n"
    "    for (int u = 0; u < UNROLL; u++)\n"
    "      w[u] = i + u * gs < n ? a[i + u * gs] : (uint4)(0u);\n"
    "    for (int u = 0; u < UNROLL; u++)\n"
    "      acc ^= w[u];\n"
    "  }\n"
    "  if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x9e3779b9u) /* never, for the buffer's fill value */\n"
    "    sink[0] = 1u;\n"
    "}\n";

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Enqueues one command with its event. */
typedef cl_int (*enqueue_fn)(void *user, cl_event *ev);

/* Median device time (ms) of 9 runs of the command, after 3 warm-ups; -1 on error. */
static double time_median(enqueue_fn enqueue, void *user) {
  double ms[9];
  for (int i = -3; i < 9; i++) {
    cl_event ev = NULL;
    cl_ulong s0 = 0, s1 = 0;
    if (enqueue(user, &ev) != CL_SUCCESS || clWaitForEvents(1, &ev) != CL_SUCCESS ||
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof s0, &s0, NULL) != CL_SUCCESS ||
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof s1, &s1, NULL) != CL_SUCCESS ||
        s1 <= s0) {
      if (ev)
        clReleaseEvent(ev);
      return -1;
    }
    clReleaseEvent(ev);
    if (i >= 0)
      ms[i] = (double)(s1 - s0) * 1e-6;
  }
  qsort(ms, 9, sizeof ms[0], cmp_double);
  return ms[4];
}

typedef struct launch {
  cl_command_queue q;
  cl_kernel k;
  size_t global, local;
  cl_mem src, dst;
  size_t bytes;
} launch;

static cl_int enqueue_read(void *user, cl_event *ev) {
  launch *l = user;
  return clEnqueueNDRangeKernel(l->q, l->k, 1, NULL, &l->global, &l->local, 0, NULL, ev);
}

static cl_int enqueue_copy(void *user, cl_event *ev) {
  launch *l = user;
  return clEnqueueCopyBuffer(l->q, l->src, l->dst, 0, 0, l->bytes, 0, NULL, ev);
}

static cl_kernel build(cl_context c, cl_device_id dev, int unroll) {
  char opts[64];
  snprintf(opts, sizeof opts, "-DUNROLL=%d", unroll);
  cl_int err;
  cl_program p = clCreateProgramWithSource(c, 1, &kSource, NULL, &err);
  if (err != CL_SUCCESS || clBuildProgram(p, 1, &dev, opts, NULL, NULL) != CL_SUCCESS) {
    fprintf(stderr, "dua_read_floor: the read kernel does not build (UNROLL %d)\n", unroll);
    exit(1);
  }
  cl_kernel k = clCreateKernel(p, "read_all", &err);
  clReleaseProgram(p);
  if (err != CL_SUCCESS)
    exit(1);
  return k;
}

int main(int argc, char **argv) {
  double mb[32] = {134.2, 268.4, 536.9, 1073.7, 2147.5};
  int nmb = 5, user_sizes = 0;
  dua_context_options co;
  dua_context_options_init(&co);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
      co.selector = argv[++i];
    else if (strcmp(argv[i], "--mb") == 0) {
      if (!user_sizes)
        nmb = 0, user_sizes = 1;
      const int first = nmb;
      while (i + 1 < argc && argv[i + 1][0] != '-' && nmb < 32) {
        mb[nmb] = atof(argv[++i]);
        if (!(mb[nmb] >= 0.01 && mb[nmb] <= 1e6)) {
          fprintf(stderr, "dua_read_floor: --mb %s: must be in 0.01..1e6 (megabytes)\n", argv[i]);
          return 2;
        }
        nmb++;
      }
      if (nmb == first) {
        fprintf(stderr, "dua_read_floor: --mb needs at least one size\n");
        return 2;
      }
    } else {
      fprintf(stderr, "usage: dua_read_floor [--device SEL] [--mb M ...]\n");
      return 2;
    }
  }
  dua_context *ctx = NULL;
  if (dua_context_create(&co, &ctx) != DUA_SUCCESS) {
    fprintf(stderr, "dua_read_floor: no device\n");
    return 1;
  }
  cl_context c = dua_context_cl_context(ctx);
  cl_device_id dev = dua_context_cl_device(ctx);
  cl_int err;
  cl_command_queue q = clCreateCommandQueue(c, dev, CL_QUEUE_PROFILING_ENABLE, &err);
  if (err != CL_SUCCESS) {
    fprintf(stderr, "dua_read_floor: no profiling queue (OpenCL error %d)\n", (int)err);
    return 1;
  }
  cl_uint cus = 1;
  clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cus, &cus, NULL);
  char name[256] = "";
  clGetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name, name, NULL);
  const int unrolls[] = {1, 2, 4, 8};
  cl_kernel kernels[4];
  for (int u = 0; u < 4; u++)
    kernels[u] = build(c, dev, unrolls[u]);
  cl_mem sink = clCreateBuffer(c, CL_MEM_READ_WRITE, 16, NULL, &err);
  if (err != CL_SUCCESS) {
    fprintf(stderr, "dua_read_floor: cannot allocate 16 bytes (OpenCL error %d)\n", (int)err);
    return 1;
  }
  for (char *p = name; *p; p++) /* the name goes into JSON as is */
    if (*p == '"' || *p == '\\' || (unsigned char)*p < 32)
      *p = '_';
  fprintf(stderr, "%-10s %10s %9s %22s %9s %9s %9s\n", "MB", "read_ms", "GB/s", "best (wg x groups x U)",
          "copy_ms", "copy_GB/s", "read/copy");
  for (int s = 0; s < nmb; s++) {
    const size_t bytes = ((size_t)(mb[s] * 1e6) + 4095) & ~(size_t)4095, n16 = bytes / 16;
    cl_mem a = clCreateBuffer(c, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err != CL_SUCCESS) {
      fprintf(stderr, "dua_read_floor: cannot allocate %zu bytes\n", bytes);
      return 1;
    }
    const cl_uint fill = 0x01010101u;
    if (clEnqueueFillBuffer(q, a, &fill, sizeof fill, 0, bytes, 0, NULL, NULL) != CL_SUCCESS ||
        clFinish(q) != CL_SUCCESS) {
      fprintf(stderr, "dua_read_floor: cannot fill %zu bytes\n", bytes);
      return 1;
    }
    double best = 1e30;
    size_t best_local = 0, best_groups = 0;
    int best_unroll = 0;
    const size_t locals[] = {256, 512, 1024}, per_cu[] = {1, 2, 4, 8, 16, 32};
    for (int u = 0; u < 4; u++)
      for (int li = 0; li < 3; li++)
        for (int gi = 0; gi < 7; gi++) {
          /* groups: per_cu[gi] per compute unit, or (gi == 6) one 16-byte load per work-item and trip */
          size_t groups = gi < 6 ? per_cu[gi] * cus : (n16 / unrolls[u] + locals[li] - 1) / locals[li];
          launch l = {q, kernels[u], groups * locals[li], locals[li], a, NULL, 0};
          const cl_long n = (cl_long)n16;
          if (clSetKernelArg(l.k, 0, sizeof a, &a) != CL_SUCCESS ||
              clSetKernelArg(l.k, 1, sizeof n, &n) != CL_SUCCESS ||
              clSetKernelArg(l.k, 2, sizeof sink, &sink) != CL_SUCCESS) {
            fprintf(stderr, "dua_read_floor: clSetKernelArg failed\n");
            return 1;
          }
          const double ms = time_median(enqueue_read, &l);
          if (ms > 0 && ms < best)
            best = ms, best_local = locals[li], best_groups = groups, best_unroll = unrolls[u];
        }
    if (best_unroll == 0) {
      fprintf(stderr, "dua_read_floor: no configuration of the read kernel ran at %zu bytes\n", bytes);
      return 1;
    }
    /* the copy moves 2 x half bytes (half read, half written), half = bytes / 2 rounded up to 4 KiB */
    const size_t half = ((bytes / 2) + 4095) & ~(size_t)4095;
    double copy_ms = -1;
    cl_mem b = clCreateBuffer(c, CL_MEM_READ_WRITE, half, NULL, &err);
    if (err == CL_SUCCESS) {
      launch l = {q, NULL, 0, 0, a, b, half};
      copy_ms = time_median(enqueue_copy, &l);
      clReleaseMemObject(b);
    }
    clReleaseMemObject(a);
    char cfg[64];
    snprintf(cfg, sizeof cfg, "%zu x %zu x %d", best_local, best_groups, best_unroll);
    fprintf(stderr, "%-10.1f %10.4f %9.1f %22s %9.4f %9.1f %9.3f\n", bytes / 1e6, best, bytes / best / 1e6,
            cfg, copy_ms, copy_ms > 0 ? 2.0 * half / copy_ms / 1e6 : 0.0, copy_ms > 0 ? best / copy_ms : 0.0);
    char copy_json[32] = "null";
    if (copy_ms > 0)
      snprintf(copy_json, sizeof copy_json, "%.5f", copy_ms);
    printf("{\"tool\": \"dua_read_floor\", \"device\": \"%s\", \"bytes\": %zu, \"read_ms\": %.5f, "
           "\"read_gbps\": %.1f, \"work_group\": %zu, \"groups\": %zu, \"unroll\": %d, \"copy_bytes\": %zu, "
           "\"copy_same_bytes_ms\": %s}\n",
           name, bytes, best, bytes / best / 1e6, best_local, best_groups, best_unroll, 2 * half, copy_json);
    fflush(stdout);
  }
  for (int u = 0; u < 4; u++)
    clReleaseKernel(kernels[u]);
  clReleaseMemObject(sink);
  clReleaseCommandQueue(q);
  dua_context_destroy(ctx);
  return 0;
}
