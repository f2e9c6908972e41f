/* device.c: enumerate OpenCL platforms and devices, query their static capabilities, resolve selectors. */
#include "runtime/context_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Queries not named by the 1.2 headers (values from the Khronos/NVIDIA extension specifications). */
#define DUA_CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#define DUA_CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV 0x4001
#define DUA_CL_DEVICE_PCI_BUS_ID_NV 0x4008
#define DUA_CL_DEVICE_PCI_SLOT_ID_NV 0x4009
#define DUA_CL_DEVICE_PCI_DOMAIN_ID_NV 0x400A
#define DUA_CL_DEVICE_PCI_BUS_INFO_KHR 0x410F
#define DUA_CL_DEVICE_MAX_NUM_SUB_GROUPS 0x105C

#define DUA_MAX_PLATFORMS 16
#define DUA_MAX_DEVICES 64

static dua_status list_platforms(cl_platform_id *platforms, cl_uint *count) {
  cl_uint n = 0;
  cl_int err = clGetPlatformIDs(DUA_MAX_PLATFORMS, platforms, &n);
  if (err == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || (err == CL_SUCCESS && n == 0))
    return DUA_ERROR_NO_PLATFORM;
  if (err != CL_SUCCESS)
    return (dua_status)err;
  *count = n < DUA_MAX_PLATFORMS ? n : DUA_MAX_PLATFORMS;
  return DUA_SUCCESS;
}

static cl_uint list_devices(cl_platform_id platform, cl_device_id *devices, cl_uint cap) {
  cl_uint n = 0;
  if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, cap, devices, &n) != CL_SUCCESS)
    return 0;
  return n < cap ? n : cap;
}

dua_status dua_device_count(int *count) {
  if (!count)
    return DUA_ERROR_INVALID_ARGUMENT;
  cl_platform_id platforms[DUA_MAX_PLATFORMS];
  cl_uint np = 0;
  dua_status st = list_platforms(platforms, &np);
  if (st != DUA_SUCCESS)
    return st;
  int total = 0;
  for (cl_uint p = 0; p < np; p++) {
    cl_device_id devices[DUA_MAX_DEVICES];
    total += (int)list_devices(platforms[p], devices, DUA_MAX_DEVICES);
  }
  *count = total;
  return DUA_SUCCESS;
}

dua_status dua_device_lookup(int index, cl_platform_id *platform, cl_device_id *device) {
  cl_platform_id platforms[DUA_MAX_PLATFORMS];
  cl_uint np = 0;
  dua_status st = list_platforms(platforms, &np);
  if (st != DUA_SUCCESS)
    return st;
  int seen = 0;
  for (cl_uint p = 0; p < np; p++) {
    cl_device_id devices[DUA_MAX_DEVICES];
    cl_uint nd = list_devices(platforms[p], devices, DUA_MAX_DEVICES);
    if (index >= seen && index < seen + (int)nd) {
      *platform = platforms[p];
      *device = devices[index - seen];
      return DUA_SUCCESS;
    }
    seen += (int)nd;
  }
  return DUA_ERROR_NO_DEVICE;
}

static void get_string(cl_device_id d, cl_device_info what, char *out, size_t size) {
  out[0] = '\0';
  size_t need = 0;
  if (clGetDeviceInfo(d, what, 0, NULL, &need) != CL_SUCCESS || need == 0)
    return;
  char *tmp = malloc(need + 1);
  if (!tmp)
    return;
  if (clGetDeviceInfo(d, what, need, tmp, NULL) == CL_SUCCESS) {
    tmp[need] = '\0';
    snprintf(out, size, "%s", tmp);
  }
  free(tmp);
}

static int has_extension(cl_device_id d, const char *name) {
  size_t need = 0;
  if (clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, 0, NULL, &need) != CL_SUCCESS || need == 0)
    return 0;
  char *ext = malloc(need + 1);
  if (!ext)
    return 0;
  int found = 0;
  if (clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, need, ext, NULL) == CL_SUCCESS) {
    ext[need] = '\0';
    size_t len = strlen(name);
    for (char *p = strstr(ext, name); p && !found; p = strstr(p + 1, name))
      found = (p == ext || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\0');
  }
  free(ext);
  return found;
}

static cl_uint get_uint(cl_device_id d, cl_device_info what) {
  cl_uint v = 0;
  if (clGetDeviceInfo(d, what, sizeof v, &v, NULL) != CL_SUCCESS)
    return 0;
  return v;
}

