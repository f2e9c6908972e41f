/* layout_device.h: a layout's device-side copies (per-head rules, content buckets and paths, block lists),
 * uploaded once per context on first use and kept with the layout, so steady-state calls upload nothing. */
#ifndef DUA_LAYOUT_DEVICE_H
#define DUA_LAYOUT_DEVICE_H

#include "attention/layout_internal.h"
#include "runtime/context_internal.h"

typedef struct dua_layout_device {
  uint64_t ctx_serial; /* the context these belong to */
  cl_mem head_rules;   /* [Hq] int4 (depth, group, tree depth, arity) */
  cl_mem paths;        /* [B][Hq][nb][max_depth] uchar (content), else a dummy */
  cl_mem order;        /* [B*Hq][nb] int (content), else a dummy */
  cl_mem rank_range;   /* [B*Hq][nb] int2 (content), else a dummy */
  cl_mem list_counts;  /* [B*Hq][nb] int, made when lists are first needed; NULL before */
  cl_mem list_full;    /* [B*Hq][nb] int */
  cl_mem list_indices; /* [B*Hq][nb][nb] int */
  cl_mem tlist_counts; /* transposed lists (for key block n, the query blocks visiting it), as above */
  cl_mem tlist_full;
  cl_mem tlist_indices;
  cl_mem dummy; /* 16 bytes for unused kernel arguments */
} dua_layout_device;

/* What dua_layout_device_get uploads besides the rule tables. */
enum { DUA_DEVICE_LISTS = 1, DUA_DEVICE_TRANSPOSED_LISTS = 2 };

/* The device copies of layout for ctx (made now if needed; `lists` is a mask of the list forms wanted). */
dua_status dua_layout_device_get(dua_context *ctx, dua_layout *layout, int lists, dua_layout_device **out);

#endif
