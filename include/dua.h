/* dua.h: public API of libdua, block-sparse attention whose sparsity is learned.
 *
 * No OpenCL type appears here; dua_cl.h adds interop with a caller's OpenCL objects.
 * Conventions (shared/DESIGN.md section 4):
 *   - every function returns dua_status (or a value that cannot fail); DUA_SUCCESS is 0;
 *   - negative OpenCL error codes pass through unchanged, library codes are below -2000;
 *   - every *_create has a NULL-safe *_destroy;
 *   - on error nothing is written to outputs, and dua_context_last_error() says why;
 *   - the library never exits, aborts or prints: diagnostics go to the log callback.
 * Threads: a dua_context and everything made from it (buffers, and layouts while they are used with it) must
 * be used by one thread at a time; different contexts are independent. Destroy buffers before their context.
 * A layout keeps device copies for the last context it ran with: alternating one layout between two
 * contexts re-uploads them on every switch (make one layout per context instead).
 */
#ifndef DUA_H
#define DUA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DUA_VERSION_MAJOR 0
#define DUA_VERSION_MINOR 1
#define DUA_VERSION_PATCH 0

#if defined(DUA_BUILDING_LIBRARY) && defined(__GNUC__)
#define DUA_API __attribute__((visibility("default")))
#else
#define DUA_API
#endif

/* ---------------------------------------------------------------- status */

typedef enum dua_status {
  DUA_SUCCESS = 0,
  /* -1 .. -1999: OpenCL error codes, passed through unchanged */
  DUA_ERROR_INVALID_ARGUMENT = -2001, /* a NULL, a bad shape, stride, dtype, size... */
  DUA_ERROR_UNSUPPORTED = -2002,      /* valid request this build or device cannot do */
  DUA_ERROR_OUT_OF_MEMORY = -2003,    /* host allocation failed */
  DUA_ERROR_NO_PLATFORM = -2004,      /* no OpenCL platform (no ICD installed) */
  DUA_ERROR_NO_DEVICE = -2005,        /* no device matches the selection */
  DUA_ERROR_BUILD_FAILED = -2006,     /* kernel build failed; the log is in last_error */
  DUA_ERROR_IO = -2007,               /* a file could not be read or written */
  DUA_ERROR_CORRUPT_FILE = -2008,     /* a file failed validation and was refused */
  DUA_ERROR_INTERNAL = -2009          /* a bug in dua: please report it */
} dua_status;

/* Text for a status: library codes and OpenCL codes ("CL_OUT_OF_RESOURCES"). Never NULL. */
DUA_API const char *dua_status_string(dua_status status);

/* "MAJOR.MINOR.PATCH" of the library actually loaded. */
DUA_API const char *dua_version(void);

/* ---------------------------------------------------------------- logging */

typedef enum dua_log_level {
  DUA_LOG_ERROR = 0,
  DUA_LOG_WARNING = 1,
  DUA_LOG_INFO = 2,
  DUA_LOG_DEBUG = 3
} dua_log_level;

typedef void (*dua_log_fn)(dua_log_level level, const char *message, void *user);

/* ---------------------------------------------------------------- devices */

typedef enum dua_device_type {
  DUA_DEVICE_ANY = 0,
  DUA_DEVICE_GPU = 1,
  DUA_DEVICE_CPU = 2,
  DUA_DEVICE_ACCELERATOR = 3
} dua_device_type;

/* What the capability probe found. Strings are NUL-terminated and truncated to fit. */
typedef struct dua_device_info {
  int index;          /* global index across platforms, as dua-info lists it */
  int platform_index; /* platform, in OpenCL enumeration order */
  dua_device_type type;
  char platform_name[128];
  char platform_version[128];
  char name[128];
  char vendor[128];
  char device_version[128];
  char driver_version[128];
  char opencl_c_version[64];
  unsigned compute_units;
  unsigned max_clock_mhz;
  uint64_t global_mem_bytes;
  uint64_t local_mem_bytes;
  uint64_t max_alloc_bytes;
  size_t max_work_group_size;
  size_t preferred_work_group_multiple; /* from a trivial kernel; 0 if not probed */
  unsigned native_vector_width_float;
  unsigned native_vector_width_half;
  int has_fp16;               /* cl_khr_fp16 */
  int has_fp64;               /* cl_khr_fp64 */
  int has_subgroups;          /* cl_khr_subgroups or OpenCL 3.0 __opencl_c_subgroups */
  int has_subgroup_shuffle;   /* cl_khr_subgroup_shuffle */
  int has_intel_subgroup_mma; /* cl_intel_subgroup_matrix_multiply_accumulate */
  int nv_compute_capability;  /* 90 for sm_90; 0 when the driver does not say */
  int has_pci_bus_info;       /* cl_khr_pci_bus_info */
  int pci_domain, pci_bus, pci_device, pci_function;
  int numa_node;     /* hwloc NUMA node the device hangs off; -1 unknown */
  int nv_mma_probed; /* 1 once the compile-and-run probe ran (contexts only) */
  int nv_mma_f16;    /* inline-PTX mma.sync m16n8k16 f16 passed the probe */
  int nv_mma_tf32;   /* inline-PTX mma.sync m16n8k8 tf32 passed the probe */
  int nv_wgmma;      /* Hopper wgmma.mma_async (sm_90a PTX) passed the probe (contexts only); DUA_NO_WGMMA=1
                        skips it. Added in tail padding: sizeof(dua_device_info) unchanged on LP64 */
} dua_device_info;

