/* dua-info: lists every OpenCL platform and device with the probed capabilities, the fast paths dua would
 * use, the tuned parameters of each kernel (forward and backward tiles, decode plans, decode split-KV
 * thresholds, the tensor-core forward's m-tiles per warp) and where they come from (the tuning lookup chain),
 * the program cache directory and the host topology (hwloc). --json prints the same for machines. */
#include "dua.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *type_name(dua_device_type t) {
  switch (t) {
  case DUA_DEVICE_GPU:
    return "GPU";
  case DUA_DEVICE_CPU:
    return "CPU";
  case DUA_DEVICE_ACCELERATOR:
    return "accelerator";
  default:
    return "other";
  }
}

/* JSON string with the few escapes device strings can need. */
static void json_string(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      printf("\\u%04x", (unsigned char)*s);
    else
      putchar(*s);
  }
  putchar('"');
}

static const char *mma_path(const dua_device_info *d, int disabled) {
  if (!d->nv_mma_probed)
    return "portable kernels (no vendor fast path on this device)";
  if (disabled)
    return "portable kernels (fast paths disabled by DUA_NO_MMA)";
  if (d->nv_mma_f16 && d->nv_wgmma)
    return getenv("DUA_NO_TMA") && !strcmp(getenv("DUA_NO_TMA"), "1")
               ? "nvidia tensor cores: fp16 forward and backward on wgmma (head dims 64, 128), blocks >= 64 "
                 "(DUA_NO_TMA=1: the forward's K and V by cp.async); everything else portable"
               : "nvidia tensor cores: fp16 forward and backward on wgmma (head dims 64, 128), blocks >= 64, "
                 "the forward's K and V at head dim 64 by TMA; everything else portable";
  if (d->nv_mma_f16)
    return "nvidia mma.sync: fp16 forward and backward, head dims 64/128, blocks >= 64; everything else "
           "portable";
  return "portable kernels (mma.sync probe failed)";
}

/* Tuned parameters per kernel, dtype (fp32, fp16) and head dim, for layout block 128; ok = 0 where the lookup
 * failed (fwd_mma: also where the tensor-core forward does not run, saying why). */
#define NKERNELS 6
static const char *const tune_kernels[NKERNELS] = {"fwd",        "bwd",          "decode",
                                                   "decode_gqa", "decode_split", "fwd_mma"};
static const int tune_dims[4] = {32, 64, 96, 128};
typedef struct tunings {
  dua_tuning_info t[NKERNELS][2][4];
  int ok[NKERNELS][2][4];
  char error[NKERNELS][2][4][256];
} tunings;

static void get_tunings(dua_context *ctx, tunings *tu) {
  memset(tu, 0, sizeof *tu);
  for (int k = 0; k < NKERNELS; k++)
    for (int f = 0; f < 2; f++)
      for (int i = 0; i < 4; i++) {
        dua_status st = dua_context_get_tuning(ctx, tune_kernels[k], f ? DUA_F16 : DUA_F32, tune_dims[i], 128,
                                               &tu->t[k][f][i]);
        tu->ok[k][f][i] = st == DUA_SUCCESS;
        if (!tu->ok[k][f][i])
          snprintf(tu->error[k][f][i], sizeof tu->error[k][f][i], "%s", dua_context_last_error(ctx));
      }
}

/* A decode plan's kernel by name ("regs", "staged", "warp", "mma") when parameter j of t is "staged", else
 * NULL. */
static const char *decode_kernel(const dua_tuning_info *t, const int32_t *params, int j) {
  static const char *const names[4] = {"regs", "staged", "warp", "mma"};
  if (strcmp(t->param_names[j], "staged") != 0 || params[j] < 0 || params[j] > 3)
    return NULL;
  return names[params[j]];
}

