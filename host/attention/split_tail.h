/* split_tail.h: the tensor-core forward's split tail (split_tail.c; the kernel side is split_entry_of and
 * split_merge in cl/attn_fwd_mma.cl). */
#ifndef DUA_SPLIT_TAIL_H
#define DUA_SPLIT_TAIL_H

#include <stdint.h>

#include "attention/layout_internal.h"
#include "runtime/context_internal.h"

/* How many of a launch's last work-groups to split, and into how many parts, for `grid` work-groups of equal
 * length (`items` key blocks of `block` keys each) on `slots` work-group slots (compute units x work-groups
 * per unit): returns the count (0: none) and sets *parts (1: none). Pure; for the unit tests. */
int64_t dua_split_tail_plan(int64_t grid, int64_t slots, int64_t items, int block, int *parts);

/* Whether a two-m-tile forward launch of `grid` work-groups on `slots` slots (three per compute unit), each
 * visiting `items` key blocks of `block` keys where all are equal (else -1), runs faster as twice as many
 * one-m-tile work-groups: short launches of short work-groups (split_tail.c says where it was measured).
 * Pure; for the unit tests. */
int dua_short_launch_one_mtile(int64_t grid, int64_t slots, int64_t items, int block);

/* The same for a causal launch, whose work-groups visit different numbers of key blocks, the longest
 * `longest` (-1: unknown). Pure; for the unit tests. */
int dua_short_launch_one_mtile_causal(int64_t grid, int64_t slots, int64_t longest, int block);

/* A launch's split tail: the kernel's `split` argument (first, parts, grid, heads; parts 0: none), the
 * launch's work-groups with it (one dimension: grid + the parts past part 0), and the device memory the parts
 * meet in. */
typedef struct {
  cl_int4 split;
  int64_t work_groups;
  cl_mem partials, counts;
} dua_split_tail;

/* For a causal launch of `grid` work-groups on `slots` slots whose longest visits `longest` key blocks of
 * `block` keys (-1: unknown): how many work-groups to split (0 or all) and into how many parts (*parts; 1:
 * none). Pure; for the unit tests. */
int64_t dua_split_causal_plan(int64_t grid, int64_t slots, int64_t longest, int block, int *parts);

/* The split tail of a forward launch of `grid` work-groups over `heads` query heads whose tail visits
 * `lengths` key blocks of `block` keys (their common number, else -1, and the most), causal or not, on
 * `per_cu` work-groups per compute unit (0: unknown, no split unless DUA_SPLIT_TAIL forces one), each part
 * leaving `floats` floats. DUA_SPLIT_TAIL: unset, the plans above (equal lengths: dua_split_tail_plan;
 * causal: dua_split_causal_plan); 0, none; "count,parts", that many last work-groups (all if more) in that
 * many parts (2 to 64). */
dua_status dua_split_tail_make(dua_context *ctx, int64_t grid, int heads, dua_tail_lengths lengths,
                               int causal, int block, int per_cu, int64_t floats, dua_split_tail *out);

#endif