/* Number of OpenCL devices across all platforms. DUA_ERROR_NO_PLATFORM if there is none. */
DUA_API dua_status dua_device_count(int *count);

/* Static facts about device `index` (no context, no probe kernels: nv_mma_* stay 0). */
DUA_API dua_status dua_device_get_info(int index, dua_device_info *info);

/* Host topology from hwloc. */
typedef struct dua_host_topology {
  int packages;
  int numa_nodes;
  int cores;
  int hardware_threads;
} dua_host_topology;

DUA_API dua_status dua_host_topology_get(dua_host_topology *topology);

/* ---------------------------------------------------------------- context */

typedef struct dua_context dua_context;

/* Device selection. With options == NULL, or selector == NULL and device_index < 0, the environment
 * variable DUA_DEVICE is used, and without it the first GPU, else the first CPU, else the first device.
 * A selector string is one of: a device index ("2"), a type ("gpu", "cpu", "accelerator"), or a
 * case-insensitive substring of "platform name / device name" ("nvidia", "pthread"). */
typedef struct dua_context_options {
  int device_index;     /* >= 0 selects by index; < 0 = use selector */
  const char *selector; /* see above; NULL = DUA_DEVICE, then the default rule */
  dua_log_fn log;       /* may be NULL */
  void *log_user;
  dua_log_level log_level; /* messages above this level are not sent; default DUA_LOG_ERROR */
  int disable_fast_paths;  /* 1 = portable kernels only (also: DUA_NO_MMA=1) */
} dua_context_options;

/* Fills *options with defaults (device_index -1, selector NULL, no log). */
DUA_API void dua_context_options_init(dua_context_options *options);

DUA_API dua_status dua_context_create(const dua_context_options *options, dua_context **out);
DUA_API void dua_context_destroy(dua_context *ctx);

/* Why the last call on this context failed (including the full OpenCL build log). Never NULL. */
DUA_API const char *dua_context_last_error(const dua_context *ctx);

/* Probed capabilities of the context's device, including the compile-and-run probes. */
DUA_API dua_status dua_context_device_info(const dua_context *ctx, dua_device_info *info);

/* Waits for all work queued on the context. */
DUA_API dua_status dua_context_finish(dua_context *ctx);

/* Program cache statistics, for tests and dua-info. */
typedef struct dua_cache_stats {
  unsigned memory_hits;  /* programs reused from this context's memory */
  unsigned disk_hits;    /* programs loaded from the on-disk cache */
  unsigned builds;       /* programs built from source */
  unsigned disk_rejects; /* on-disk entries found corrupt or stale and rebuilt */
  int disk_enabled;      /* 0 when DUA_CACHE=0 or no directory could be used */
  char directory[512];   /* on-disk cache directory ("" when disabled) */
  int reserved[8];       /* room for later fields; zero */
} dua_cache_stats;

DUA_API dua_status dua_context_cache_stats(const dua_context *ctx, dua_cache_stats *stats);

/* Builds (or loads from cache) every kernel program dua would use with these build options, so that
 * later calls do not pay for compilation. Mostly for tests and tools. */
DUA_API dua_status dua_context_warm_up(dua_context *ctx);

/* ---------------------------------------------------------------- buffers */

typedef struct dua_buffer dua_buffer;

/* Device memory of `bytes` bytes (> 0). Contents are undefined until written. */
DUA_API dua_status dua_buffer_create(dua_context *ctx, size_t bytes, dua_buffer **out);
DUA_API void dua_buffer_destroy(dua_buffer *buffer);
DUA_API size_t dua_buffer_size(const dua_buffer *buffer);

/* Blocking copies between host memory and [offset, offset + bytes) of the buffer. */
DUA_API dua_status dua_buffer_write(dua_buffer *buffer, size_t offset, size_t bytes, const void *src);
DUA_API dua_status dua_buffer_read(const dua_buffer *buffer, size_t offset, size_t bytes, void *dst);
/* Sets every byte of [offset, offset + bytes) to `value` (for poisoning outputs in tests). */
DUA_API dua_status dua_buffer_fill_bytes(dua_buffer *buffer, size_t offset, size_t bytes, uint8_t value);

/* ---------------------------------------------------------------- tensors */

typedef enum dua_dtype { DUA_F32 = 0, DUA_F16 = 1 } dua_dtype;

/* A view into a buffer: 4-D shape, strides in elements, byte offset. Costs nothing to make.
 * Attention tensors are logically (batch, heads, tokens, head_dim); strides make (B,N,H,D) storage a
 * view too. */