static void print_tunings_text(const tunings *tu) {
  static const char *const what[NKERNELS] = {
      "portable forward tile, layout block 128",
      "portable backward tile, layout block 128",
      "decode plan, one query row per work-group; dtype = KV cache",
      "decode plan, several rows per work-group (GQA, tokens > 1)",
      "decode split-KV thresholds",
      "tensor-core forward (NVIDIA; fp32: tf32), layout block 128: m-tiles of 16 query rows per warp; mt_cs: "
      "causal layouts visiting <= 8 blocks per row"};
  printf("  tuned parameters    (kernel dtype head dim: values; source)\n");
  for (int k = 0; k < NKERNELS; k++) {
    const dua_tuning_info *t = &tu->t[k][0][1]; /* the names: of a lookup that worked */
    for (int f = 0; f < 2 && !t->num_params; f++)
      for (int i = 0; i < 4 && !t->num_params; i++)
        t = &tu->t[k][f][i];
    printf("    %-12s  ", tune_kernels[k]);
    for (int j = 0; j < t->num_params; j++) /* a decode plan's "staged" is printed as its kernel's name */
      printf("%s%s", j ? "," : "", strcmp(t->param_names[j], "staged") ? t->param_names[j] : "kernel");
    printf("  (%s)\n", what[k]);
    if (!t->num_params) { /* no lookup worked (fwd_mma where the kernel does not run): one line, why */
      printf("    %-12s  none on this device: %s\n", tune_kernels[k], tu->error[k][1][1]);
      continue;
    }
    for (int f = 0; f < 2; f++)
      for (int i = 0; i < 4; i++) {
        t = &tu->t[k][f][i];
        printf("    %-12s  %s head_dim %3d  ", tune_kernels[k], f ? "fp16" : "fp32", tune_dims[i]);
        if (!tu->ok[k][f][i]) {
          printf("none: %s\n", tu->error[k][f][i]);
          continue;
        }
        for (int j = 0; j < t->num_params; j++) {
          const char *name = decode_kernel(t, t->params, j);
          if (name)
            printf("%s%s", j ? "," : "", name);
          else
            printf("%s%d", j ? "," : "", (int)t->params[j]);
        }
        printf("  %s\n", t->origin);
      }
  }
  const dua_tuning_info *t0 = &tu->t[0][0][0];
  if (t0->file[0])
    printf("  tuning database     %s%s%s\n", t0->file, t0->warning[0] ? " REFUSED: " : "", t0->warning);
  else
    printf("  tuning database     none (DUA_TUNING_FILE, $XDG_DATA_HOME/dua/tuning.json)\n");
}

static void print_text(const dua_device_info *d, int probed, const dua_cache_stats *cache, int fast_disabled,
                       const tunings *tu) {
  printf("device %d  [%s]  %s\n", d->index, type_name(d->type), d->name);
  printf("  platform            %s (%s)\n", d->platform_name, d->platform_version);
  printf("  vendor              %s\n", d->vendor);
  printf("  device version      %s\n", d->device_version);
  printf("  driver version      %s\n", d->driver_version);
  printf("  OpenCL C            %s\n", d->opencl_c_version);
  printf("  compute units       %u @ %u MHz\n", d->compute_units, d->max_clock_mhz);
  printf("  global memory       %.2f GiB (largest allocation %.2f GiB)\n", d->global_mem_bytes / 1073741824.0,
         d->max_alloc_bytes / 1073741824.0);
  printf("  local memory        %llu KiB\n", (unsigned long long)(d->local_mem_bytes / 1024));
  printf("  max work-group      %zu (preferred multiple %zu)\n", d->max_work_group_size,
         d->preferred_work_group_multiple);
  printf("  native vector width float %u, half %u\n", d->native_vector_width_float,
         d->native_vector_width_half);
  printf("  cl_khr_fp16 %s, cl_khr_fp64 %s, sub-groups %s, sub-group shuffle %s, intel sub-group mma %s\n",
         d->has_fp16 ? "yes" : "no", d->has_fp64 ? "yes" : "no", d->has_subgroups ? "yes" : "no",
         d->has_subgroup_shuffle ? "yes" : "no", d->has_intel_subgroup_mma ? "yes" : "no");
  if (d->nv_compute_capability)
    printf("  NVIDIA compute capability %d.%d\n", d->nv_compute_capability / 10,
           d->nv_compute_capability % 10);
  if (d->has_pci_bus_info)
    printf("  PCI %04x:%02x:%02x.%x, NUMA node %d\n", d->pci_domain, d->pci_bus, d->pci_device,
           d->pci_function, d->numa_node);
  if (probed) {
    printf("  mma.sync probe      %s\n",
           d->nv_mma_probed
               ? (d->nv_mma_f16 ? (d->nv_mma_tf32 ? "f16 ok, tf32 ok" : "f16 ok, tf32 failed") : "f16 failed")
               : "not applicable");
    if (d->nv_compute_capability == 90)
      printf("  wgmma probe         %s\n", d->nv_wgmma ? "ok (sm_90a)" : "failed or off (DUA_NO_WGMMA)");
    printf("  attention path      %s\n", mma_path(d, fast_disabled));
    printf("  program cache       %s\n", cache->disk_enabled ? cache->directory : "off");
    print_tunings_text(tu);
  } else {
    printf("  (not probed: context creation failed)\n");
  }
}

