/* sm90a_build.c: the probes' route to an sm_90a program (sm90a_build.h). */
#include "sm90a_build.h"

#include "runtime/context_internal.h" /* dua_ptx_to_sm90a */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* why = what failed and the program's build log; releases p */
static void build_failed(cl_program p, cl_device_id dev, const char *what, cl_int err, char *why,
                         size_t why_size) {
  char log[4096] = "";
  if (p)
    clGetProgramBuildInfo(p, dev, CL_PROGRAM_BUILD_LOG, sizeof log, log, NULL);
  snprintf(why, why_size, "%s failed (OpenCL error %d): %s", what, (int)err, log);
  if (p)
    clReleaseProgram(p);
}

cl_program bench_build_sm90a(cl_context c, cl_device_id dev, cl_uint count, const char **src,
                             int want_markers, const char *save_ptx, char *why, size_t why_size) {
  cl_int err;
  cl_program p = clCreateProgramWithSource(c, count, src, NULL, &err);
  if (err == CL_SUCCESS)
    err = clBuildProgram(p, 1, &dev, "", NULL, NULL);
  if (err != CL_SUCCESS) {
    build_failed(p, dev, "sm_90 build of the commented kernel", err, why, why_size);
    return NULL;
  }
  size_t bytes = 0;
  clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof bytes, &bytes, NULL);
  char *ptx = calloc(bytes + 1, 1);
  unsigned char *pp = (unsigned char *)ptx;
  clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof pp, &pp, NULL);
  clReleaseProgram(p);
  int markers = 0;
  char *patched = ptx ? dua_ptx_to_sm90a(ptx, &markers) : NULL;
  free(ptx);
  if (!patched || (want_markers >= 0 && markers != want_markers)) {
    snprintf(why, why_size, "PTX patch: %d markers found (want %d)%s", markers, want_markers,
             patched ? "" : ", or no .target line");
    free(patched);
    return NULL;
  }
  FILE *f = save_ptx ? fopen(save_ptx, "w") : NULL;
  if (f)
    fputs(patched, f), fclose(f);
  size_t len = strlen(patched) + 1;
  const unsigned char *bp = (const unsigned char *)patched;
  cl_int bin_status = CL_SUCCESS;
  p = clCreateProgramWithBinary(c, 1, &dev, &len, &bp, &bin_status, &err);
  if (err == CL_SUCCESS)
    err = clBuildProgram(p, 1, &dev, "", NULL, NULL);
  free(patched);
  if (err != CL_SUCCESS) {
    build_failed(p, dev, "sm_90a build", err, why, why_size);
    return NULL;
  }
  return p;
}