typedef struct dua_tensor {
  dua_buffer *buffer;
  size_t offset; /* bytes from the buffer start */
  dua_dtype dtype;
  int64_t shape[4];
  int64_t strides[4]; /* elements */
} dua_tensor;

/* Contiguous (row-major) view of shape s0 x s1 x s2 x s3 at byte offset. */
DUA_API dua_tensor dua_tensor_contiguous(dua_buffer *buffer, size_t offset, dua_dtype dtype, int64_t s0,
                                         int64_t s1, int64_t s2, int64_t s3);

/* Bytes per element of a dtype (4 or 2); 0 for an unknown dtype. */
DUA_API size_t dua_dtype_size(dua_dtype dtype);

/* ---------------------------------------------------------------- tuning

Tunable kernels (`kernel` below) and their parameters, in order:
  "fwd"           the portable forward's tile: bm, bn, tm, tn = query rows per work-group, keys per step,
                  work-group rows, work-group columns (bm and bn divide the layout block);
  "bwd"           the portable backward's tile, both passes: bm, bn, tm, tn (query rows per dQ tile and per
                  dK/dV query chunk, key rows per dK/dV tile and per dQ key chunk, work-group shape);
  "decode"        dua_decode's plan for calls whose work-groups serve one query row (no GQA sharing, one
                  query token): staged (1: K/V through local memory, 0: K/V in registers, 2: "warp", every
                  warp streams its own key units, NVIDIA inline PTX only: refused elsewhere unless
                  DUA_TUNING_EMULATED_WARP=1, a test switch; 3: "mma", the same walk with tensor-core
                  products, fp16 caches with head dim 64 or 128, likewise NVIDIA only), tile (keys per tile;
                  warp: keys per batch of a warp, 1..128; mma: 16), threads (work-items per work-group);
  "decode_gqa"    the same for calls whose work-groups serve several rows (GQA groups, 2..4 query tokens):
                  staged, tile, threads, rows (most query rows, heads x tokens, per work-group; mma: <= 8);
  "decode_split"  dua_decode's split-KV thresholds: waves, minunit, maxspl. A call with G work-groups per
                  split (sequences x KV heads x head chunks) is split into ceil(waves x compute units / G)
                  parts, at most (key units of its longest context) / minunit and maxspl, at least 1.
  "fwd_mma"       the NVIDIA tensor-core forward (fp16; fp32 is its tf32 variant, used only with
                  dua_attention_params.allow_tf32 = 1; head dims 64 and 128): mt, mt_cs = m-tiles of 16 query
                  rows per warp (1 or 2; a work-group is 4 warps, 64 x MT rows) for most calls (mt) and for
                  causal layouts whose trees visit <= 8 key blocks per query block, the mean over heads before
                  causality (mt_cs). MT 2 needs a layout block >= 128: where a value of 2 does not fit a call,
                  that call runs MT 1. Where fp16 head dim 64 runs on Hopper's wgmma (nv_wgmma), the
                  work-group is one warpgroup and MT its m-tiles of 64 rows; head dim 128 runs on wgmma with
                  MT 1 only (MT 2 there runs on mma.sync). Compiled default (NVIDIA): mt 2
                  for head dim 64, else 1; mt_cs 1. On wgmma, MT 2 meant two warpgroups before commit c2a0f25
                  (2026-11-27), and dua-tune kept 1 there: retune "fwd_mma" on Hopper after updating. Only
                  where the kernel runs (NVIDIA inline PTX: the mma.sync probe for that dtype passed, fast
                  paths on): elsewhere dua_context_set_tuning refuses it, dua_context_get_tuning fails with
                  DUA_ERROR_UNSUPPORTED and dua_tuning_candidates lists nothing.
For the decode kernels, `dtype` is the KV cache's dtype. Each value comes from the first of:
  1. developer environment variables: DUA_FWD_TILE="bm,bn,tm,tn" for "fwd"; DUA_DECODE_KERNEL and
     DUA_DECODE_TILE for "decode"/"decode_gqa", DUA_DECODE_SPLITS (a fixed split count) for
     "decode_split" (an invalid value fails the call); DUA_MMA_MT=1|2 for both of "fwd_mma"'s values
     (another value is ignored with a warning through the log),
  2. dua_context_set_tuning (this context's override),
  3. the tuning database file: $DUA_TUNING_FILE if set, else $XDG_DATA_HOME/dua/tuning.json, else
     ~/.local/share/dua/tuning.json; read once per context; entries match on kernel, dtype, head dim,
     device name and driver version (dua-tune writes them). A malformed file is refused as a whole with a
     warning through the log callback naming the bad entry, and the chain goes on,
  4. defaults compiled into the library for the vendor (measured on NVIDIA H100 and PoCL),
  5. generic defaults.
A source whose parameters do not fit a call (layout block, device limits; for decode: the call's rows,
context length and local memory, as given, without shrinking) is skipped for that call. Without sources 1-3
every kernel behaves exactly as before tuning existed (the compiled defaults, which decode shrinks to the
device as needed). */
#define DUA_TUNING_MAX_PARAMS 8

