/* layout_device.c: uploads a layout's rule tables, content buckets and block lists to a context's device. */
#include "attention/layout_device.h"

#include <stdlib.h>
#include <string.h>

static void release(void *p) {
  dua_layout_device *d = p;
  if (!d)
    return;
  cl_mem *mems[] = {&d->head_rules, &d->paths,         &d->order,        &d->rank_range, &d->list_counts,
                    &d->list_full,  &d->list_indices,  &d->tlist_counts, &d->tlist_full, &d->tlist_indices,
                    &d->dummy,      &d->tail_order[0], &d->tail_order[1]};
  for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
    if (*mems[i])
      clReleaseMemObject(*mems[i]);
  free(d);
}

dua_status dua_device_upload(dua_context *ctx, const void *data, size_t bytes, cl_mem *out,
                             const char *what) {
  cl_int err = CL_SUCCESS;
  *out = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, bytes, (void *)data, &err);
  if (err != CL_SUCCESS)
    return dua_fail(ctx, (dua_status)err, "uploading the layout's %s (%zu bytes) failed: %s", what, bytes,
                    dua_status_string((dua_status)err));
  return DUA_SUCCESS;
}

static dua_status upload_rules(dua_context *ctx, const dua_layout *l, dua_layout_device *d) {
  size_t heads = (size_t)l->heads;
  cl_int *rules = malloc(heads * 4 * sizeof(cl_int));
  if (!rules)
    return DUA_ERROR_OUT_OF_MEMORY;
  for (size_t h = 0; h < heads; h++) {
    rules[4 * h + 0] = l->depth[h];
    rules[4 * h + 1] = l->group[h];
    rules[4 * h + 2] = l->tree_depth[h];
    rules[4 * h + 3] = l->arity[h];
  }
  dua_status st = dua_device_upload(ctx, rules, heads * 4 * sizeof(cl_int), &d->head_rules, "head rules");
  free(rules);
  if (st != DUA_SUCCESS || l->kind != DUA_LAYOUT_CONTENT)
    return st;
  size_t rows = (size_t)l->batch * heads * (size_t)l->num_blocks;
  if (l->max_depth > 0) {
    st = dua_device_upload(ctx, l->paths, rows * (size_t)l->max_depth, &d->paths, "paths");
    if (st != DUA_SUCCESS)
      return st;
  }
  st = dua_device_upload(ctx, l->order, rows * sizeof(int32_t), &d->order, "bucket order");
  if (st != DUA_SUCCESS)
    return st;
  cl_int *range = malloc(rows * 2 * sizeof(cl_int));
  if (!range)
    return DUA_ERROR_OUT_OF_MEMORY;
  for (size_t r = 0; r < rows; r++) {
    range[2 * r] = l->rank_lo[r];
    range[2 * r + 1] = l->rank_hi[r];
  }
  st = dua_device_upload(ctx, range, rows * 2 * sizeof(cl_int), &d->rank_range, "bucket ranges");
  free(range);
  return st;
}

/* Uploads the forward (transposed = 0) or transposed block lists into the three handles given. */
static dua_status upload_lists(dua_context *ctx, dua_layout *l, int transposed, cl_mem *counts, cl_mem *full,
                               cl_mem *indices) {
  dua_block_lists lists;
  dua_status st = dua_layout_lists(l, transposed, &lists);
  if (st != DUA_SUCCESS)
    return dua_fail(ctx, st, "building block lists: %s", l->error);
  size_t rows = (size_t)l->batch * (size_t)l->heads * (size_t)l->num_blocks;
  if ((st = dua_device_upload(ctx, lists.counts, rows * sizeof(int32_t), counts, "list counts")) !=
          DUA_SUCCESS ||
      (st = dua_device_upload(ctx, lists.full_counts, rows * sizeof(int32_t), full, "list full counts")) !=
          DUA_SUCCESS ||
      (st = dua_device_upload(ctx, lists.indices, rows * (size_t)l->num_blocks * sizeof(int32_t), indices,
                              "list indices")) != DUA_SUCCESS) {
    cl_mem *all[3] = {counts, full, indices};
    for (int i = 0; i < 3; i++)
      if (*all[i]) {
        clReleaseMemObject(*all[i]);
        *all[i] = NULL;
      }
    return st;
  }
  return DUA_SUCCESS;
}

dua_status dua_layout_device_get(dua_context *ctx, dua_layout *layout, int lists, dua_layout_device **out) {
  dua_layout_device *d = layout->device;
  if (d && d->ctx_serial != ctx->serial) { /* used with another context before: start over */
    release(d);
    layout->device = NULL;
    d = NULL;
  }
  if (!d) {
    d = calloc(1, sizeof *d);
    if (!d)
      return DUA_ERROR_OUT_OF_MEMORY;
    d->ctx_serial = ctx->serial;
    d->tail_made[0] = d->tail_made[1] = -1;
    d->tail_lengths[0] = d->tail_lengths[1] = (dua_tail_lengths){-1, -1};
    static const cl_int zeros[4] = {0, 0, 0, 0};
    dua_status st = dua_device_upload(ctx, zeros, sizeof zeros, &d->dummy, "dummy argument");
    if (st == DUA_SUCCESS)
      st = upload_rules(ctx, layout, d);
    if (st != DUA_SUCCESS) {
      release(d);
      return st;
    }
    layout->device = d;
    layout->device_release = release;
  }
  dua_status st = DUA_SUCCESS;
  if ((lists & DUA_DEVICE_LISTS) && !d->list_counts)
    st = upload_lists(ctx, layout, 0, &d->list_counts, &d->list_full, &d->list_indices);
  if (st == DUA_SUCCESS && (lists & DUA_DEVICE_TRANSPOSED_LISTS) && !d->tlist_counts)
    st = upload_lists(ctx, layout, 1, &d->tlist_counts, &d->tlist_full, &d->tlist_indices);
  if (st != DUA_SUCCESS)
    return st;
  *out = d;
  return DUA_SUCCESS;
}
