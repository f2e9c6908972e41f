/* test_split_tail.c: unit tests (no device) of the forward's split-tail plan (host/attention/split_tail.c):
 * on random launches, the plan splits only the last partial wave (grid % slots work-groups), into 2 to 4
 * parts that fit in one wave, two key blocks a part at least, nothing for launches of 16 waves or more nor
 * of 8 or more short work-groups; and in a list-scheduling model of the grid (equal work-groups of a fixed
 * part plus one unit per key block, the next one taking the first free slot; each part a fixed part, its
 * share of blocks and a merge), the planned split is never slower than none and faster where the last wave is
 * short. Also the short-launch rule (one m-tile for launches of under 1.5 waves of short work-groups). */
#include "attention/split_tail.h"
#include "test_util.h"

#include <check.h>
#include <stdlib.h>

/* Makespan of n jobs of length len (in order) on slots slots, starting from slot_free[] (slots entries). */
static double schedule(double *slot_free, int64_t slots, int64_t n, double len) {
  for (int64_t j = 0; j < n; j++) {
    int64_t best = 0;
    for (int64_t s = 1; s < slots; s++)
      if (slot_free[s] < slot_free[best])
        best = s;
    slot_free[best] += len;
  }
  double end = 0.0;
  for (int64_t s = 0; s < slots; s++)
    end = slot_free[s] > end ? slot_free[s] : end;
  return end;
}

#define FIXED 4.0 /* a work-group's prologue and epilogue, in key blocks */
#define MERGE 1.0

static double makespan(int64_t grid, int64_t slots, int64_t items, int64_t split, int parts) {
  double *slot_free = calloc((size_t)slots, sizeof *slot_free);
  ck_assert_ptr_nonnull(slot_free);
  schedule(slot_free, slots, grid - split, FIXED + (double)items);
  const double end = schedule(slot_free, slots, split * parts, FIXED + (double)items / parts + MERGE);
  free(slot_free);
  return end;
}

START_TEST(plan_properties_and_model) {
  test_rng r = test_rng_make(0x5b117ull + (uint64_t)_i);
  for (int c = 0; c < 200; c++) {
    const int64_t slots = test_rng_int(&r, 2, 700), items = test_rng_int(&r, 1, 300);
    const int64_t grid = test_rng_int(&r, 1, 20 * (int)slots);
    const int block = 64 << test_rng_int(&r, 0, 2);
    int parts = -1;
    const int64_t split = dua_split_tail_plan(grid, slots, items, block, &parts);
    const int64_t rem = grid % slots;
    const int long_launch_of_short = grid >= 8 * slots && (grid >= 16 * slots || items * block < 64 * 128);
    if (split == 0) {
      ck_assert_int_eq(parts, 1);
      ck_assert(rem == 0 || items < 4 || long_launch_of_short || slots / rem < 2);
      continue;
    }
    ck_assert_int_eq(split, rem);
    ck_assert(!long_launch_of_short);
    ck_assert(parts >= 2 && parts <= 4 && 2 * parts <= items);
    ck_assert_int_le(split * parts, slots);
    const double none = makespan(grid, slots, items, 0, 1), with = makespan(grid, slots, items, split, parts);
    ck_assert_msg(with <= none, "grid %lld slots %lld items %lld: split %lld x %d: %g > %g", (long long)grid,
                  (long long)slots, (long long)items, (long long)split, parts, with, none);
    if (rem * 3 <= slots && items >= 8) /* the last wave a third full or less: it was most of a work-group */
      ck_assert_msg(with < none - 0.25 * items, "grid %lld slots %lld items %lld: %g vs %g", (long long)grid,
                    (long long)slots, (long long)items, with, none);
  }
}
END_TEST