typedef enum dua_tuning_source {
  DUA_TUNING_DEVELOPER_ENV = 0, /* DUA_FWD_TILE, DUA_DECODE_KERNEL/TILE/SPLITS, DUA_MMA_MT */
  DUA_TUNING_OVERRIDE = 1,      /* dua_context_set_tuning */
  DUA_TUNING_FILE = 2,          /* the tuning database */
  DUA_TUNING_BUILTIN = 3,       /* compiled per-vendor defaults */
  DUA_TUNING_GENERIC = 4        /* generic defaults */
} dua_tuning_source;

typedef struct dua_tuning_info {
  int num_params;
  int32_t params[DUA_TUNING_MAX_PARAMS];         /* what the kernel will use */
  char param_names[DUA_TUNING_MAX_PARAMS][8];    /* "bm", "bn", ... */
  int32_t default_params[DUA_TUNING_MAX_PARAMS]; /* the compiled default (built-in or generic) */
  dua_tuning_source source;
  char origin[600];  /* "env DUA_FWD_TILE" (or another variable), "override", "file <path>", "built-in
                      * <vendor>", "generic" */
  char file[512];    /* the database file consulted ("" when none exists) */
  char warning[512]; /* why that file was refused, "" when it was read (or absent) */
} dua_tuning_info;

/* Sets (num_params > 0) or clears (num_params == 0, params may be NULL) this context's parameters for
 * kernel ("fwd", "bwd", "decode", "decode_gqa", "decode_split" or "fwd_mma"), dtype and head dim. Refuses
 * (DUA_ERROR_INVALID_ARGUMENT, message naming the value) an unknown kernel, a wrong count, out-of-range
 * values or parameters no call could use on this device (tiles: no layout block; decode plans: the
 * kernels' divisibility rules or the work-group size; "fwd_mma": the kernel does not run here for that
 * dtype and head dim). */
DUA_API dua_status dua_context_set_tuning(dua_context *ctx, const char *kernel, dua_dtype dtype, int head_dim,
                                          const int32_t *params, int num_params);

/* The parameters kernel would use for dtype, head dim and layout block, and where they come from. For the
 * decode kernels layout_block is only checked (a power of two 16..256) and the parameters are those before a
 * call's fitting: a call that cannot run them as given uses the next source. For "fwd_mma" they are what a
 * call with that block runs (a 2 becomes 1 below block 128; default_params likewise), and where the kernel
 * does not run (another device or dtype, head dim, block < 64) the call fails with DUA_ERROR_UNSUPPORTED
 * saying why. */
DUA_API dua_status dua_context_get_tuning(dua_context *ctx, const char *kernel, dua_dtype dtype, int head_dim,
                                          int layout_block, dua_tuning_info *info);

/* The parameter space of kernel on this device: every candidate (num_params values each, written to
 * params[i * num_params ...] for i < max_candidates) that the device limits (local memory, work-group size,
 * preferred work-group multiple), the kernels' rules and the layout block allow; *count gets the total,
 * which may exceed max_candidates. params may be NULL to count. Decode plans are checked against local
 * memory with the smallest bitmap (contexts up to 256 key units); "decode_split" lists powers of two;
 * "fwd_mma" lists mt x mt_cs in 1..2 (1 only below block 128), none where the kernel does not run. */
DUA_API dua_status dua_tuning_candidates(dua_context *ctx, const char *kernel, dua_dtype dtype, int head_dim,
                                         int layout_block, int32_t *params, int max_candidates, int *count);

/* IEEE binary16 conversions (round to nearest even; NaN and infinities kept), for filling fp16 tensors. */
DUA_API uint16_t dua_float_to_half(float value);
DUA_API float dua_half_to_float(uint16_t value);

/* ---------------------------------------------------------------- layouts (DESIGN.md section 2) */

/* Which key blocks each query block sees. N tokens, block size BLK (power of two 16..256),
 * nb = ceil(N / BLK). Per head h: arity p_h >= 2 and tree depth D_h = smallest d with p_h^d >= nb.
 *   positional tree: query block m and key block n share the depth-d subtree iff
 *       (m + s) / g == (n + s) / g, g = p^(D - d), s = shift (blocks). d = 0 is dense: every pair
 *       shares the root, whatever the shift.
 *   content tree (paths != NULL): blocks share the depth-d subtree iff their first d path digits agree.
 *   token extras, OR'd with the tree: window (|i - j| <= W, W > 0) and sink (keys j < S);
 *   then AND'd with causality (j <= i) when causal.
 * A row with no visible key outputs zeros and LSE = -inf. */