static void print_json(const dua_device_info *d, int probed, const dua_cache_stats *cache, int fast_disabled,
                       int first, const tunings *tu) {
  printf("%s\n    {\"index\": %d, \"type\": ", first ? "" : ",", d->index);
  json_string(type_name(d->type));
  printf(", \"name\": ");
  json_string(d->name);
  printf(", \"vendor\": ");
  json_string(d->vendor);
  printf(", \"platform\": ");
  json_string(d->platform_name);
  printf(", \"platform_version\": ");
  json_string(d->platform_version);
  printf(", \"device_version\": ");
  json_string(d->device_version);
  printf(", \"driver_version\": ");
  json_string(d->driver_version);
  printf(", \"opencl_c_version\": ");
  json_string(d->opencl_c_version);
  printf(",\n     \"compute_units\": %u, \"max_clock_mhz\": %u, \"global_mem_bytes\": %llu, "
         "\"local_mem_bytes\": %llu,"
         " \"max_alloc_bytes\": %llu, \"max_work_group_size\": %zu, \"preferred_work_group_multiple\": %zu,",
         d->compute_units, d->max_clock_mhz, (unsigned long long)d->global_mem_bytes,
         (unsigned long long)d->local_mem_bytes, (unsigned long long)d->max_alloc_bytes,
         d->max_work_group_size, d->preferred_work_group_multiple);
  printf("\n     \"fp16\": %s, \"fp64\": %s, \"subgroups\": %s, \"subgroup_shuffle\": %s, "
         "\"intel_subgroup_mma\": %s,"
         " \"nv_compute_capability\": %d, \"pci_bus_info\": %s, \"numa_node\": %d,",
         d->has_fp16 ? "true" : "false", d->has_fp64 ? "true" : "false", d->has_subgroups ? "true" : "false",
         d->has_subgroup_shuffle ? "true" : "false", d->has_intel_subgroup_mma ? "true" : "false",
         d->nv_compute_capability, d->has_pci_bus_info ? "true" : "false", d->numa_node);
  printf("\n     \"probed\": %s, \"nv_mma_probed\": %s, \"nv_mma_f16\": %s, \"nv_mma_tf32\": %s, "
         "\"nv_wgmma\": %s, \"fast_paths_disabled\": %s,"
         " \"attention_path\": ",
         probed ? "true" : "false", d->nv_mma_probed ? "true" : "false", d->nv_mma_f16 ? "true" : "false",
         d->nv_mma_tf32 ? "true" : "false", d->nv_wgmma ? "true" : "false", fast_disabled ? "true" : "false");
  json_string(mma_path(d, fast_disabled));
  printf(", \"program_cache\": ");
  json_string(probed && cache->disk_enabled ? cache->directory : "");
  printf(",\n     \"forward_tiles\": [");
  for (int f = 0; probed && f < 2; f++)
    for (int i = 0; i < 4; i++) {
      const dua_tuning_info *t = &tu->t[0][f][i];
      printf("%s{\"dtype\": \"%s\", \"head_dim\": %d, ", f || i ? ", " : "", f ? "fp16" : "fp32",
             tune_dims[i]);
      if (tu->ok[0][f][i])
        printf("\"bm\": %d, \"bn\": %d, \"tm\": %d, \"tn\": %d, \"source\": ", (int)t->params[0],
               (int)t->params[1], (int)t->params[2], (int)t->params[3]);
      else
        printf("\"error\": ");
      json_string(tu->ok[0][f][i] ? t->origin : tu->error[0][f][i]);
      printf("}");
    }
  printf("],\n     \"tuning\": [");
  for (int k = 0; probed && k < NKERNELS; k++)
    for (int f = 0; f < 2; f++)
      for (int i = 0; i < 4; i++) {
        const dua_tuning_info *t = &tu->t[k][f][i];
        printf("%s{\"kernel\": \"%s\", \"dtype\": \"%s\", \"head_dim\": %d, ", k || f || i ? ", " : "",
               tune_kernels[k], f ? "fp16" : "fp32", tune_dims[i]);
        if (tu->ok[k][f][i]) {
          printf("\"params\": {");
          for (int j = 0; j < t->num_params; j++)
            printf("%s\"%s\": %d", j ? ", " : "", t->param_names[j], (int)t->params[j]);
          printf("}, ");
          const char *name = t->num_params ? decode_kernel(t, t->params, 0) : NULL;
          if (name)
            printf("\"decode_kernel\": \"%s\", ", name);
          printf("\"source\": ");
        } else {
          printf("\"error\": ");
        }
        json_string(tu->ok[k][f][i] ? t->origin : tu->error[k][f][i]);
        printf("}");
      }
  printf("], \"tuning_file\": ");
  json_string(probed ? tu->t[0][0][0].file : "");
  printf(", \"tuning_file_warning\": ");
  json_string(probed ? tu->t[0][0][0].warning : "");
  printf("}");
}

