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
  /* the tensor-core launches' tail orders (tail_order.c), [0] query blocks, [1] key blocks: the table (NULL
   * where nothing is reordered), the first entry it covers, and the tail length it was made for (-1: not yet)
   */
  cl_mem tail_order[2];
  cl_int tail_start[2];
  int64_t tail_made[2];
  dua_tail_lengths tail_lengths[2]; /* of the tail's entries: their common length (else -1) and the longest */
} dua_layout_device;

/* What dua_layout_device_get uploads besides the rule tables. */
enum { DUA_DEVICE_LISTS = 1, DUA_DEVICE_TRANSPOSED_LISTS = 2 };

/* A read-only device copy of data[bytes] in *out; `what` names it in the error. */
dua_status dua_device_upload(dua_context *ctx, const void *data, size_t bytes, cl_mem *out, const char *what);

/* The device copies of layout for ctx (made now if needed; `lists` is a mask of the list forms wanted). */
dua_status dua_layout_device_get(dua_context *ctx, dua_layout *layout, int lists, dua_layout_device **out);

/* The order in which a tensor-core launch over (batch, head, block) entries, e = (b heads + h) nb + block,
 * hands out its last entries (tail_order.c): from entry *start on, (*order)[e - *start] is the entry taken
 * instead, longest first. keys = 0: query blocks (b, h, m) of the forward and the dQ pass, whose length is
 * the number of key blocks visited; keys = 1: key blocks (b, hk, n) of the dK/dV pass, whose length is the
 * number of query blocks visiting n over the GQA group (the transposed lists). Where the tail's lengths are
 * all equal, or DUA_TAIL_ORDER=0, *start is INT32_MAX and *order a dummy. *lengths (if not NULL), over the
 * last 8 entries per compute unit: the length they all share (the forward's split tail and short-launch
 * rule), else -1, and the longest (the short-launch rule where they differ). Made once per layout and
 * context. */
dua_status dua_layout_tail_order(dua_context *ctx, dua_layout *layout, int keys, cl_mem *order, cl_int *start,
                                 dua_tail_lengths *lengths);

#endif
