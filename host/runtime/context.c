/* context.c: dua_context lifecycle: device selection, OpenCL context/queue (own or the caller's), probes. */
#include "runtime/context_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dua_context_options_init(dua_context_options *options) {
  if (!options)
    return;
  memset(options, 0, sizeof *options);
  options->device_index = -1;
  options->log_level = DUA_LOG_ERROR;
}

int dua_env_flag(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

static dua_context *context_alloc(const dua_context_options *options) {
  dua_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx)
    return NULL;
  ctx->last_error = calloc(1, DUA_ERROR_TEXT_MAX);
  if (!ctx->last_error) {
    free(ctx);
    return NULL;
  }
  static atomic_uint_fast64_t next_serial = 1;
  ctx->serial = (uint64_t)atomic_fetch_add(&next_serial, 1);
  ctx->log_level = DUA_LOG_ERROR;
  if (options) {
    ctx->log = options->log;
    ctx->log_user = options->log_user;
    ctx->log_level = options->log_level;
    ctx->fast_paths_disabled = options->disable_fast_paths != 0;
  }
  if (dua_env_flag("DUA_NO_MMA"))
    ctx->fast_paths_disabled = 1;
  const char *dir = getenv("DUA_CL_DIR");
  if (dir && *dir)
    snprintf(ctx->cl_dir, sizeof ctx->cl_dir, "%s", dir);
  return ctx;
}

/* Shared tail of both constructors: queue, static info, caches, probes. */
static dua_status context_finish_setup(dua_context *ctx) {
  dua_status st = dua_device_query(ctx->platform, ctx->device, &ctx->info);
  if (st != DUA_SUCCESS)
    return st;
  if (!ctx->queue) {
    cl_int err = CL_SUCCESS;
    ctx->queue = clCreateCommandQueue(ctx->cl_ctx, ctx->device, CL_QUEUE_PROFILING_ENABLE, &err);
    if (err != CL_SUCCESS)
      return dua_fail(ctx, (dua_status)err, "clCreateCommandQueue failed: %s",
                      dua_status_string((dua_status)err));
  }
  dua_disk_cache_init(ctx);
  dua_probe_run(ctx);
  dua_log(ctx, DUA_LOG_INFO, "dua context on %s / %s", ctx->info.platform_name, ctx->info.name);
  return DUA_SUCCESS;
}

dua_status dua_context_create(const dua_context_options *options, dua_context **out) {
  if (!out)
    return DUA_ERROR_INVALID_ARGUMENT;
  int index = options ? options->device_index : -1;
  const char *selector = options ? options->selector : NULL;
  char why[512] = "";
  if (index < 0) {
    if (!selector)
      selector = getenv("DUA_DEVICE");
    dua_status st = dua_device_select(selector, &index, why, sizeof why);
    if (st != DUA_SUCCESS) {
      if (options && options->log)
        options->log(DUA_LOG_ERROR, why, options->log_user);
      return st;
    }
  }
  dua_context *ctx = context_alloc(options);
  if (!ctx)
    return DUA_ERROR_OUT_OF_MEMORY;
  dua_status st = dua_device_lookup(index, &ctx->platform, &ctx->device);
  if (st != DUA_SUCCESS) {
    if (options && options->log)
      options->log(DUA_LOG_ERROR, "device index out of range", options->log_user);
    dua_context_destroy(ctx);
    return st;
  }
  cl_int err = CL_SUCCESS;
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)ctx->platform, 0};
  ctx->cl_ctx = clCreateContext(props, 1, &ctx->device, NULL, NULL, &err);
  if (err != CL_SUCCESS) {
    dua_context_destroy(ctx);
    return (dua_status)err;
  }
  st = context_finish_setup(ctx);
  if (st != DUA_SUCCESS) {
    dua_context_destroy(ctx);
    return st;
  }
  ctx->info.index = index;
  *out = ctx;
  return DUA_SUCCESS;
}

dua_status dua_context_create_from_cl(cl_context context, cl_device_id device, cl_command_queue queue,
                                      const dua_context_options *options, dua_context **out) {
  if (!out || !context || !device)
    return DUA_ERROR_INVALID_ARGUMENT;
  /* The device must belong to the context, and the queue to both. */
  cl_uint ndev = 0;
  cl_device_id devs[64];
  if (clGetContextInfo(context, CL_CONTEXT_DEVICES, sizeof devs, devs, NULL) != CL_SUCCESS ||
      clGetContextInfo(context, CL_CONTEXT_NUM_DEVICES, sizeof ndev, &ndev, NULL) != CL_SUCCESS)
    return DUA_ERROR_INVALID_ARGUMENT;
  int found = 0;
  for (cl_uint i = 0; i < ndev && i < 64; i++)
    found |= devs[i] == device;
  if (!found)
    return DUA_ERROR_INVALID_ARGUMENT;
  if (queue) {
    cl_context qctx = NULL;
    cl_device_id qdev = NULL;
    if (clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof qctx, &qctx, NULL) != CL_SUCCESS ||
        clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof qdev, &qdev, NULL) != CL_SUCCESS ||
        qctx != context || qdev != device)
      return DUA_ERROR_INVALID_ARGUMENT;
    cl_command_queue_properties props = 0;
    if (clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof props, &props, NULL) != CL_SUCCESS ||
        (props & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE))
      return DUA_ERROR_UNSUPPORTED; /* dua's launches depend on in-order execution */
  }
  dua_context *ctx = context_alloc(options);
  if (!ctx)
    return DUA_ERROR_OUT_OF_MEMORY;
  cl_platform_id platform = NULL;
  clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL);
  ctx->platform = platform;
  ctx->device = device;
  ctx->cl_ctx = context;
  clRetainContext(context);
  if (queue) {
    ctx->queue = queue;
    clRetainCommandQueue(queue);
  }
  dua_status st = context_finish_setup(ctx);
  if (st != DUA_SUCCESS) {
    dua_context_destroy(ctx);
    return st;
  }
  ctx->info.index = -1; /* not from dua's enumeration */
  *out = ctx;
  return DUA_SUCCESS;
}

