/* local_mem_probe.c: how much local memory one work-group of an OpenCL kernel may use on the first GPU: a
 * kernel with a static __local array (64 B or 32 KB) and a __local argument of 16 KB .. 234 KB, launched on
 * 528 work-groups of 256 work-items, each writing and reading back its whole local memory. Prints the
 * device's CL_DEVICE_LOCAL_MEM_SIZE, CL_KERNEL_LOCAL_MEM_SIZE and the enqueue status per size (NVIDIA's
 * OpenCL on an H100: 49152, and CL_OUT_OF_RESOURCES (-5) for any total above 48 KB, static or dynamic;
 * bench/NOTES-mma.md). cc -O1 -o local_mem_probe bench/local_mem_probe.c -lOpenCL && ./local_mem_probe */
#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>
static const char *src =
    "__kernel void k(__global uint *out, __local uint *buf, uint n) {\n"
    "  __local uint fixed[STATIC_WORDS];\n"
    "  const uint lid = get_local_id(0), g = get_group_id(0), step = get_local_size(0);\n"
    "  for (uint i = lid; i < n; i += step)\n"
    "    buf[i] = i * 2654435761u ^ g;\n"
    "  for (uint i = lid; i < STATIC_WORDS; i += step)\n"
    "    fixed[i] = i + g;\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  uint bad = 0;\n"
    "  for (uint i = lid; i < n; i += step)\n"
    "    bad += buf[n - 1 - i] != ((n - 1 - i) * 2654435761u ^ g);\n"
    "  for (uint i = lid; i < STATIC_WORDS; i += step)\n"
    "    bad += fixed[STATIC_WORDS - 1 - i] != STATIC_WORDS - 1 - i + g;\n"
    "  atomic_add(out, bad);\n"
    "}\n";

int main(void) {
  cl_platform_id platforms[8];
  cl_uint np = 0;
  cl_device_id d = NULL;
  cl_int e = clGetPlatformIDs(8, platforms, &np);
  for (cl_uint i = 0; e == CL_SUCCESS && i < np && i < 8 && !d; i++)
    if (clGetDeviceIDs(platforms[i], CL_DEVICE_TYPE_GPU, 1, &d, NULL) != CL_SUCCESS)
      d = NULL;
  if (!d) {
    fprintf(stderr, "local_mem_probe: no OpenCL GPU\n");
    return 1;
  }
  cl_ulong lm = 0;
  clGetDeviceInfo(d, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lm, &lm, NULL);
  printf("CL_DEVICE_LOCAL_MEM_SIZE %llu\n", (unsigned long long)lm);
  cl_context c = clCreateContext(NULL, 1, &d, NULL, NULL, &e);
  cl_command_queue q = e == CL_SUCCESS ? clCreateCommandQueueWithProperties(c, d, NULL, &e) : NULL;
  if (e != CL_SUCCESS) {
    fprintf(stderr, "local_mem_probe: context or queue: %d\n", e);
    return 1;
  }
  int statics[2] = {16, 8192}; /* words: 64 B or 32 KB static */
  for (int si = 0; si < 2; si++) {
    char opt[64];
    snprintf(opt, sizeof opt, "-DSTATIC_WORDS=%d", statics[si]);
    cl_program pr = clCreateProgramWithSource(c, 1, &src, NULL, &e);
    e = clBuildProgram(pr, 1, &d, opt, NULL, NULL);
    if (e) {
      printf("build %d\n", e);
      return 1;
    }
    cl_kernel k = clCreateKernel(pr, "k", &e);
    size_t sizes[] = {
        16384, 40960, 49152, 65536, 98304, 131072, 163840, 196608, 221184, 232448 - 4 * statics[si], 240000};
    for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
      cl_uint zero = 0, n = (cl_uint)(sizes[i] / 4);
      cl_mem out = clCreateBuffer(c, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, 4, &zero, &e);
      clSetKernelArg(k, 0, sizeof out, &out);
      cl_int ea = clSetKernelArg(k, 1, sizes[i], NULL);
      clSetKernelArg(k, 2, sizeof n, &n);
      cl_ulong klm = 0;
      clGetKernelWorkGroupInfo(k, d, CL_KERNEL_LOCAL_MEM_SIZE, sizeof klm, &klm, NULL);
      size_t gl = 132 * 4 * 256, lo = 256;
      cl_int en = clEnqueueNDRangeKernel(q, k, 1, NULL, &gl, &lo, 0, NULL, NULL);
      cl_int ef = clFinish(q);
      cl_uint bad = 99;
      clEnqueueReadBuffer(q, out, CL_TRUE, 0, 4, &bad, 0, NULL, NULL);
      printf(
          "static %6d B dynamic %6zu B: setarg %d kernel_local_mem %llu enqueue %d finish %d mismatches %u\n",
          4 * statics[si], sizes[i], ea, (unsigned long long)klm, en, ef, bad);
      clReleaseMemObject(out);
    }
  }
  return 0;
}
