/* tma_maps.c: the tensor maps of the wgmma forward's TMA variant (cl/attn_fwd_mma.cl, DUA_TMA). A tensor map
 * tells Hopper's tensor memory accelerator one tensor's address, shape and strides and the box and swizzle of
 * its copies; CUDA programs encode it on the host through the driver API, which OpenCL lacks, so the kernel
 * dua_tma_maps (one warp) builds the K and V maps on the device with tensormap.replace (bench/tma_probe.c).
 * The forward takes them by value, in parameter space, because a map in global memory needs an acquire fence
 * in every work-group, which cost ~2 us per work-group on an H200 (bench/NOTES-mma.md). So the host needs the
 * maps' bytes, and nothing may wait for them:
 *
 * - a pair of K and V buffers (with strides, offsets and shape) seen for the first time is only noted;
 * - seen again, its maps are built and read back without blocking (retaining both buffers from then on: a
 *   released buffer's handle could come back as another buffer, at another address, with the same key);
 * - once the read has landed, calls on the pair run on TMA. Until then, and for pairs not kept, cp.async.
 *
 * The context keeps DUA_TMA_ENTRIES pairs, the least recently used replaced first: a model whose layers'
 * buffers all fit runs on TMA from its third pass on; one with more, or a caller with new buffers at every
 * call, stays on cp.async without building a map or holding a buffer more than it notes. */
#include "attention/forward_internal.h"

#include <string.h>

/* Whether entry e holds c's pair */
static int same_tensors(const struct dua_tma_entry *e, const dua_fwd_call *c, const cl_int dims[3]) {
  return e->k == c->k && e->v == c->v && !memcmp(&e->k_strides, &c->k_strides, sizeof c->k_strides) &&
         !memcmp(&e->v_strides, &c->v_strides, sizeof c->v_strides) && e->offsets.s[1] == c->offsets.s[1] &&
         e->offsets.s[2] == c->offsets.s[2] && !memcmp(e->dims, dims, sizeof e->dims);
}

/* Enqueues dua_tma_maps for c into slot `slot` of ctx->tma_device and the read of its 256 bytes into e->maps
 * (e->ready its event). */
static dua_status build(dua_context *ctx, struct dua_tma_entry *e, int slot, const dua_fwd_call *c,
                        const char *sources, const char *options) {
  cl_int err = CL_SUCCESS;
  if (!ctx->tma_device && !(ctx->tma_device = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE,
                                                             DUA_TMA_ENTRIES * sizeof e->maps, NULL, &err)))
    return dua_fail(ctx, (dua_status)err, "allocating the tensor maps failed: %s",
                    dua_status_string((dua_status)err));
  cl_kernel kernel;
  dua_status st = dua_program_kernel(ctx, sources, options, "dua_tma_maps", &kernel);
  if (st != DUA_SUCCESS)
    return st;
  const cl_int hkv = c->shape.hkv, batch = c->batch, first = slot * (int)(sizeof e->maps / sizeof(cl_ulong));
  dua_arg_list a = {kernel, 0, CL_SUCCESS};
  dua_arg(&a, sizeof c->k, &c->k);
  dua_arg(&a, sizeof c->v, &c->v);
  dua_arg(&a, sizeof c->k_strides, &c->k_strides);
  dua_arg(&a, sizeof c->v_strides, &c->v_strides);
  dua_arg(&a, sizeof c->offsets, &c->offsets);
  dua_arg(&a, sizeof c->shape.n_tokens, &c->shape.n_tokens);
  dua_arg(&a, sizeof hkv, &hkv);
  dua_arg(&a, sizeof batch, &batch);
  dua_arg(&a, sizeof ctx->tma_device, &ctx->tma_device);
  dua_arg(&a, sizeof first, &first);
  if (a.err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)a.err, "dua_tma_maps: setting argument %u failed: %s", a.index - 1,
                    dua_status_string((dua_status)a.err));
  const size_t warp = 32;
  err = clEnqueueNDRangeKernel(ctx->queue, kernel, 1, NULL, &warp, &warp, 0, NULL, NULL);
  if (err == CL_SUCCESS)
    err = clEnqueueReadBuffer(ctx->queue, ctx->tma_device, CL_FALSE, (size_t)slot * sizeof e->maps,
                              sizeof e->maps, e->maps, 0, NULL, &e->ready);
  if (err == CL_SUCCESS)
    err = clFlush(ctx->queue); /* so that the read completes without the caller waiting for anything */
  if (err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)err, "building the tensor maps failed: %s",
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

dua_status dua_tma_maps(dua_context *ctx, const dua_fwd_call *c, const char *sources, const char *options,
                        const unsigned char **maps) {
  *maps = NULL;
  const cl_int dims[3] = {c->shape.n_tokens, c->shape.hkv, c->batch};
  struct dua_tma_entry *e = NULL, *oldest = &ctx->tma[0];
  for (int i = 0; i < DUA_TMA_ENTRIES && !e; i++) {
    struct dua_tma_entry *x = &ctx->tma[i];
    if (x->state && same_tensors(x, c, dims))
      e = x;
    else if (!x->state ? oldest->state : x->used < oldest->used)
      oldest = x;
  }
  ctx->tma_clock++;
  if (!e) { /* first seen: noted only */
    dua_tma_entry_release(oldest);
    oldest->k = c->k, oldest->v = c->v;
    oldest->k_strides = c->k_strides, oldest->v_strides = c->v_strides, oldest->offsets = c->offsets;
    memcpy(oldest->dims, dims, sizeof dims);
    oldest->state = 1;
    oldest->used = ctx->tma_clock;
    return DUA_SUCCESS;
  }
  e->used = ctx->tma_clock;
  if (e->state == 1) { /* seen again: build */
    const dua_status st = build(ctx, e, (int)(e - ctx->tma), c, sources, options);
    if (st != DUA_SUCCESS) {
      dua_tma_entry_release(e);
      return st;
    }
    clRetainMemObject(c->k);
    clRetainMemObject(c->v);
    e->state = 2;
    return DUA_SUCCESS;
  }
  if (e->state == 2) {
    cl_int status = CL_QUEUED;
    const cl_int err =
        clGetEventInfo(e->ready, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL);
    if (err != CL_SUCCESS || status < 0) {
      dua_tma_entry_release(e);
      return dua_fail(ctx, DUA_ERROR_BUILD_FAILED, "building the tensor maps failed: %s",
                      dua_status_string((dua_status)(err != CL_SUCCESS ? err : status)));
    }
    if (status != CL_COMPLETE)
      return DUA_SUCCESS;
    clReleaseEvent(e->ready);
    e->ready = NULL;
    e->state = 3;
  }
  *maps = e->maps;
  return DUA_SUCCESS;
}