typedef struct dua_layout_desc {
  int32_t seq_len;        /* N > 0: query and key tokens */
  int32_t block;          /* BLK: 16, 32, 64, 128 or 256 */
  int32_t batch;          /* B > 0 (content paths are per batch) */
  int32_t heads;          /* Hq > 0: query heads; routing is per query head */
  int32_t kv_heads;       /* Hkv, divides Hq (GQA: head h reads K/V head h / (Hq / Hkv)); 0 = Hq */
  int32_t arity;          /* p >= 2 for every head, unless arities != NULL */
  const int32_t *arities; /* [heads] per-head arity, or NULL */
  const int32_t *depths;  /* [heads] per-head depth in [0, D_h], -1 = deepest (D_h); NULL = all 0 */
  int32_t shift;          /* positional tree block shift s >= 0 */
  int32_t window;         /* token window W >= 0, 0 = none */
  int32_t sink;           /* leading sink keys S >= 0, 0 = none */
  int32_t causal;         /* 0 or 1 */
  const uint8_t *paths;   /* content tree: [batch][heads][nb][max_h D_h] digits (digit < p_h), root
                           * first; NULL = positional tree */
} dua_layout_desc;

typedef struct dua_layout dua_layout;

/* Validates desc (every bad value is named in *error) and makes a host layout. The desc's arrays are
 * copied. error may be NULL; otherwise it receives a NUL-terminated message (up to error_size bytes). */
DUA_API dua_status dua_layout_create(const dua_layout_desc *desc, dua_layout **out, char *error,
                                     size_t error_size);

/* List form supplied by the caller (FlexAttention-style BSR): for each (b, h, query block m),
 * counts[(b*H + h)*nb + m] visible key blocks, whose indices are
 * indices[((b*H + h)*nb + m)*nb + 0 .. count). Element masks inside listed blocks still apply the
 * desc's causal flag and the sequence tail; depths/paths/window/sink of desc are ignored (use 0s). */
DUA_API dua_status dua_layout_create_from_lists(const dua_layout_desc *desc, const int32_t *counts,
                                                const int32_t *indices, dua_layout **out, char *error,
                                                size_t error_size);

DUA_API void dua_layout_destroy(dua_layout *layout);

/* Number of blocks nb and tree depth D_h of head h. */
DUA_API int32_t dua_layout_num_blocks(const dua_layout *layout);
DUA_API int32_t dua_layout_tree_depth(const dua_layout *layout, int32_t head);

/* Is key token j visible from query token i for (batch b, head h)? The exact rule, for references. */
DUA_API int dua_layout_visible(const dua_layout *layout, int32_t b, int32_t h, int32_t i, int32_t j);

/* Density: visible token pairs / N^2 and visited key blocks / nb^2, averaged over (batch, head). */
typedef struct dua_layout_density {
  double pairs;
  double blocks;
  double full_blocks;    /* blocks visited without an element mask, / nb^2 */
  double partial_blocks; /* blocks visited with an element mask, / nb^2 */
} dua_layout_density;

DUA_API dua_status dua_layout_density_get(const dua_layout *layout, dua_layout_density *density);

/* Block mask of (b, h) as text: one line per query block, '#' full, '+' partial, '.' skipped. Writes at
 * most size bytes including the NUL; returns the bytes needed (like snprintf). */
DUA_API size_t dua_layout_mask_text(const dua_layout *layout, int32_t b, int32_t h, char *out, size_t size);

/* Writes the block mask of (b, h) as an SVG picture to path. */
DUA_API dua_status dua_layout_mask_svg(const dua_layout *layout, int32_t b, int32_t h, const char *path);

/* Host list form (built on demand from the rule, or the caller's lists). For (b, h, m):
 * visited key blocks in ascending order, the first `full` of them need no element mask...
 * Arrays are owned by the layout and stay valid until it is destroyed. Shapes:
 *   counts [B*H*nb], full_counts [B*H*nb], indices [B*H*nb*nb] (row (b*H+h)*nb+m, first counts[.] used;
 *   full blocks first, then partial blocks, each ascending).
 * Transposed (for dK/dV): for key block n, the query blocks that visit it, same split and shapes. */
typedef struct dua_block_lists {
  int32_t num_blocks;
  const int32_t *counts;
  const int32_t *full_counts;
  const int32_t *indices;
} dua_block_lists;

DUA_API dua_status dua_layout_lists(dua_layout *layout, int transposed, dua_block_lists *lists);

/* ---------------------------------------------------------------- attention */

typedef enum dua_attention_algo {
  DUA_ALGO_AUTO = 0, /* rule form where the layout has one, else lists */
  DUA_ALGO_RULE = 1, /* blocks enumerated in the kernel from the layout rule */
  DUA_ALGO_LIST = 2, /* blocks read from the device list form */
  DUA_ALGO_NAIVE = 3 /* materialized scores (B*H*N*N fp32 scratch): the baseline, not for real use */
} dua_attention_algo;

