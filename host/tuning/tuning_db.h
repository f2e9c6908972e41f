/* tuning_db.h: the tuning database, a JSON file of measured kernel parameters per device, and the kernels'
 * parameter descriptions (names, ranges). Pure data: no context, no OpenCL; the lookup chain that uses it
 * is in tuning.h.
 *
 *   {"format": "dua-tuning", "version": 1,
 *    "entries": [{"kernel": "fwd", "dtype": "fp32", "head_dim": 64, "device": "...", "vendor": "...",
 *                 "driver": "...", "date": "2026-11-26T13:00:00Z", "params": {"bm": 64, "bn": 32, "tm": 16,
 *                 "tn": 8}, "best_ms": 1.5, "default_ms": 2.0, "tuning_s": 120.0, "candidates": 40,
 *                 "shapes": [{"n": 1024, "depth": 0, "block": 128, "batch": 1, "heads": 2,
 *                             "best_ms": 0.5, "default_ms": 0.7}, ...]}, ...]}
 *
 * Kernels (the table in tuning_db.c): "fwd" and "bwd" (portable forward / backward tiles: bm, bn, tm, tn),
 * "decode" (decode calls with one query row per work-group: staged, tile, threads), "decode_gqa" (several
 * rows: GQA sharing or several query tokens; staged, tile, threads, rows), "decode_split" (the split-KV
 * thresholds: waves, minunit, maxspl) and "fwd_mma" (the NVIDIA tensor-core forward: mt and mt_cs, m-tiles
 * of 16 query rows per warp, 1..2, for most calls and for causal layouts that visit few blocks). A decode
 * plan's "staged" picks the kernel (0 regs, 1 staged, 2 warp, 3 mma) and with it the ranges of tile and
 * threads (regs, staged: 16..128 and 16..1024; warp: keys per batch of a warp 1..128 and whole
 * warps 32..1024; mma: 16 keys per step and whole warps 32..1024; powers of two). Decode entries are keyed by
 * the KV cache's dtype, and their shapes carry three more keys, "kv_heads", "tokens" and "page" (n is the
 * context length, batch the sequences). The shapes of the other kernels may carry "causal": 1 (a causal
 * layout; absent means 0, and it is the only key that may be absent).
 *
 * Reading is strict: at most 4 MiB, exactly these keys (none unknown, none missing, no duplicates), the
 * right JSON types, integers that are integers, values in range, and at most one entry per key (kernel,
 * dtype, head_dim, device, driver). Anything else is refused with a message naming the entry, e.g.
 * "entries[2].params.bm = 7: must be a power of two in 8..256". */
#ifndef DUA_TUNING_DB_H
#define DUA_TUNING_DB_H

#include <stddef.h>
#include <stdint.h>

#define DUA_TUNING_FORMAT "dua-tuning"
#define DUA_TUNING_VERSION 1
#define DUA_TUNING_MAX_FILE (4u << 20)
#define DUA_TUNING_MAX_ENTRIES 4096
#define DUA_TUNING_MAX_SHAPES 64
#define DUA_TUNING_PARAMS 8 /* = DUA_TUNING_MAX_PARAMS in dua.h */

/* One tunable parameter of a kernel: a name and an allowed range (powers of two when pow2). */
typedef struct dua_tune_param_desc {
  const char *name;
  int32_t min, max;
  int pow2;
} dua_tune_param_desc;

/* A kernel the database knows: its name in the file, its parameters in order, and whether its shapes are
 * decode shapes (with kv_heads, tokens and page). A new kernel is a new row of the table in tuning_db.c. */
typedef struct dua_tune_kernel_desc {
  const char *name;
  int num_params;
  dua_tune_param_desc params[DUA_TUNING_PARAMS];
  int decode_shapes;
  int variants; /* a decode plan: params[0] picks the kernel variant, whose own ranges replace the table's for
                 * params[1] and params[2] (tile, threads); see dua_tune_param_range */
} dua_tune_kernel_desc;

const dua_tune_kernel_desc *dua_tune_kernel_find(const char *name);
/* The range of parameter i of k given params[0] (a decode plan's kernel variant, which must already be in
 * range); *variant gets that variant's name ("regs", "staged", "warp", "mma") when the range is the variant's
 * own, else NULL. */
const dua_tune_param_desc *dua_tune_param_range(const dua_tune_kernel_desc *k, const int32_t *params, int i,
                                                const char **variant);
/* The name of decode kernel variant `staged` ("regs", "staged", "warp", "mma"), or NULL out of range. */
const char *dua_tune_decode_variant(int32_t staged);
/* The known kernel names, ", "-separated (for messages). */
const char *dua_tune_kernel_names(void);

typedef struct dua_tuning_shape {
  int32_t n, depth, block, batch, heads;
  double best_ms, default_ms;
  int32_t kv_heads, tokens, page; /* decode shapes only; 0 otherwise */
  int32_t causal;                 /* others: 1 for a causal layout (optional key, absent = 0) */
} dua_tuning_shape;

typedef struct dua_tuning_entry {
  char kernel[32];
  int fp16; /* dtype "fp32" = 0, "fp16" = 1 */
  int32_t head_dim;
  char device[128], vendor[128], driver[128], date[40];
  int32_t params[DUA_TUNING_PARAMS];
  int num_params;
  double best_ms, default_ms, tuning_s;
  int32_t candidates;
  dua_tuning_shape shapes[DUA_TUNING_MAX_SHAPES];
  int num_shapes;
} dua_tuning_entry;

typedef struct dua_tuning_db {
  dua_tuning_entry *entries;
  int count, capacity;
} dua_tuning_db;

/* Checks one parameter set against the kernel's ranges; 0 if fine, else writes why naming `where` (e.g.
 * "entries[2].params"). */
int dua_tuning_params_check(const dua_tune_kernel_desc *k, const int32_t *params, int n, const char *where,
                            char *why, size_t why_size);

/* Parses text (len bytes, need not be NUL-terminated) into *db (emptied first). 0 on success; -1 with why. */
int dua_tuning_db_parse(const char *text, size_t len, dua_tuning_db *db, char *why, size_t why_size);
/* Reads a file: 0 loaded, 1 the file does not exist (db empty), -1 refused or unreadable (why says). */
int dua_tuning_db_load(const char *path, dua_tuning_db *db, char *why, size_t why_size);
/* The JSON text of db (malloc'd, NUL-terminated), or NULL when out of memory. */
char *dua_tuning_db_print(const dua_tuning_db *db);
/* Writes db to path through a temporary file in the same directory, fsync and rename. 0 or -1 with why. */
int dua_tuning_db_save(const char *path, const dua_tuning_db *db, char *why, size_t why_size);
/* Adds e, replacing an entry with the same key. 0, or -1 when out of memory or the entry is invalid. */
int dua_tuning_db_put(dua_tuning_db *db, const dua_tuning_entry *e, char *why, size_t why_size);
/* The entry for this key, or NULL. */
const dua_tuning_entry *dua_tuning_db_find(const dua_tuning_db *db, const char *kernel, int fp16,
                                           int head_dim, const char *device, const char *driver);
void dua_tuning_db_free(dua_tuning_db *db);

#endif
