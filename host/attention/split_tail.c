/* split_tail.c: the shape of a short tensor-core forward launch: which of its last work-groups to split by
 * key blocks, into how many parts, and the device memory the parts meet in; and whether a launch too short
 * for two m-tiles runs one (dua_short_launch_one_mtile and, for causal layouts, ..._causal, below).
 *
 * A launch of `grid` work-groups of equal length on `slots` work-group slots runs grid / slots full waves and
 * then rem = grid % slots work-groups on an otherwise idle GPU for a whole work-group's time (non-causal
 * layouts, whose rows all visit as many key blocks; causal ones reorder their tail instead: tail_order.c).
 * Cut into P = slots / rem parts of their key blocks (2 to 4, at least two blocks each), those rem
 * work-groups become P rem shorter ones that fill the last wave, which then takes about 1 / P as long plus
 * the merge (a model of the grid: bench/NOTES-mma.md, twentieth session). The parts meet in scratch memory
 * (unnormalized O, row maxima and sums, fp32) and a counter per row tile; the last to finish merges and
 * writes. */
#include "attention/split_tail.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_AUTO_PARTS 4 /* each part adds its partials' traffic and a share of the merge */
#define MAX_FORCED_PARTS 64

/* Where the split pays (H100, bench/RESULTS.md "Twentieth session", best of two rounds against no split):
 * short launches (under 8 waves: batch 1, 2 and 4 at N 2048-32768, +1.0% to +28%); batch 8 dense at N 8192
 * (10 waves of 64-block work-groups: +0.5% to +2.5%); not 10 waves of 8-block work-groups (batch 8, depth 3,
 * N 8192: -0.8% and -1.6%, whose last wave already ran one work-group per compute unit, faster than a full
 * wave's) nor 41 waves (N 32768: -1.4% to +0.3%, within the spread), where the last wave is too small a
 * share. */
#define SPLIT_WAVES_SHORT 8        /* launches under this many waves split ... */
#define SPLIT_WAVES_LONG_GROUPS 16 /* ... and under this many if their work-groups */
#define SPLIT_KEYS_LONG (64 * 128) /* visit at least this many keys */

int64_t dua_split_tail_plan(int64_t grid, int64_t slots, int64_t items, int block, int *parts) {
  *parts = 1;
  if (grid < 1 || slots < 2 || items < 4)
    return 0;
  if (grid >= SPLIT_WAVES_SHORT * slots &&
      (grid >= SPLIT_WAVES_LONG_GROUPS * slots || items * block < SPLIT_KEYS_LONG))
    return 0;
  const int64_t rem = grid % slots;
  if (rem == 0)
    return 0;
  int64_t p = slots / rem;
  p = p < MAX_AUTO_PARTS ? p : MAX_AUTO_PARTS;
  p = p < items / 2 ? p : items / 2; /* two key blocks a part at least: a part's fixed cost is about one */
  if (p < 2)
    return 0;
  *parts = (int)p;
  return rem;
}

/* Launches of less than about one and a half waves of two-m-tile work-groups leave most slots of the GPU idle
 * for most of the launch, or run a first wave and then a short second one. Their one-m-tile version has twice
 * the work-groups of half the rows, five per compute unit instead of three, so a shorter second wave or a
 * fuller first one; each one-m-tile work-group reads K and V for 64 rows instead of 128, which costs where a
 * work-group visits many blocks. Measured on an H200 (heads 8, head dim 64, block 128, fp16, non-causal,
 * bench/RESULTS.md "Twenty-first session"; MT 1 against 2): under one wave (0.65) -7% to -8% with 4 and 32
 * blocks per work-group, +1.4% with 2; at 1.3 waves -14% with 4 blocks, -7% with 8, +1.4% with 16, +11% with
 * 64; at 2.6 waves and more +1.5% to +9% (8 to 32 blocks). The rule kept, on against off: -4.7% to -14% at
 * 0.65 and 1.3 waves with 4 to 32 blocks, -2.5% at 0.32 waves with 16, +1.4% (the spread of a 20 us launch)
 * at 0.16 waves with 8. Longer work-groups under a wave were not measured: not switched. */