typedef struct dua_attention_params {
  float scale; /* score scale; 0 = 1/sqrt(head_dim) */
  dua_attention_algo algo;
  /* Optional level bias (DESIGN.md section 7): fp32 tensor of shape (heads, max_h D_h + 1, 1, 1);
   * element [h][k] is added to the score of every tree pair whose blocks share k leading levels;
   * window and sink pairs get 0. NULL = none. */
  const dua_tensor *level_bias;
  /* Optional OUTPUT of dua_attention_backward (ignored by the forward): fp32 tensor (B, Hq, nb, nb) (any
   * strides); element [b][h][m][n] receives the sum of dS over the token pairs of (query block m, key block
   * n) that are tree pairs and not window/sink pairs, i.e. the gradient of a bias added to those pairs of
   * that block pair alone (the trainer's content routing chains it into the router). Zero for block pairs the
   * layout does not visit; every element is written; deterministic (no atomics). NULL = not computed. */
  const dua_tensor *tile_grad;
  /* Optional token-tree bias (paper routing mode, DESIGN.md section 7), both or neither: added to the score
   * of every visible pair (i, j) (tree, window and sink pairs alike, on top of any level bias):
   *     token_scale[b][h][i] * token_table[h][dua_token_tree_level(i, j, D_tok)],  D_tok =
   * dua_token_tree_depth(N) token_scale: fp32 (B, Hq, N, 1) (e.g. a learned amplitude times a per-position
   * gate); token_table: fp32 (Hq or 1, D_tok + 1, 1, 1) with contiguous levels (shape[0] = 1: shared by all
   * heads). dua_attention_backward_ex returns d token_scale[b][h][i] = sum_j dS_ij token_table[h][lvl(i, j)].
   * The tensor-core forward declines such calls (the portable kernel runs); naive and decode refuse them. */
  const dua_tensor *token_scale;
  const dua_tensor *token_table;
  /* fp32 storage only (forward): 1 lets the forward run its Q K^T and P V products on tensor cores in tf32
   * where the device has them (NVIDIA, inline-PTX probe passed, head dim 64 or 128, block >= 64, 16-byte
   * aligned rows): Q and P are rounded to a 10-bit mantissa (relative 2^-11), K and V truncated to it
   * (relative < 2^-10), sums stay fp32; like PyTorch's allow_tf32. 0 (default) = exact fp32 arithmetic. The
   * backward ignores it (exact fp32). */
  int allow_tf32;
} dua_attention_params;

/* Token tree over positions (the paper's topology): D_tok = ceil(log2 N) (0 for N = 1), integer arithmetic.
 */
DUA_API int32_t dua_token_tree_depth(int32_t n);
/* Similarity of positions i, j >= 0 in a token tree of depth depth: D_tok - k*, k* = min{k >= 1 : i >> k ==
 * j >> k} for i != j, and D_tok on the diagonal; equivalently D_tok - bit_length(i ^ j). In [0, D_tok]. */
DUA_API int32_t dua_token_tree_level(int32_t i, int32_t j, int32_t depth);

DUA_API void dua_attention_params_init(dua_attention_params *params);

/* O = softmax(scale * Q K^T + bias, masked by layout) V, per (batch, query head).
 *   q, o:  (B, Hq,  N, Dh)   fp32 or fp16 (all four of q, k, v, o share one dtype)
 *   k, v:  (B, Hkv, N, Dh)
 *   lse:   (B, Hq,  N, 1)    fp32, natural log of the softmax denominator (-inf for empty rows); may
 *          be NULL.
 * Dh in {32, 64, 96, 128}. Queued on the context's queue; does not wait. On Hopper GPUs the fp16 forward
 * at Dh 64 copies K and V by TMA from the third call on the same k and v buffers: the context then keeps
 * their tensor maps (the last 32 pairs) and a reference to both buffers until the pair is replaced or the
 * context destroyed (DUA_NO_TMA=1: neither). */
DUA_API dua_status dua_attention_forward(dua_context *ctx, dua_layout *layout,
                                         const dua_attention_params *params, const dua_tensor *q,
                                         const dua_tensor *k, const dua_tensor *v, const dua_tensor *o,
                                         const dua_tensor *lse);

/* CPU reference in double accumulation, same semantics, host arrays in the same element order as
 * the tensors' strides describe (pass host pointers; dtype of q/k/v/o: fp32 only, lse optional).
 * level_bias: host [heads][max D + 1] or NULL. Shapes as dua_attention_forward. */
typedef struct dua_host_tensor {
  float *data;
  int64_t shape[4];
  int64_t strides[4];
} dua_host_tensor;

DUA_API dua_status dua_attention_reference(const dua_layout *layout, float scale, const float *level_bias,
                                           const dua_host_tensor *q, const dua_host_tensor *k,
                                           const dua_host_tensor *v, const dua_host_tensor *o,
                                           const dua_host_tensor *lse);

/* Gradients of a forward pass (FlashAttention-2 structure): given q, k, v, the forward's o and lse, and
 * d_o = dLoss/dO, writes dq (B, Hq, N, Dh), dk and dv (B, Hkv, N, Dh; summed over the query heads of a GQA
 * group) in q's dtype, and, when params->level_bias is set and d_level_bias is not NULL, the gradient of
 * the level bias (fp32, shape of params->level_bias), summed over batch and positions. Deterministic:
 * no floating-point atomics. Queued on the context's queue; does not wait. */