static cl_ulong get_ulong(cl_device_id d, cl_device_info what) {
  cl_ulong v = 0;
  if (clGetDeviceInfo(d, what, sizeof v, &v, NULL) != CL_SUCCESS)
    return 0;
  return v;
}

dua_status dua_device_query(cl_platform_id platform, cl_device_id d, dua_device_info *info) {
  memset(info, 0, sizeof *info);
  info->numa_node = -1;
  char tmp[256];
  size_t need = 0;
  if (clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof tmp, tmp, &need) == CL_SUCCESS)
    snprintf(info->platform_name, sizeof info->platform_name, "%.127s", tmp);
  if (clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof tmp, tmp, &need) == CL_SUCCESS)
    snprintf(info->platform_version, sizeof info->platform_version, "%.127s", tmp);
  get_string(d, CL_DEVICE_NAME, info->name, sizeof info->name);
  get_string(d, CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
  get_string(d, CL_DEVICE_VERSION, info->device_version, sizeof info->device_version);
  get_string(d, CL_DRIVER_VERSION, info->driver_version, sizeof info->driver_version);
  get_string(d, CL_DEVICE_OPENCL_C_VERSION, info->opencl_c_version, sizeof info->opencl_c_version);
  cl_device_type type = 0;
  clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof type, &type, NULL);
  info->type = (type & CL_DEVICE_TYPE_GPU)           ? DUA_DEVICE_GPU
               : (type & CL_DEVICE_TYPE_CPU)         ? DUA_DEVICE_CPU
               : (type & CL_DEVICE_TYPE_ACCELERATOR) ? DUA_DEVICE_ACCELERATOR
                                                     : DUA_DEVICE_ANY;
  info->compute_units = get_uint(d, CL_DEVICE_MAX_COMPUTE_UNITS);
  info->max_clock_mhz = get_uint(d, CL_DEVICE_MAX_CLOCK_FREQUENCY);
  info->global_mem_bytes = get_ulong(d, CL_DEVICE_GLOBAL_MEM_SIZE);
  info->local_mem_bytes = get_ulong(d, CL_DEVICE_LOCAL_MEM_SIZE);
  info->max_alloc_bytes = get_ulong(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE);
  size_t wg = 0;
  clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
  info->max_work_group_size = wg;
  info->native_vector_width_float = get_uint(d, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT);
  info->native_vector_width_half = get_uint(d, CL_DEVICE_NATIVE_VECTOR_WIDTH_HALF);
  info->has_fp16 = has_extension(d, "cl_khr_fp16");
  info->has_fp64 = has_extension(d, "cl_khr_fp64");
  cl_uint max_sub_groups = 0;
  if (clGetDeviceInfo(d, DUA_CL_DEVICE_MAX_NUM_SUB_GROUPS, sizeof max_sub_groups, &max_sub_groups, NULL) !=
      CL_SUCCESS)
    max_sub_groups = 0;
  info->has_subgroups = has_extension(d, "cl_khr_subgroups") || max_sub_groups > 0;
  info->has_subgroup_shuffle = has_extension(d, "cl_khr_subgroup_shuffle");
  info->has_intel_subgroup_mma = has_extension(d, "cl_intel_subgroup_matrix_multiply_accumulate");
  if (has_extension(d, "cl_nv_device_attribute_query")) {
    cl_uint major = get_uint(d, DUA_CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV);
    cl_uint minor = get_uint(d, DUA_CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV);
    info->nv_compute_capability = (int)(major * 10 + minor);
  }
  if (has_extension(d, "cl_khr_pci_bus_info")) {
    cl_uint pci[4] = {0, 0, 0, 0}; /* domain, bus, device, function */
    if (clGetDeviceInfo(d, DUA_CL_DEVICE_PCI_BUS_INFO_KHR, sizeof pci, pci, NULL) == CL_SUCCESS) {
      info->has_pci_bus_info = 1;
      info->pci_domain = (int)pci[0];
      info->pci_bus = (int)pci[1];
      info->pci_device = (int)pci[2];
      info->pci_function = (int)pci[3];
    }
  } else if (has_extension(d, "cl_nv_device_attribute_query")) {
    cl_uint bus = 0, slot = 0, domain = 0;
    if (clGetDeviceInfo(d, DUA_CL_DEVICE_PCI_BUS_ID_NV, sizeof bus, &bus, NULL) == CL_SUCCESS &&
        clGetDeviceInfo(d, DUA_CL_DEVICE_PCI_SLOT_ID_NV, sizeof slot, &slot, NULL) == CL_SUCCESS) {
      if (clGetDeviceInfo(d, DUA_CL_DEVICE_PCI_DOMAIN_ID_NV, sizeof domain, &domain, NULL) != CL_SUCCESS)
        domain = 0;
      info->has_pci_bus_info = 1;
      info->pci_domain = (int)domain;
      info->pci_bus = (int)bus;
      info->pci_device = (int)(slot >> 3);
      info->pci_function = (int)(slot & 7);
    }
  }
  if (info->has_pci_bus_info)
    info->numa_node =
        dua_topology_pci_numa_node(info->pci_domain, info->pci_bus, info->pci_device, info->pci_function);
  return DUA_SUCCESS;
}

