/* context_internal.h: the dua_context and dua_buffer structs and the runtime's internal interface
 * (errors, logging, program cache, probes), shared by host/runtime and the subsystems above it. */
#ifndef DUA_CONTEXT_INTERNAL_H
#define DUA_CONTEXT_INTERNAL_H

#include "dua_cl.h"

#include <stdarg.h>

#define DUA_ERROR_TEXT_MAX 65536
#define DUA_MAX_KERNELS_PER_PROGRAM 16

typedef struct dua_program_entry {
  char *sources; /* names joined by ',' (e.g. "common,attn_fwd") */
  char *options; /* full build options */
  cl_program program;
  int kernel_count;
  char *kernel_names[DUA_MAX_KERNELS_PER_PROGRAM];
  cl_kernel kernels[DUA_MAX_KERNELS_PER_PROGRAM];
  struct dua_program_entry *next;
} dua_program_entry;

#define DUA_TMA_ENTRIES 32 /* K and V pairs whose TMA tensor maps a context keeps */

struct dua_context {
  uint64_t serial; /* unique per process: caches keyed by context compare this, never the pointer */
  cl_platform_id platform;
  cl_device_id device;
  cl_context cl_ctx;
  cl_command_queue queue;
  dua_device_info info;
  int fast_paths_disabled; /* options or DUA_NO_MMA=1 */
  int wgmma_bwd_failed[2]; /* the wgmma backward at head dim 64 [0] or 128 [1] did not build here: mma.sync */
  int wgmma_fwd128_failed; /* the head-dim-128 wgmma forward did not build or launch here: mma.sync there */
  dua_log_fn log;
  void *log_user;
  dua_log_level log_level;
  char *last_error; /* DUA_ERROR_TEXT_MAX bytes */
  dua_program_entry *programs;
  dua_cache_stats cache;
  char cl_dir[512]; /* DUA_CL_DIR, "" for embedded sources */
  cl_mem scratch;   /* grow-only scratch memory (dua_context_scratch) */
  size_t scratch_bytes;
  cl_mem counters; /* grow-only zeroed counters (dua_context_counters) */
  size_t counters_bytes;
  /* The forward's TMA tensor maps by K and V (host/attention/tma_maps.c), DUA_TMA_ENTRIES pairs, with their
   * device copies side by side in tma_device. tma_failed: the TMA variant did not build or launch here. */
  struct dua_tma_entry {
    cl_mem k, v;                            /* retained from the build on (state >= 2) */
    cl_long4 k_strides, v_strides, offsets; /* offsets: K's and V's only (s1, s2) count */
    cl_int dims[3];                         /* tokens, KV heads, batch */
    int state;               /* 0 empty, 1 seen once, 2 being built (ready: the read), 3 built */
    unsigned long long used; /* tma_clock at the last use */
    cl_event ready;
    unsigned char maps[256];
  } tma[DUA_TMA_ENTRIES];
  unsigned long long tma_clock;
  cl_mem tma_device;
  int tma_failed;
  int tma_emulated;      /* tests: the TMA variant also on a device whose wgmma is emulated */
  int warned_split_tail; /* DUA_SPLIT_TAIL held an invalid value: said once */
  /* tuning state (host/tuning/tuning.c), made on first use; runtime only frees it through the hook */
  void *tuning;
  void (*tuning_free)(void *tuning);
};

/* Releases what a TMA map entry holds (its buffers where retained, state >= 2, and its read's event) and
 * empties it (host/attention/tma_maps.c; also at context destroy). Its maps' bytes stay: a read into them may
 * still be under way, which the in-order queue finishes before any later read into the same entry. */
void dua_tma_entry_release(struct dua_tma_entry *e);

/* Scratch device memory of at least bytes, owned by the context and reused across calls. */
dua_status dua_context_scratch(dua_context *ctx, size_t bytes, cl_mem *out);

/* At least count 32-bit counters, owned by the context, 0 when made: every kernel that counts in them must
 * leave them 0 again (the forward's split tail: the last work-group to count resets its counter). */
dua_status dua_context_counters(dua_context *ctx, size_t count, cl_mem *out);

struct dua_buffer {
  dua_context *ctx;
  cl_mem mem;
  size_t bytes;
};

/* Reads rows rows of row_bytes bytes, the first at byte offset and each next row_pitch bytes after the one
 * before, into dst packed (rows x row_bytes): one blocking rectangular read instead of one read per row. */
dua_status dua_buffer_read_rows(const dua_buffer *buffer, size_t offset, size_t row_bytes, size_t row_pitch,
                                size_t rows, void *dst);

