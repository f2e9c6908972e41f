/* sm90a_build.h: the probes' route to an sm_90a program from OpenCL source (bench/wgmma_probe.c,
 * bench/tma_probe.c), as host/runtime/program.c takes it for dua's own kernels. */
#ifndef DUA_BENCH_SM90A_BUILD_H
#define DUA_BENCH_SM90A_BUILD_H

#include "dua_cl.h"

#include <stddef.h>

/* Builds the `count` source strings for the device (sm_90), uncomments the "// DUA_SM90A" lines of the PTX
 * it returns (dua_ptx_to_sm90a), writes that PTX to save_ptx when not NULL, and builds it for sm_90a. With
 * want_markers >= 0, any other number of uncommented lines is a failure. NULL on failure, with why set. */
cl_program bench_build_sm90a(cl_context c, cl_device_id dev, cl_uint count, const char **src,
                             int want_markers, const char *save_ptx, char *why, size_t why_size);

#endif