int main(int argc, char **argv) {
  int json = 0;
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = 1;
    else if (!strcmp(argv[i], "--device") && i + 1 < argc)
      only = argv[++i];
    else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: dua-info [--json] [--device SELECTOR]\n"
             "Lists OpenCL devices, their probed capabilities and the kernel paths dua uses.\n"
             "SELECTOR: an index, gpu|cpu|accelerator, or a substring of \"platform / device\".\n"
             "Environment: DUA_DEVICE (default device), DUA_NO_MMA=1, DUA_CACHE=0, DUA_CACHE_DIR, "
             "DUA_CL_DIR,\n"
             "DUA_TUNING_FILE (tuning database; else $XDG_DATA_HOME/dua/tuning.json), DUA_FWD_TILE,\n"
             "DUA_DECODE_KERNEL, DUA_DECODE_TILE, DUA_DECODE_SPLITS, DUA_MMA_MT.\n");
      return 0;
    } else {
      fprintf(stderr, "dua-info: unknown argument \"%s\" (try --help)\n", argv[i]);
      return 2;
    }
  }
  int count = 0;
  dua_status st = dua_device_count(&count);
  if (st != DUA_SUCCESS || count == 0) {
    fprintf(stderr, "dua-info: %s\n", st != DUA_SUCCESS ? dua_status_string(st) : "no OpenCL device found");
    return 1;
  }
  int selected = -1;
  if (only) {
    dua_context_options o;
    dua_context_options_init(&o);
    o.selector = only;
    dua_context *c = NULL;
    st = dua_context_create(&o, &c);
    if (st != DUA_SUCCESS) {
      fprintf(stderr, "dua-info: no device matches \"%s\": %s\n", only, dua_status_string(st));
      return 1;
    }
    dua_device_info di;
    dua_context_device_info(c, &di);
    selected = di.index;
    dua_context_destroy(c);
  }
  dua_host_topology topo;
  int have_topo = dua_host_topology_get(&topo) == DUA_SUCCESS;
  const char *env_dev = getenv("DUA_DEVICE");
  if (json)
    printf("{\"version\": \"%s\", \"devices\": [", dua_version());
  else
    printf("dua %s: %d OpenCL device%s\n\n", dua_version(), count, count == 1 ? "" : "s");
  int first = 1;
  for (int i = 0; i < count; i++) {
    if (selected >= 0 && i != selected)
      continue;
    dua_device_info info;
    if (dua_device_get_info(i, &info) != DUA_SUCCESS)
      continue;
    dua_context_options o;
    dua_context_options_init(&o);
    o.device_index = i;
    dua_context *ctx = NULL;
    dua_cache_stats cache;
    memset(&cache, 0, sizeof cache);
    int probed = dua_context_create(&o, &ctx) == DUA_SUCCESS;
    int fast_disabled = 0;
    static tunings tu;
    memset(&tu, 0, sizeof tu);
    if (probed) {
      dua_context_device_info(ctx, &info);
      dua_context_cache_stats(ctx, &cache);
      get_tunings(ctx, &tu);
      const char *nm = getenv("DUA_NO_MMA");
      fast_disabled = nm && *nm && strcmp(nm, "0") != 0;
      dua_context_destroy(ctx);
    }
    if (json)
      print_json(&info, probed, &cache, fast_disabled, first, &tu);
    else
      print_text(&info, probed, &cache, fast_disabled, &tu), printf("\n");
    first = 0;
  }
  if (json) {
    printf("\n  ],\n  \"host\": ");
    if (have_topo)
      printf("{\"packages\": %d, \"numa_nodes\": %d, \"cores\": %d, \"hardware_threads\": %d}", topo.packages,
             topo.numa_nodes, topo.cores, topo.hardware_threads);
    else
      printf("null");
    printf(",\n  \"dua_device\": ");
    json_string(env_dev ? env_dev : "");
    printf("\n}\n");
  } else {
    if (have_topo)
      printf("host (hwloc): %d package%s, %d NUMA node%s, %d cores, %d hardware threads\n", topo.packages,
             topo.packages == 1 ? "" : "s", topo.numa_nodes, topo.numa_nodes == 1 ? "" : "s", topo.cores,
             topo.hardware_threads);
    printf("default device: %s\n",
           env_dev ? env_dev : "first GPU, else first CPU (set DUA_DEVICE to choose)");
  }
  return 0;
}