#define SHORT_LAUNCH_MIN_KEYS (4 * 128) /* fewer keys per work-group: as fast either way */
#define SHORT_LAUNCH_MAX_KEYS (8 * 128) /* past one wave, up to this many */
#define SHORT_LAUNCH_MAX_KEYS_UNDER_WAVE                                                                     \
  (32 * 128)                    /* under one wave, up to this many (the longest measured) */
#define SHORT_LAUNCH_WAVES_X2 3 /* past one wave, under 1.5 waves */

int dua_short_launch_one_mtile(int64_t grid, int64_t slots, int64_t items, int block) {
  if (grid < 1 || slots < 1 || items < 1)
    return 0;
  const int64_t keys = items * block;
  if (keys < SHORT_LAUNCH_MIN_KEYS)
    return 0;
  return (grid < slots && keys <= SHORT_LAUNCH_MAX_KEYS_UNDER_WAVE) ||
         (2 * grid < SHORT_LAUNCH_WAVES_X2 * slots && keys <= SHORT_LAUNCH_MAX_KEYS);
}

/* Causal launches gain more from one m-tile: besides the fuller waves, work-groups of different lengths
 * balance better at half the size, and a 64-row work-group skips the key tile of its diagonal block that lies
 * wholly in its future, which the 128-row one multiplies for its first 64 rows and masks. Measured on an H200
 * (heads 8, head dim 64, block 128, fp16, causal positional trees, bench/RESULTS.md "Twenty-second session";
 * MT 1 against 2, by the longest work-group's key blocks): 0.32 waves with 16 blocks -33%, 0.65 with 32 -25%,
 * 1.3 with 32 and 64 -19%; 2.6 waves with 16 -10% to -12%, with 32 -4.5%, with 64 +0.7% to +1.2%, with 128
 * +3.7%; 5.2 and 10.3 waves with 32 +0.2% to +0.6% and +2.5%; windowed causal layouts ("Twenty-fourth
 * session"; work-groups of nearly equal length) at 1.3 waves with 17 blocks -14%, 2.6 waves with 9 -8.6% and
 * with 34 -7.2%, 5.2 waves and more with 17 to 33 +2.4% to +6.3%. (Causal layouts visiting at most 8 blocks
 * run one m-tile by the compiled plan already: mt_cs.) */
#define SHORT_CAUSAL_MAX_KEYS (64 * 128)        /* under 1.5 waves, up to this many (the longest measured) */
#define SHORT_CAUSAL_MAX_KEYS_LONGER (40 * 128) /* under 3 waves, up to this many (32: -4.5%, 64: +1.2%) */
#define SHORT_CAUSAL_WAVES_X2 3                 /* under 1.5 waves ... */
#define SHORT_CAUSAL_WAVES_LONGER 3             /* ... and under 3 */

int dua_short_launch_one_mtile_causal(int64_t grid, int64_t slots, int64_t longest, int block) {
  if (grid < 1 || slots < 1 || longest < 1)
    return 0;
  const int64_t keys = longest * block;
  return (2 * grid < SHORT_CAUSAL_WAVES_X2 * slots && keys <= SHORT_CAUSAL_MAX_KEYS) ||
         (grid < SHORT_CAUSAL_WAVES_LONGER * slots && keys <= SHORT_CAUSAL_MAX_KEYS_LONGER);
}

/* A causal launch under one wave leaves slots idle while its longest work-groups run: split every work-group
 * by key blocks into P = ceil(slots / grid) parts (2 to 4, two blocks a part of the longest at least), so
 * that the longest ones end sooner; a short work-group's surplus parts see nothing and end at once. Measured
 * on an H200 (heads 8, head dim 64, block 128, fp16, causal dense, one m-tile by the short-launch rule, 660
 * slots; bench/RESULTS.md "Twenty-second session", every work-group in 2, 3, 4 or 6 parts against none): 256
 * work-groups (0.39 waves, longest 16 blocks) -17%, -22%, -18%, -1% (the rule: 3 parts); 512 (0.78 waves, 32
 * blocks) -22%, -17%, -11%, +2% (2); 1024 (1.55 waves) and more +10% to +94% (none). Longer work-groups than
 * 64 blocks and two m-tiles were not measured: not split (forward_nv_mma.c asks for the causal plan on one
 * m-tile only). Causal trees repeat causal dense's lengths inside each tree range; windows and sinks were not
 * measured. */
