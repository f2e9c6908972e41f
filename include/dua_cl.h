/* dua_cl.h: OpenCL interop for libdua. Wrap a caller's cl_context / cl_command_queue / cl_mem, or get
 * dua's own objects to enqueue work in the same stream. dua never releases what it did not create. */
#ifndef DUA_CL_H
#define DUA_CL_H

#include "dua.h"

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A context on the caller's OpenCL objects. `device` must belong to `context`; `queue` (may be NULL:
 * dua then creates its own, with profiling) must be on that context and device, and in order (an
 * out-of-order queue gives DUA_ERROR_UNSUPPORTED: dua's successive launches depend on each other). The
 * caller's objects are retained for the context's lifetime and released afterwards; dua never releases the
 * caller's last reference. options may be NULL (its device selection fields are ignored). */
DUA_API dua_status dua_context_create_from_cl(cl_context context, cl_device_id device, cl_command_queue queue,
                                              const dua_context_options *options, dua_context **out);

DUA_API cl_context dua_context_cl_context(const dua_context *ctx);
DUA_API cl_device_id dua_context_cl_device(const dua_context *ctx);
DUA_API cl_command_queue dua_context_cl_queue(const dua_context *ctx);

/* Wraps a caller's cl_mem (retained, released at destroy; the memory itself stays the caller's). It must
 * belong to the context's cl_context. */
DUA_API dua_status dua_buffer_wrap_cl(dua_context *ctx, cl_mem mem, dua_buffer **out);
DUA_API cl_mem dua_buffer_cl_mem(const dua_buffer *buffer);

#ifdef __cplusplus
}
#endif

#endif /* DUA_CL_H */
