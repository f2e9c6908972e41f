/* buffer.c: device buffers (own or wrapped cl_mem), blocking host copies, and tensor view helpers. */
#include "runtime/context_internal.h"

#include <stdlib.h>

dua_status dua_buffer_create(dua_context *ctx, size_t bytes, dua_buffer **out) {
  if (!ctx || !out)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_buffer_create: %s is NULL", ctx ? "out" : "ctx");
  if (bytes == 0)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_buffer_create: bytes is 0");
  if (ctx->info.max_alloc_bytes && bytes > ctx->info.max_alloc_bytes)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_buffer_create: bytes = %zu exceeds the device's largest allocation (%llu)", bytes,
                    (unsigned long long)ctx->info.max_alloc_bytes);
  dua_buffer *b = calloc(1, sizeof *b);
  if (!b)
    return DUA_ERROR_OUT_OF_MEMORY;
  cl_int err = CL_SUCCESS;
  b->mem = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  if (err != CL_SUCCESS) {
    free(b);
    return dua_fail(ctx, (dua_status)err, "clCreateBuffer(%zu bytes) failed: %s", bytes,
                    dua_status_string((dua_status)err));
  }
  b->ctx = ctx;
  b->bytes = bytes;
  *out = b;
  return DUA_SUCCESS;
}

dua_status dua_buffer_wrap_cl(dua_context *ctx, cl_mem mem, dua_buffer **out) {
  if (!ctx || !mem || !out)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_buffer_wrap_cl: %s is NULL",
                    !ctx   ? "ctx"
                    : !mem ? "mem"
                           : "out");
  cl_context owner = NULL;
  size_t bytes = 0;
  if (clGetMemObjectInfo(mem, CL_MEM_CONTEXT, sizeof owner, &owner, NULL) != CL_SUCCESS ||
      clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof bytes, &bytes, NULL) != CL_SUCCESS)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_buffer_wrap_cl: mem is not a valid cl_mem");
  if (owner != ctx->cl_ctx)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "dua_buffer_wrap_cl: mem belongs to another cl_context");
  dua_buffer *b = calloc(1, sizeof *b);
  if (!b)
    return DUA_ERROR_OUT_OF_MEMORY;
  clRetainMemObject(mem);
  b->ctx = ctx;
  b->mem = mem;
  b->bytes = bytes;
  *out = b;
  return DUA_SUCCESS;
}

void dua_buffer_destroy(dua_buffer *buffer) {
  if (!buffer)
    return;
  clReleaseMemObject(buffer->mem);
  free(buffer);
}

size_t dua_buffer_size(const dua_buffer *buffer) {
  return buffer ? buffer->bytes : 0;
}
cl_mem dua_buffer_cl_mem(const dua_buffer *buffer) {
  return buffer ? buffer->mem : NULL;
}

static dua_status check_range(const dua_buffer *buffer, size_t offset, size_t bytes, const void *ptr,
                              const char *fn) {
  if (!buffer)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (!ptr && bytes)
    return dua_fail(buffer->ctx, DUA_ERROR_INVALID_ARGUMENT, "%s: host pointer is NULL", fn);
  if (offset > buffer->bytes || bytes > buffer->bytes - offset)
    return dua_fail(buffer->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "%s: range [%zu, %zu + %zu) exceeds the buffer's %zu bytes", fn, offset, offset, bytes,
                    buffer->bytes);
  return DUA_SUCCESS;
}