/* Records a formatted error as the context's last error and returns status (ctx may be NULL). */
dua_status dua_fail(dua_context *ctx, dua_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Appends text to the last error (for build logs). */
void dua_error_append(dua_context *ctx, const char *text);
void dua_log(const dua_context *ctx, dua_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* OpenCL error code -> "CL_..." name, or NULL if unknown. */
const char *dua_cl_error_name(cl_int code);

/* Device enumeration: fills platform/device of global index; returns DUA_ERROR_NO_PLATFORM/NO_DEVICE. */
dua_status dua_device_lookup(int index, cl_platform_id *platform, cl_device_id *device);
/* Static capability query of one device (no kernels run). */
dua_status dua_device_query(cl_platform_id platform, cl_device_id device, dua_device_info *info);
/* 1 if the device is NVIDIA's (vendor or platform name): where inline PTX can exist. */
int dua_device_is_nvidia(const dua_device_info *info);
/* Resolves a selector string (index, type word, or name substring) to a global index. */
dua_status dua_device_select(const char *selector, int *index, char *why, size_t why_size);

/* NUMA node of a PCI device via hwloc; -1 if unknown. */
int dua_topology_pci_numa_node(int domain, int bus, int device, int function);

/* Compile-and-run probes on the context's device (fills info.preferred_work_group_multiple,
 * nv_mma_*). Failures only turn fast paths off; they are logged, never returned. */
void dua_probe_run(dua_context *ctx);

/* Embedded OpenCL C sources (generated at build time from cl/ *.cl). */
typedef struct dua_embedded_source {
  const char *name; /* file name without .cl */
  const char *text;
} dua_embedded_source;
extern const dua_embedded_source dua_embedded_sources[];
extern const int dua_embedded_source_count;

/* Program cache: sources is a comma-separated list of cl/ file names concatenated in order; options
 * are -D build options. Looks up memory, then disk, then builds; returns a kernel of the program.
 * The returned cl_kernel is owned by the context (no release). */
dua_status dua_program_kernel(dua_context *ctx, const char *sources, const char *options, const char *kernel,
                              cl_kernel *out);
/* Same, returning the cl_program (owned by the context). */
dua_status dua_program_get(dua_context *ctx, const char *sources, const char *options, cl_program *out);
void dua_program_cache_release(dua_context *ctx);
/* Options containing DUA_SM90A_OPTION build in two steps: the source for the device's sm_90, then its PTX
 * with the "// DUA_SM90A " lines uncommented and the target sm_90a (ptx_sm90a.c); the disk cache keeps the
 * second, keyed on the options: the number is the rewrite's version (raise it when ptx_sm90a.c changes what
 * it writes, so that no cached program of the old rewrite is taken). */
#define DUA_SM90A_OPTION "-DDUA_SM90A=1"
/* Options containing DUA_PTX_CAPS_OPTION (NVIDIA, any target) build in two steps too: the source, then its
 * PTX with the kernels' register caps applied (dua_ptx_caps; kept uncapped where the driver refuses it). The
 * number is that rewrite's version, as above. */
#define DUA_PTX_CAPS_OPTION "-DDUA_PTX_CAPS=1"
/* ptx with every "// DUA_SM90A " marker removed (*markers counts them), each entry's "// DUA_MAXNREG n"
 * turned into ".maxnreg n" and ".target sm_90" -> sm_90a; NULL when the PTX does not target sm_90 exactly, or
 * out of memory. The caller frees it. */
char *dua_ptx_to_sm90a(const char *ptx, int *markers);
/* ptx with only the register caps applied (*caps counts them), any target; NULL when out of memory. */
char *dua_ptx_caps(const char *ptx, int *caps);
/* Whether ptx targets sm_90 exactly (what dua_ptx_to_sm90a accepts). */
int dua_ptx_targets_sm90(const char *ptx);

/* Whether environment variable `name` is set, non-empty and not "0" (DUA_NO_MMA=1 and the like). */
int dua_env_flag(const char *name);

/* On-disk cache (disk_cache.c). key_hex: 64 hex chars + NUL. */
void dua_disk_cache_init(dua_context *ctx);
void dua_disk_cache_key(const dua_context *ctx, const char *source_text, const char *options,
                        char key_hex[65]);
/* Loads a cached binary; returns 1 and a malloc'ed blob on success, 0 if absent, -1 if rejected. */
int dua_disk_cache_load(dua_context *ctx, const char *key_hex, unsigned char **blob, size_t *size);
void dua_disk_cache_store(dua_context *ctx, const char *key_hex, const unsigned char *blob, size_t size);

/* Validation helper for buffers / tensors used by entry points. */
dua_status dua_tensor_check(dua_context *ctx, const dua_tensor *t, const char *name);

#endif