DUA_API dua_status dua_attention_backward(dua_context *ctx, dua_layout *layout,
                                          const dua_attention_params *params, const dua_tensor *q,
                                          const dua_tensor *k, const dua_tensor *v, const dua_tensor *o,
                                          const dua_tensor *lse, const dua_tensor *d_o, const dua_tensor *dq,
                                          const dua_tensor *dk, const dua_tensor *dv,
                                          const dua_tensor *d_level_bias);

/* dua_attention_backward plus, when params->token_scale is set and d_token_scale is not NULL, the gradient of
 * the token-tree bias scale: fp32 (B, Hq, N, 1), d_token_scale[b][h][i] = sum_j dS_ij token_table[h][lvl(i,
 * j)] (per row, deterministic; 0 for rows with no visible key). dua_attention_backward is this with NULL. */
DUA_API dua_status dua_attention_backward_ex(dua_context *ctx, dua_layout *layout,
                                             const dua_attention_params *params, const dua_tensor *q,
                                             const dua_tensor *k, const dua_tensor *v, const dua_tensor *o,
                                             const dua_tensor *lse, const dua_tensor *d_o,
                                             const dua_tensor *dq, const dua_tensor *dk, const dua_tensor *dv,
                                             const dua_tensor *d_level_bias, const dua_tensor *d_token_scale);

/* Host token-tree bias for the references: scale [B][Hq][N], table [table_heads][levels] with table_heads 1
 * or Hq and levels = dua_token_tree_depth(N) + 1. */
typedef struct dua_host_token_bias {
  const float *scale;
  const float *table;
  int32_t table_heads;
  int32_t levels;
} dua_host_token_bias;

/* dua_attention_reference with an optional token-tree bias (NULL = none). */
DUA_API dua_status dua_attention_reference_ex(const dua_layout *layout, float scale, const float *level_bias,
                                              const dua_host_token_bias *token_bias, const dua_host_tensor *q,
                                              const dua_host_tensor *k, const dua_host_tensor *v,
                                              const dua_host_tensor *o, const dua_host_tensor *lse);

/* CPU reference backward in double accumulation (recomputes the forward itself): host tensors as in
 * dua_attention_reference; d_o has q's shape; dq, dk, dv are written; d_level_bias ([heads][max D + 1]) is
 * written when level_bias and d_level_bias are both non-NULL. */
DUA_API dua_status dua_attention_backward_reference(const dua_layout *layout, float scale,
                                                    const float *level_bias, const dua_host_tensor *q,
                                                    const dua_host_tensor *k, const dua_host_tensor *v,
                                                    const dua_host_tensor *d_o, const dua_host_tensor *dq,
                                                    const dua_host_tensor *dk, const dua_host_tensor *dv,
                                                    float *d_level_bias);
/* dua_attention_backward_reference with an optional token-tree bias; d_token_scale ([B][Hq][N]) is written
 * when token_bias and d_token_scale are both non-NULL. */
DUA_API dua_status dua_attention_backward_reference_ex(
    const dua_layout *layout, float scale, const float *level_bias, const dua_host_token_bias *token_bias,
    const dua_host_tensor *q, const dua_host_tensor *k, const dua_host_tensor *v, const dua_host_tensor *d_o,
    const dua_host_tensor *dq, const dua_host_tensor *dk, const dua_host_tensor *dv, float *d_level_bias,
    float *d_token_scale);

/* As dua_attention_backward_reference, and when tile_grad is not NULL also the block-pair gradient of
 * params.tile_grad: host [B][Hq][nb][nb], contiguous, every element written. */
DUA_API dua_status dua_attention_backward_reference_tiles(
    const dua_layout *layout, float scale, const float *level_bias, const dua_host_tensor *q,
    const dua_host_tensor *k, const dua_host_tensor *v, const dua_host_tensor *d_o, const dua_host_tensor *dq,
    const dua_host_tensor *dk, const dua_host_tensor *dv, float *d_level_bias, float *tile_grad);

/* ---------------------------------------------------------------- kv cache and decode */

/* Paged KV cache for generation. A pool of `num_pages` pages; a page holds `page_tokens` consecutive tokens
 * of one sequence, for every layer and every KV head (device storage per layer:
 * [num_pages][kv_heads][page_tokens][head_dim], K and V apart). Each sequence has a block table (page of
 * its tokens [i*P, (i+1)*P)), shared by all layers and kept on the device; each (sequence, layer) has its
 * own length. Pages are taken from the pool when an append needs them and given back when no sequence uses
 * them any more; a forked sequence shares its parent's pages until one of them writes into a shared page
 * (copy on write, of that page only).
 *
 * Pages and layout blocks: any power of two 16..256 for both. dua_decode skips in units of
 * min(page_tokens, layout block, decode tile) tokens, so a skipped layout block never costs a page read:
 * with page_tokens <= block every skipped block skips block/page_tokens whole pages; with larger pages only
 * the visible blocks inside a page are read.
 *
 * Capacity: an append that needs more pages than are free, or that would grow a sequence past
 * max_tokens, and a dua_kv_seq_add/fork without a free sequence slot, return DUA_ERROR_CAPACITY and
 * change nothing (no page taken, no token written, no length changed). */
