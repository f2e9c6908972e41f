/* topology.c: host topology (packages, NUMA nodes, cores, threads) and device NUMA placement via hwloc. */
#include "runtime/context_internal.h"

#include <hwloc.h>

static int count_type(hwloc_topology_t topo, hwloc_obj_type_t type) {
  int n = hwloc_get_nbobjs_by_type(topo, type);
  return n < 0 ? 0 : n;
}

dua_status dua_host_topology_get(dua_host_topology *out) {
  if (!out)
    return DUA_ERROR_INVALID_ARGUMENT;
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0)
    return DUA_ERROR_UNSUPPORTED;
  if (hwloc_topology_load(topo) != 0) {
    hwloc_topology_destroy(topo);
    return DUA_ERROR_UNSUPPORTED;
  }
  out->packages = count_type(topo, HWLOC_OBJ_PACKAGE);
  out->numa_nodes = count_type(topo, HWLOC_OBJ_NUMANODE);
  out->cores = count_type(topo, HWLOC_OBJ_CORE);
  out->hardware_threads = count_type(topo, HWLOC_OBJ_PU);
  hwloc_topology_destroy(topo);
  return DUA_SUCCESS;
}

int dua_topology_pci_numa_node(int domain, int bus, int device, int function) {
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0)
    return -1;
  hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_ALL);
  int node = -1;
  if (hwloc_topology_load(topo) == 0) {
    hwloc_obj_t pci = hwloc_get_pcidev_by_busid(topo, (unsigned)domain, (unsigned)bus, (unsigned)device,
                                                (unsigned)function);
    hwloc_obj_t parent = pci ? hwloc_get_non_io_ancestor_obj(topo, pci) : NULL;
    if (parent && parent->nodeset)
      node = hwloc_bitmap_first(parent->nodeset); /* os index of the first NUMA node below it */
  }
  hwloc_topology_destroy(topo);
  return node;
}