#define SPLIT_CAUSAL_MAX_KEYS (64 * 128)

int64_t dua_split_causal_plan(int64_t grid, int64_t slots, int64_t longest, int block, int *parts) {
  *parts = 1;
  if (grid < 1 || grid >= slots || longest < 4 || longest * block > SPLIT_CAUSAL_MAX_KEYS)
    return 0;
  int64_t p = (slots + grid - 1) / grid;
  p = p < MAX_AUTO_PARTS ? p : MAX_AUTO_PARTS;
  p = p < longest / 2 ? p : longest / 2;
  if (p < 2)
    return 0;
  *parts = (int)p;
  return grid;
}

/* DUA_SPLIT_TAIL: 1 with *count, *parts where it forces a split, 0 where it turns splitting off, -1 where it
 * is unset or invalid (warned once per context). */
static int split_env(dua_context *ctx, int64_t *count, int *parts) {
  const char *env = getenv("DUA_SPLIT_TAIL");
  if (!env || !*env)
    return -1;
  if (strcmp(env, "0") == 0)
    return 0;
  char *end = NULL;
  errno = 0;
  const long long c = strtoll(env, &end, 10);
  long p = 0;
  if (!errno && c > 0 && *end == ',') {
    const char *rest = end + 1;
    p = strtol(rest, &end, 10);
    if (errno || end == rest || *end || p < 2 || p > MAX_FORCED_PARTS)
      p = 0;
  }
  if (p == 0) {
    if (ctx->warned_split_tail)
      return -1;
    ctx->warned_split_tail = 1;
    dua_log(ctx, DUA_LOG_WARNING,
            "DUA_SPLIT_TAIL = \"%s\" is neither 0 nor \"work-groups,parts\" (parts 2 to %d): ignored", env,
            MAX_FORCED_PARTS);
    return -1;
  }
  *count = c;
  *parts = (int)p;
  return 1;
}

dua_status dua_split_tail_make(dua_context *ctx, int64_t grid, int heads, dua_tail_lengths lengths,
                               int causal, int block, int per_cu, int64_t floats, dua_split_tail *out) {
  memset(out, 0, sizeof *out);
  int parts = 1;
  int64_t count = 0;
  const int env = split_env(ctx, &count, &parts);
  const int64_t slots = (int64_t)per_cu * ctx->info.compute_units;
  if (env < 0 && lengths.uniform >= 0)
    count = dua_split_tail_plan(grid, slots, lengths.uniform, block, &parts);
  else if (env < 0 && causal && per_cu > 0)
    count = dua_split_causal_plan(grid, slots, lengths.longest, block, &parts);
  else if (env <= 0)
    count = 0;
  count = count < grid ? count : grid;
  const int64_t extra = count * (parts - 1);
  if (count < 1 || parts < 2 || grid + extra > INT32_MAX)
    return DUA_SUCCESS;
  dua_status st = dua_context_scratch(ctx, (size_t)(count * parts * floats) * sizeof(float), &out->partials);
  if (st == DUA_SUCCESS)
    st = dua_context_counters(ctx, (size_t)count, &out->counts);
  if (st != DUA_SUCCESS) { /* an optimization: the launch runs unsplit rather than fail or leave the path */
    dua_log(ctx, DUA_LOG_DEBUG, "split tail: no memory for %lld parts (%s): unsplit",
            (long long)(count * parts), ctx->last_error);
    ctx->last_error[0] = '\0';
    memset(out, 0, sizeof *out);
    return DUA_SUCCESS;
  }
  out->split.s[0] = (cl_int)(grid - count);
  out->split.s[1] = parts;
  out->split.s[2] = (cl_int)grid;
  out->split.s[3] = heads;
  out->work_groups = grid + extra;
  return DUA_SUCCESS;
}
