/* status.c: status text, OpenCL error names, the context's last-error record and the log callback. */
#include "runtime/context_internal.h"

#include <stdio.h>
#include <string.h>

#ifndef DUA_VERSION_STRING
#define DUA_VERSION_STRING "0.0.0"
#endif

const char *dua_version(void) {
  return DUA_VERSION_STRING;
}

const char *dua_cl_error_name(cl_int code) {
  switch (code) {
    // clang-format off
#define X(c)                                                                                                 \
  case c:                                                                                                    \
    return #c;
    X(CL_DEVICE_NOT_FOUND)
    X(CL_DEVICE_NOT_AVAILABLE) X(CL_COMPILER_NOT_AVAILABLE) X(CL_MEM_OBJECT_ALLOCATION_FAILURE) X(
        CL_OUT_OF_RESOURCES) X(CL_OUT_OF_HOST_MEMORY) X(CL_PROFILING_INFO_NOT_AVAILABLE)
        X(CL_MEM_COPY_OVERLAP) X(CL_IMAGE_FORMAT_MISMATCH) X(CL_IMAGE_FORMAT_NOT_SUPPORTED) X(
            CL_BUILD_PROGRAM_FAILURE) X(CL_MAP_FAILURE) X(CL_MISALIGNED_SUB_BUFFER_OFFSET)
            X(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST) X(CL_COMPILE_PROGRAM_FAILURE) X(
                CL_LINKER_NOT_AVAILABLE) X(CL_LINK_PROGRAM_FAILURE) X(CL_DEVICE_PARTITION_FAILED)
                X(CL_KERNEL_ARG_INFO_NOT_AVAILABLE) X(CL_INVALID_VALUE) X(CL_INVALID_DEVICE_TYPE) X(
                    CL_INVALID_PLATFORM) X(CL_INVALID_DEVICE) X(CL_INVALID_CONTEXT)
                    X(CL_INVALID_QUEUE_PROPERTIES) X(CL_INVALID_COMMAND_QUEUE) X(CL_INVALID_HOST_PTR) X(
                        CL_INVALID_MEM_OBJECT) X(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR) X(CL_INVALID_IMAGE_SIZE)
                        X(CL_INVALID_SAMPLER) X(CL_INVALID_BINARY) X(CL_INVALID_BUILD_OPTIONS)
                            X(CL_INVALID_PROGRAM) X(CL_INVALID_PROGRAM_EXECUTABLE) X(CL_INVALID_KERNEL_NAME)
                                X(CL_INVALID_KERNEL_DEFINITION) X(CL_INVALID_KERNEL) X(CL_INVALID_ARG_INDEX)
                                    X(CL_INVALID_ARG_VALUE) X(CL_INVALID_ARG_SIZE) X(CL_INVALID_KERNEL_ARGS)
                                        X(CL_INVALID_WORK_DIMENSION) X(CL_INVALID_WORK_GROUP_SIZE)
                                            X(CL_INVALID_WORK_ITEM_SIZE) X(CL_INVALID_GLOBAL_OFFSET)
                                                X(CL_INVALID_EVENT_WAIT_LIST) X(CL_INVALID_EVENT)
                                                    X(CL_INVALID_OPERATION) X(CL_INVALID_GL_OBJECT) X(
                                                        CL_INVALID_BUFFER_SIZE) X(CL_INVALID_MIP_LEVEL)
                                                        X(CL_INVALID_GLOBAL_WORK_SIZE) X(CL_INVALID_PROPERTY)
                                                            X(CL_INVALID_IMAGE_DESCRIPTOR)
                                                                X(CL_INVALID_COMPILER_OPTIONS)
                                                                    X(CL_INVALID_LINKER_OPTIONS)
                                                                        X(CL_INVALID_DEVICE_PARTITION_COUNT)
    // clang-format on
#undef X
                                                                            case -1001
        : return "CL_PLATFORM_NOT_FOUND_KHR";
  default:
    return NULL;
  }
}

const char *dua_status_string(dua_status status) {
  if (status == DUA_ERROR_CAPACITY) /* declared with the KV cache, outside the enum */
    return "KV cache capacity exhausted (no free page or sequence slot)";
  switch (status) {
  case DUA_SUCCESS:
    return "success";
  case DUA_ERROR_INVALID_ARGUMENT:
    return "invalid argument";
  case DUA_ERROR_UNSUPPORTED:
    return "unsupported";
  case DUA_ERROR_OUT_OF_MEMORY:
    return "out of host memory";
  case DUA_ERROR_NO_PLATFORM:
    return "no OpenCL platform found (is an ICD such as pocl-opencl-icd installed?)";
  case DUA_ERROR_NO_DEVICE:
    return "no OpenCL device matches the selection";
  case DUA_ERROR_BUILD_FAILED:
    return "OpenCL program build failed";
  case DUA_ERROR_IO:
    return "file input/output error";
  case DUA_ERROR_CORRUPT_FILE:
    return "file is corrupt or does not match";
  case DUA_ERROR_INTERNAL:
    return "internal error";
  }
  const char *cl = dua_cl_error_name((cl_int)status);
  if (cl)
    return cl;
  return (int)status < 0 && (int)status > -2000 ? "unknown OpenCL error" : "unknown status";
}

dua_status dua_fail(dua_context *ctx, dua_status status, const char *fmt, ...) {
  if (!ctx || !ctx->last_error)
    return status;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(ctx->last_error, DUA_ERROR_TEXT_MAX, fmt, ap);
  va_end(ap);
  dua_log(ctx, DUA_LOG_ERROR, "%s", ctx->last_error);
  return status;
}

void dua_error_append(dua_context *ctx, const char *text) {
  if (!ctx || !ctx->last_error || !text)
    return;
  size_t used = strlen(ctx->last_error);
  if (used + 1 < DUA_ERROR_TEXT_MAX)
    snprintf(ctx->last_error + used, DUA_ERROR_TEXT_MAX - used, "%s", text);
}

void dua_log(const dua_context *ctx, dua_log_level level, const char *fmt, ...) {
  if (!ctx || !ctx->log || level > ctx->log_level)
    return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ctx->log(level, msg, ctx->log_user);
}

const char *dua_context_last_error(const dua_context *ctx) {
  if (!ctx || !ctx->last_error)
    return "no context";
  return ctx->last_error;
}