dua_status dua_device_get_info(int index, dua_device_info *info) {
  if (!info || index < 0)
    return DUA_ERROR_INVALID_ARGUMENT;
  cl_platform_id platforms[DUA_MAX_PLATFORMS];
  cl_uint np = 0;
  dua_status st = list_platforms(platforms, &np);
  if (st != DUA_SUCCESS)
    return st;
  int seen = 0;
  for (cl_uint p = 0; p < np; p++) {
    cl_device_id devices[DUA_MAX_DEVICES];
    cl_uint nd = list_devices(platforms[p], devices, DUA_MAX_DEVICES);
    if (index < seen + (int)nd) {
      st = dua_device_query(platforms[p], devices[index - seen], info);
      info->index = index;
      info->platform_index = (int)p;
      return st;
    }
    seen += (int)nd;
  }
  return DUA_ERROR_NO_DEVICE;
}

static int contains_nocase(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
      i++;
    if (i == n)
      return 1;
  }
  return n == 0;
}

dua_status dua_device_select(const char *selector, int *index, char *why, size_t why_size) {
  int count = 0;
  dua_status st = dua_device_count(&count);
  if (st != DUA_SUCCESS) {
    snprintf(why, why_size, "%s", dua_status_string(st));
    return st;
  }
  if (count == 0) {
    snprintf(why, why_size, "OpenCL platforms exist but report no device");
    return DUA_ERROR_NO_DEVICE;
  }
  if (selector && *selector) {
    char *end = NULL;
    long v = strtol(selector, &end, 10);
    if (end && *end == '\0') {
      if (v < 0 || v >= count) {
        snprintf(why, why_size, "device index %ld is out of range (%d devices: 0..%d)", v, count, count - 1);
        return DUA_ERROR_NO_DEVICE;
      }
      *index = (int)v;
      return DUA_SUCCESS;
    }
    dua_device_type want = DUA_DEVICE_ANY;
    if (!strcmp(selector, "gpu") || !strcmp(selector, "GPU"))
      want = DUA_DEVICE_GPU;
    else if (!strcmp(selector, "cpu") || !strcmp(selector, "CPU"))
      want = DUA_DEVICE_CPU;
    else if (!strcmp(selector, "accelerator"))
      want = DUA_DEVICE_ACCELERATOR;
    for (int i = 0; i < count; i++) {
      dua_device_info info;
      if (dua_device_get_info(i, &info) != DUA_SUCCESS)
        continue;
      char full[300];
      snprintf(full, sizeof full, "%s / %s", info.platform_name, info.name);
      if ((want != DUA_DEVICE_ANY && info.type == want) ||
          (want == DUA_DEVICE_ANY && contains_nocase(full, selector))) {
        *index = i;
        return DUA_SUCCESS;
      }
    }
    snprintf(why, why_size, "no device matches selector \"%s\" (%d devices; run dua-info to list them)",
             selector, count);
    return DUA_ERROR_NO_DEVICE;
  }
  /* default: first GPU, else first CPU, else device 0 */
  int first_cpu = -1;
  for (int i = 0; i < count; i++) {
    dua_device_info info;
    if (dua_device_get_info(i, &info) != DUA_SUCCESS)
      continue;
    if (info.type == DUA_DEVICE_GPU) {
      *index = i;
      return DUA_SUCCESS;
    }
    if (info.type == DUA_DEVICE_CPU && first_cpu < 0)
      first_cpu = i;
  }
  *index = first_cpu >= 0 ? first_cpu : 0;
  return DUA_SUCCESS;
}

int dua_device_is_nvidia(const dua_device_info *info) {
  return strstr(info->vendor, "NVIDIA") != NULL || strstr(info->platform_name, "NVIDIA") != NULL;
}