void dua_tma_entry_release(struct dua_tma_entry *e) {
  if (e->state >= 2) { /* retained from the build on; a pair seen once only is not */
    clReleaseMemObject(e->k);
    clReleaseMemObject(e->v);
  }
  if (e->ready)
    clReleaseEvent(e->ready);
  e->k = e->v = NULL;
  e->ready = NULL;
  e->state = 0;
  e->used = 0;
}

void dua_context_destroy(dua_context *ctx) {
  if (!ctx)
    return;
  if (ctx->queue)
    clFinish(ctx->queue);
  dua_program_cache_release(ctx);
  if (ctx->tuning && ctx->tuning_free)
    ctx->tuning_free(ctx->tuning);
  if (ctx->scratch)
    clReleaseMemObject(ctx->scratch);
  if (ctx->counters)
    clReleaseMemObject(ctx->counters);
  for (int i = 0; i < DUA_TMA_ENTRIES; i++) /* the forward's TMA maps (host/attention/tma_maps.c) */
    dua_tma_entry_release(&ctx->tma[i]);
  if (ctx->tma_device)
    clReleaseMemObject(ctx->tma_device);
  if (ctx->queue)
    clReleaseCommandQueue(ctx->queue);
  if (ctx->cl_ctx)
    clReleaseContext(ctx->cl_ctx);
  free(ctx->last_error);
  free(ctx);
}

dua_status dua_context_device_info(const dua_context *ctx, dua_device_info *info) {
  if (!ctx || !info)
    return DUA_ERROR_INVALID_ARGUMENT;
  *info = ctx->info;
  return DUA_SUCCESS;
}

dua_status dua_context_finish(dua_context *ctx) {
  if (!ctx)
    return DUA_ERROR_INVALID_ARGUMENT;
  cl_int err = clFinish(ctx->queue);
  if (err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)err, "clFinish failed: %s", dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

dua_status dua_context_cache_stats(const dua_context *ctx, dua_cache_stats *stats) {
  if (!ctx || !stats)
    return DUA_ERROR_INVALID_ARGUMENT;
  *stats = ctx->cache;
  return DUA_SUCCESS;
}

cl_context dua_context_cl_context(const dua_context *ctx) {
  return ctx ? ctx->cl_ctx : NULL;
}
cl_device_id dua_context_cl_device(const dua_context *ctx) {
  return ctx ? ctx->device : NULL;
}
cl_command_queue dua_context_cl_queue(const dua_context *ctx) {
  return ctx ? ctx->queue : NULL;
}

/* A grow-only device buffer of at least bytes in *buf (*have bytes now), zero-filled when made if zeroed. */
static dua_status grow_buffer(dua_context *ctx, cl_mem *buf, size_t *have, size_t bytes, int zeroed,
                              const char *what, cl_mem *out) {
  if (bytes <= *have && *buf) {
    *out = *buf;
    return DUA_SUCCESS;
  }
  if (ctx->info.max_alloc_bytes && bytes > ctx->info.max_alloc_bytes)
    return dua_fail(ctx, DUA_ERROR_UNSUPPORTED,
                    "%s of %zu bytes exceeds the device's largest allocation (%llu)", what, bytes,
                    (unsigned long long)ctx->info.max_alloc_bytes);
  if (*buf) {
    clFinish(ctx->queue); /* queued work may still use the old buffer */
    clReleaseMemObject(*buf);
    *buf = NULL;
    *have = 0;
  }
  cl_int err = CL_SUCCESS;
  cl_mem mem = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
  if (err == CL_SUCCESS && zeroed) {
    const cl_int zero = 0;
    err = clEnqueueFillBuffer(ctx->queue, mem, &zero, sizeof zero, 0, bytes, 0, NULL, NULL);
    if (err != CL_SUCCESS)
      clReleaseMemObject(mem);
  }
  if (err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)err, "allocating %zu bytes of %s failed: %s", bytes, what,
                    dua_status_string((dua_status)err));
  *buf = mem;
  *have = bytes;
  *out = mem;
  return DUA_SUCCESS;
}

dua_status dua_context_scratch(dua_context *ctx, size_t bytes, cl_mem *out) {
  return grow_buffer(ctx, &ctx->scratch, &ctx->scratch_bytes, bytes, 0, "scratch", out);
}

dua_status dua_context_counters(dua_context *ctx, size_t count, cl_mem *out) {
  const size_t bytes = (count < 1024 ? 1024 : count) * sizeof(cl_int); /* few regrowths */
  return grow_buffer(ctx, &ctx->counters, &ctx->counters_bytes, bytes, 1, "counters", out);
}