START_TEST(plan_edges) {
  int parts = 0;
  ck_assert_int_eq(dua_split_tail_plan(396 * 3, 396, 64, 128, &parts), 0); /* whole waves */
  ck_assert_int_eq(parts, 1);
  ck_assert_int_eq(dua_split_tail_plan(400, 396, 1, 128, &parts), 0);        /* one block: nothing to cut */
  ck_assert_int_eq(dua_split_tail_plan(396 + 300, 396, 64, 128, &parts), 0); /* 300 of 396: 1 part */
  ck_assert_int_eq(dua_split_tail_plan(4096, 396, 8, 128, &parts), 0);       /* 10 waves of 8 blocks */
  ck_assert_int_eq(dua_split_tail_plan(4096, 396, 64, 128, &parts), 136);    /* ... of 64 blocks */
  ck_assert_int_eq(parts, 2);
  ck_assert_int_eq(dua_split_tail_plan(2048, 396, 8, 128, &parts), 68); /* 5 waves: 68 in 4 parts */
  ck_assert_int_eq(parts, 4);
  ck_assert_int_eq(dua_split_tail_plan(512, 396, 4, 128, &parts), 116); /* two blocks a part at least */
  ck_assert_int_eq(parts, 2);
  ck_assert_int_eq(dua_split_tail_plan(512, 396, 3, 128, &parts), 0);
  ck_assert_int_eq(dua_split_tail_plan(100, 396, 64, 128, &parts), 100); /* under one wave */
  ck_assert_int_eq(parts, 3);
  ck_assert_int_eq(dua_split_tail_plan(0, 396, 64, 128, &parts), 0);
  ck_assert_int_eq(dua_split_tail_plan(10, 1, 64, 128, &parts), 0);
}
END_TEST

/* A random launch for the property tests below: slots 1 to 700, 1 to `waves` waves of work-groups, a length
 * in key blocks in [lo, hi] and blocks of 64, 128 or 256 keys. */
typedef struct {
  int64_t slots, grid, length;
  int block;
} random_launch;

static random_launch random_launch_of(test_rng *r, int waves, int lo, int hi) {
  random_launch l;
  l.slots = test_rng_int(r, 1, 700);
  l.grid = test_rng_int(r, 1, waves * (int)l.slots);
  l.length = test_rng_int(r, lo, hi);
  l.block = 64 << test_rng_int(r, 0, 2);
  return l;
}

/* The short-launch rule (one m-tile instead of two): the H200's measured cases (396 slots, block 128), and on
 * random launches never at 1.5 waves or more, nor under 512 keys or over 4096, always under one wave between.
 */
START_TEST(short_launch_rule) {
  ck_assert(dua_short_launch_one_mtile(256, 396, 4, 128));   /* 0.65 waves, 4 blocks: -8% */
  ck_assert(dua_short_launch_one_mtile(256, 396, 32, 128));  /* 0.65 waves, dense N 4096: -7% */
  ck_assert(!dua_short_launch_one_mtile(128, 396, 2, 128));  /* 2 blocks: +1.4% */
  ck_assert(dua_short_launch_one_mtile(512, 396, 4, 128));   /* 1.3 waves, 4 blocks: -14% */
  ck_assert(dua_short_launch_one_mtile(512, 396, 8, 128));   /* ... 8 blocks: -7% */
  ck_assert(!dua_short_launch_one_mtile(512, 396, 16, 128)); /* ... 16 blocks: +1.4% */
  ck_assert(!dua_short_launch_one_mtile(512, 396, 64, 128)); /* ... dense N 8192: +11% */
  ck_assert(!dua_short_launch_one_mtile(1024, 396, 8, 128)); /* 2.6 waves: +1.5% */
  ck_assert(!dua_short_launch_one_mtile(2048, 396, 8, 128)); /* 5.2 waves: +9% */
  ck_assert(!dua_short_launch_one_mtile(100, 396, -1, 128)); /* unequal lengths: not measured */
  ck_assert(dua_short_launch_one_mtile(256, 396, 2, 256));   /* 512 keys in blocks of 256 */
  ck_assert(!dua_short_launch_one_mtile(256, 396, 33, 128)); /* under a wave, longer than measured */
  test_rng r = test_rng_make(0x5407ull);
  for (int c = 0; c < 1000; c++) {
    const random_launch l = random_launch_of(&r, 3, 1, 100);
    const int64_t keys = l.length * l.block;
    const int one = dua_short_launch_one_mtile(l.grid, l.slots, l.length, l.block);
    if (2 * l.grid >= 3 * l.slots || keys < 512 || keys > 4096)
      ck_assert(!one);
    else if (l.grid < l.slots)
      ck_assert(one);
  }
}
END_TEST

/* The causal short-launch rule: the H200's measured cases (396 slots, block 128, by the longest work-group's
 * key blocks), and on random launches never at 3 waves or more, nor past 8192 keys, nor past 5120 from 1.5
 * waves on, always below both. */