#define DUA_ERROR_CAPACITY ((dua_status)-2010) /* a KV cache has no free page or sequence slot left */

typedef struct dua_kv_cache_desc {
  int32_t layers;      /* > 0 */
  int32_t kv_heads;    /* Hkv > 0 */
  int32_t head_dim;    /* 32, 64, 96 or 128 */
  int32_t page_tokens; /* P: power of two 16..256 */
  int32_t num_pages;   /* pages in the pool (> 0); device memory: 2*layers*num_pages*Hkv*P*head_dim*dtype */
  int32_t max_seqs;    /* sequence slots (> 0); ids are 0 .. max_seqs-1 */
  int32_t max_tokens;  /* most tokens one sequence may hold (> 0; sizes the block tables) */
  dua_dtype dtype;     /* storage: DUA_F32 or DUA_F16 */
  uint32_t page_order_seed; /* 0: free pages are handed out lowest first; else in a pseudo-random order
                             * from this seed (block tables then look like a long-running server's) */
  int32_t reserved[7];      /* zero */
} dua_kv_cache_desc;

typedef struct dua_kv_cache dua_kv_cache;

/* Allocates the pool on ctx's device (one K and one V buffer per layer, each within the device's largest
 * allocation). The cache belongs to ctx: use it only with ctx, destroy it before ctx. */
DUA_API dua_status dua_kv_cache_create(dua_context *ctx, const dua_kv_cache_desc *desc, dua_kv_cache **out);
/* Waits for the cache's queued work, then frees it. NULL-safe. */
DUA_API void dua_kv_cache_destroy(dua_kv_cache *cache);

/* A new empty sequence in the lowest free slot: *seq receives its id. */
DUA_API dua_status dua_kv_seq_add(dua_kv_cache *cache, int32_t *seq);
/* A new sequence *dst holding the same tokens as src (its pages shared, copied on write). */
DUA_API dua_status dua_kv_seq_fork(dua_kv_cache *cache, int32_t src, int32_t *dst);
/* Frees a sequence and gives back the pages no other sequence uses. */
DUA_API dua_status dua_kv_seq_free(dua_kv_cache *cache, int32_t seq);
/* Tokens that sequence seq holds at layer `layer`. */
DUA_API dua_status dua_kv_seq_length(const dua_kv_cache *cache, int32_t seq, int32_t layer, int32_t *length);
/* Pages in the pool that no sequence uses. */
DUA_API dua_status dua_kv_cache_free_pages(const dua_kv_cache *cache, int32_t *free_pages);

/* Appends T new tokens to each of n sequences at one layer: k and v are (n, Hkv, T, head_dim) tensors of
 * ctx (fp32 or fp16, converted to the cache's dtype; head_dim contiguous); row i goes to sequence seqs[i],
 * at positions length .. length+T-1 of that layer. seqs must be distinct live sequences. Pages are taken
 * as needed (all or nothing: DUA_ERROR_CAPACITY when the pool or max_tokens cannot hold them). Queued on
 * the context's queue; does not wait. */
DUA_API dua_status dua_kv_append(dua_kv_cache *cache, int32_t layer, int32_t n, const int32_t *seqs,
                                 const dua_tensor *k, const dua_tensor *v);

/* Attention of T (1..4) new query tokens per sequence against the cache of one layer.
 *   q, o:  (S, Hq, T, head_dim), fp32 or fp16 (the same for both; independent of the cache's dtype)
 *   lse:   (S, Hq, T, 1) fp32 (natural log; -inf where nothing is visible), or NULL
 *   seqs:  [S] live sequences (repeats allowed); sequence s of length L (at this layer) puts query token i
 *          at position L - T + i, so the T tokens must have been appended first (dua_kv_append).
 * Semantics: query position t of sequence s gets exactly row t of dua_attention_forward on that sequence's
 * tokens with this layout (positional or content tree per head, window, sink, level bias), which must be
 * causal (layout causal = 1) and have seq_len N >= every L, kv_heads = the cache's, heads = Hq, and batch
 * = S (batch b routes sequence seqs[b]) or 1 (one routing for all). List layouts and DUA_ALGO_NAIVE/LIST
 * are not supported (DUA_ERROR_UNSUPPORTED). A position < 0 (L < T, e.g. L = 0) gives O = 0 and
 * LSE = -inf. Only key units holding a visible key are read; the query heads of a GQA group share each
 * load. Long contexts are split across work-groups and merged through the LSE. Queued; does not wait. */
DUA_API dua_status dua_decode(dua_context *ctx, dua_kv_cache *cache, int32_t layer, dua_layout *layout,
                              const dua_attention_params *params, const int32_t *seqs, const dua_tensor *q,
                              const dua_tensor *o, const dua_tensor *lse);

#ifdef __cplusplus
}
#endif

#endif /* DUA_H */