dua_status dua_buffer_write(dua_buffer *buffer, size_t offset, size_t bytes, const void *src) {
  dua_status st = check_range(buffer, offset, bytes, src, "dua_buffer_write");
  if (st != DUA_SUCCESS || bytes == 0)
    return st;
  cl_int err =
      clEnqueueWriteBuffer(buffer->ctx->queue, buffer->mem, CL_TRUE, offset, bytes, src, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return dua_fail(buffer->ctx, (dua_status)err, "clEnqueueWriteBuffer failed: %s",
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

dua_status dua_buffer_read(const dua_buffer *buffer, size_t offset, size_t bytes, void *dst) {
  dua_status st = check_range(buffer, offset, bytes, dst, "dua_buffer_read");
  if (st != DUA_SUCCESS || bytes == 0)
    return st;
  cl_int err =
      clEnqueueReadBuffer(buffer->ctx->queue, buffer->mem, CL_TRUE, offset, bytes, dst, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return dua_fail(buffer->ctx, (dua_status)err, "clEnqueueReadBuffer failed: %s",
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

dua_status dua_buffer_read_rows(const dua_buffer *buffer, size_t offset, size_t row_bytes, size_t row_pitch,
                                size_t rows, void *dst) {
  if (!buffer)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (rows == 0 || row_bytes == 0)
    return DUA_SUCCESS;
  if (row_pitch < row_bytes)
    return dua_fail(buffer->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_buffer_read_rows: row pitch %zu is smaller than the row's %zu bytes", row_pitch,
                    row_bytes);
  if (rows - 1 > (SIZE_MAX - row_bytes) / row_pitch)
    return dua_fail(buffer->ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "dua_buffer_read_rows: %zu rows of pitch %zu overflow size_t", rows, row_pitch);
  dua_status st =
      check_range(buffer, offset, (rows - 1) * row_pitch + row_bytes, dst, "dua_buffer_read_rows");
  if (st != DUA_SUCCESS)
    return st;
  const size_t buffer_origin[3] = {offset, 0, 0}, host_origin[3] = {0, 0, 0},
               region[3] = {row_bytes, rows, 1};
  cl_int err = clEnqueueReadBufferRect(buffer->ctx->queue, buffer->mem, CL_TRUE, buffer_origin, host_origin,
                                       region, row_pitch, 0, row_bytes, 0, dst, 0, NULL, NULL);
  if (err != CL_SUCCESS)
    return dua_fail(buffer->ctx, (dua_status)err, "clEnqueueReadBufferRect failed: %s",
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

dua_status dua_buffer_fill_bytes(dua_buffer *buffer, size_t offset, size_t bytes, uint8_t value) {
  dua_status st = check_range(buffer, offset, bytes, &value, "dua_buffer_fill_bytes");
  if (st != DUA_SUCCESS || bytes == 0)
    return st;
  cl_int err = clEnqueueFillBuffer(buffer->ctx->queue, buffer->mem, &value, 1, offset, bytes, 0, NULL, NULL);
  if (err == CL_SUCCESS)
    err = clFinish(buffer->ctx->queue);
  if (err != CL_SUCCESS)
    return dua_fail(buffer->ctx, (dua_status)err, "clEnqueueFillBuffer failed: %s",
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

size_t dua_dtype_size(dua_dtype dtype) {
  switch (dtype) {
  case DUA_F32:
    return 4;
  case DUA_F16:
    return 2;
  }
  return 0;
}

dua_tensor dua_tensor_contiguous(dua_buffer *buffer, size_t offset, dua_dtype dtype, int64_t s0, int64_t s1,
                                 int64_t s2, int64_t s3) {
  dua_tensor t;
  t.buffer = buffer;
  t.offset = offset;
  t.dtype = dtype;
  t.shape[0] = s0;
  t.shape[1] = s1;
  t.shape[2] = s2;
  t.shape[3] = s3;
  t.strides[3] = 1;
  t.strides[2] = s3;
  t.strides[1] = s2 * s3;
  t.strides[0] = s1 * s2 * s3;
  return t;
}

dua_status dua_tensor_check(dua_context *ctx, const dua_tensor *t, const char *name) {
  if (!t)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "tensor %s is NULL", name);
  if (!t->buffer)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "tensor %s has no buffer", name);
  if (t->buffer->ctx != ctx)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "tensor %s's buffer belongs to another context", name);
  size_t es = dua_dtype_size(t->dtype);
  if (es == 0)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "tensor %s has unknown dtype %d", name, (int)t->dtype);
  if (t->offset % es != 0)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "tensor %s: offset %zu is not a multiple of %zu", name,
                    t->offset, es);
  /* last element = sum (shape-1)*stride must fit in the buffer, with no overflow */
  uint64_t last = 0;
  for (int d = 0; d < 4; d++) {
    if (t->shape[d] <= 0)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "tensor %s: shape[%d] = %lld must be positive", name,
                      d, (long long)t->shape[d]);
    if (t->strides[d] < 0 || t->strides[d] > ((int64_t)1 << 40) || t->shape[d] > ((int64_t)1 << 31))
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                      "tensor %s: shape[%d] = %lld / strides[%d] = %lld out of range", name, d,
                      (long long)t->shape[d], d, (long long)t->strides[d]);
    uint64_t span = (uint64_t)(t->shape[d] - 1) * (uint64_t)t->strides[d];
    if (span > (UINT64_MAX >> 2) - last)
      return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT, "tensor %s: extent overflows", name);
    last += span;
  }
  uint64_t end = t->offset / es + last + 1;
  if (end > UINT64_MAX / es || end * es > t->buffer->bytes)
    return dua_fail(ctx, DUA_ERROR_INVALID_ARGUMENT,
                    "tensor %s: its last element lies past the end of its %zu-byte buffer", name,
                    t->buffer->bytes);
  return DUA_SUCCESS;
}