START_TEST(short_launch_rule_causal) {
  ck_assert(dua_short_launch_one_mtile_causal(128, 396, 16, 128));    /* 0.32 waves, dense N 2048: -33% */
  ck_assert(dua_short_launch_one_mtile_causal(256, 396, 32, 128));    /* 0.65 waves, dense N 4096: -25% */
  ck_assert(dua_short_launch_one_mtile_causal(512, 396, 64, 128));    /* 1.3 waves, dense N 8192: -19% */
  ck_assert(dua_short_launch_one_mtile_causal(1024, 396, 16, 128));   /* 2.6 waves, depth 3 N 16384: -10% */
  ck_assert(dua_short_launch_one_mtile_causal(1024, 396, 32, 128));   /* ... batch 4 dense N 4096: -4.5% */
  ck_assert(dua_short_launch_one_mtile_causal(1024, 396, 34, 128));   /* ... window 4096 sink 64: -7.2% */
  ck_assert(!dua_short_launch_one_mtile_causal(1024, 396, 64, 128));  /* ... batch 2 dense N 8192: +1.2% */
  ck_assert(!dua_short_launch_one_mtile_causal(1024, 396, 128, 128)); /* ... dense N 16384: +3.7% */
  ck_assert(!dua_short_launch_one_mtile_causal(2048, 396, 32, 128));  /* 5.2 waves: +0.6% */
  ck_assert(!dua_short_launch_one_mtile_causal(4096, 396, 32, 128));  /* 10.3 waves: +2.5% */
  ck_assert(!dua_short_launch_one_mtile_causal(100, 396, -1, 128));   /* longest unknown */
  ck_assert(!dua_short_launch_one_mtile_causal(256, 396, 65, 128));   /* under a wave, longer than measured */
  test_rng r = test_rng_make(0xca05ull);
  for (int c = 0; c < 1000; c++) {
    const random_launch l = random_launch_of(&r, 4, 1, 200);
    const int64_t keys = l.length * l.block;
    const int one = dua_short_launch_one_mtile_causal(l.grid, l.slots, l.length, l.block);
    if (l.grid >= 3 * l.slots || keys > 8192 || (2 * l.grid >= 3 * l.slots && keys > 5120))
      ck_assert(!one);
    else
      ck_assert(one);
  }
}
END_TEST

/* The causal split: the H200's measured launches (660 one-m-tile slots, block 128), and on random launches
 * exactly the plan: all work-groups in ceil(slots / work-groups) parts (at most 4 and half the longest's
 * blocks) under a wave with a longest of 4 to 64 blocks of 128 keys (8192 keys), where that is 2 or more;
 * else none. */
START_TEST(causal_split_plan) {
  int parts = 0;
  ck_assert_int_eq(dua_split_causal_plan(256, 660, 16, 128, &parts), 256); /* 0.39 waves: 3 parts -22% */
  ck_assert_int_eq(parts, 3);
  ck_assert_int_eq(dua_split_causal_plan(512, 660, 32, 128, &parts), 512); /* 0.78 waves: 2 parts -22% */
  ck_assert_int_eq(parts, 2);
  ck_assert_int_eq(dua_split_causal_plan(1024, 660, 64, 128, &parts), 0); /* 1.55 waves: 2 parts +10% */
  ck_assert_int_eq(parts, 1);
  ck_assert_int_eq(dua_split_causal_plan(100, 660, 65, 128, &parts), 0); /* longer than measured */
  ck_assert_int_eq(dua_split_causal_plan(100, 660, 3, 128, &parts), 0);  /* under two blocks a part */
  ck_assert_int_eq(dua_split_causal_plan(100, 660, -1, 128, &parts), 0); /* unknown */
  test_rng r = test_rng_make(0x5911ull);
  for (int c = 0; c < 1000; c++) {
    const random_launch l = random_launch_of(&r, 2, -1, 100);
    const int64_t count = dua_split_causal_plan(l.grid, l.slots, l.length, l.block, &parts);
    int64_t want = (l.slots + l.grid - 1) / l.grid; /* ceil(slots / grid), at most 4 and half the longest */
    want = want < 4 ? want : 4;
    want = want < l.length / 2 ? want : l.length / 2;
    const int split = l.grid < l.slots && l.length >= 4 && l.length * l.block <= 8192 && want >= 2;
    ck_assert_int_eq(count, split ? l.grid : 0);
    ck_assert_int_eq(parts, split ? want : 1);
  }
}
END_TEST

int main(void) {
  Suite *s = suite_create("split_tail");
  TCase *tc = tcase_create("core");
  tcase_add_loop_test(tc, plan_properties_and_model, 0, 5);
  tcase_add_test(tc, plan_edges);
  tcase_add_test(tc, short_launch_rule);
  tcase_add_test(tc, short_launch_rule_causal);
  tcase_add_test(tc, causal_split_plan);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
