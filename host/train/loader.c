/* loader.c: background batch loader. One pthread, bound with hwloc to the cores of the device's NUMA node
 * (all cores when the node is unknown), fills a double buffer with the batches of the next steps using
 * dua_task_train_batch, so what it hands out is bit-identical to calling that function directly. */
#include "train/task_internal.h"

#include <hwloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct dua_loader {
  const dua_task *task;
  int32_t batch;
  size_t elems; /* batch * seq_len */
  int32_t *tokens[2], *targets[2];
  int ready[2];          /* slot s % 2 holds the batch of step s */
  uint64_t next_produce; /* guarded by mu */
  uint64_t next_consume; /* only the consumer touches it */
  int stop;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int have_thread;
  hwloc_topology_t topo; /* NULL when hwloc failed: the thread then runs unbound */
  hwloc_bitmap_t cpuset;
};

static void *loader_main(void *arg) {
  dua_loader *l = arg;
  if (l->topo && l->cpuset) /* best effort: a refused binding only costs locality */
    (void)hwloc_set_cpubind(l->topo, l->cpuset, HWLOC_CPUBIND_THREAD);
  pthread_mutex_lock(&l->mu);
  for (;;) {
    while (!l->stop && l->ready[l->next_produce % 2])
      pthread_cond_wait(&l->cv, &l->mu);
    if (l->stop)
      break;
    uint64_t step = l->next_produce;
    int s = (int)(step % 2);
    pthread_mutex_unlock(&l->mu);
    /* the consumer never touches a slot that is not ready */
    dua_task_train_batch(l->task, step, l->batch, l->tokens[s], l->targets[s]);
    pthread_mutex_lock(&l->mu);
    l->ready[s] = 1;
    l->next_produce = step + 1;
    pthread_cond_broadcast(&l->cv);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

/* The cpuset of NUMA node numa_node (by OS index), else of the whole machine. */
static void choose_cpuset(dua_loader *l, int numa_node) {
  if (hwloc_topology_init(&l->topo) != 0) {
    l->topo = NULL;
    return;
  }
  if (hwloc_topology_load(l->topo) != 0) {
    hwloc_topology_destroy(l->topo);
    l->topo = NULL;
    return;
  }
  hwloc_const_cpuset_t set = NULL;
  if (numa_node >= 0) {
    int n = hwloc_get_nbobjs_by_type(l->topo, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < n; i++) {
      hwloc_obj_t node = hwloc_get_obj_by_type(l->topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
      if (node && node->os_index == (unsigned)numa_node && node->cpuset && !hwloc_bitmap_iszero(node->cpuset))
        set = node->cpuset;
    }
  }
  if (set == NULL)
    set = hwloc_topology_get_topology_cpuset(l->topo);
  l->cpuset = set ? hwloc_bitmap_dup(set) : NULL;
}

dua_status dua_loader_create(const dua_task *task, int32_t batch, int numa_node, uint64_t first_step,
                             dua_loader **out) {
  if (out == NULL)
    return DUA_ERROR_INVALID_ARGUMENT;
  *out = NULL;
  if (task == NULL || batch <= 0)
    return DUA_ERROR_INVALID_ARGUMENT;
  int32_t S = dua_task_seq_len(task);
  if ((int64_t)batch * S > (int64_t)1 << 28)
    return DUA_ERROR_INVALID_ARGUMENT;
  dua_loader *l = calloc(1, sizeof *l);
  if (l == NULL)
    return DUA_ERROR_OUT_OF_MEMORY;
  l->task = task;
  l->batch = batch;
  l->elems = (size_t)batch * (size_t)S;
  l->next_produce = l->next_consume = first_step;
  for (int s = 0; s < 2; s++) {
    l->tokens[s] = malloc(l->elems * sizeof(int32_t));
    l->targets[s] = malloc(l->elems * sizeof(int32_t));
  }
  if (!l->tokens[0] || !l->tokens[1] || !l->targets[0] || !l->targets[1] ||
      pthread_mutex_init(&l->mu, NULL)) {
    for (int s = 0; s < 2; s++) {
      free(l->tokens[s]);
      free(l->targets[s]);
    }
    free(l);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  if (pthread_cond_init(&l->cv, NULL) != 0) {
    pthread_mutex_destroy(&l->mu);
    for (int s = 0; s < 2; s++) {
      free(l->tokens[s]);
      free(l->targets[s]);
    }
    free(l);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  choose_cpuset(l, numa_node);
  if (pthread_create(&l->thread, NULL, loader_main, l) != 0) {
    dua_loader_destroy(l);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  l->have_thread = 1;
  *out = l;
  return DUA_SUCCESS;
}

dua_status dua_loader_next(dua_loader *l, uint64_t step, int32_t *tokens, int32_t *targets) {
  if (l == NULL || tokens == NULL || targets == NULL || step != l->next_consume)
    return DUA_ERROR_INVALID_ARGUMENT;
  int s = (int)(step % 2);
  pthread_mutex_lock(&l->mu);
  while (!l->ready[s])
    pthread_cond_wait(&l->cv, &l->mu);
  pthread_mutex_unlock(&l->mu);
  /* the producer does not write a ready slot */
  memcpy(tokens, l->tokens[s], l->elems * sizeof(int32_t));
  memcpy(targets, l->targets[s], l->elems * sizeof(int32_t));
  pthread_mutex_lock(&l->mu);
  l->ready[s] = 0;
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
  l->next_consume = step + 1;
  return DUA_SUCCESS;
}

void dua_loader_destroy(dua_loader *l) {
  if (l == NULL)
    return;
  if (l->have_thread) {
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
  }
  pthread_cond_destroy(&l->cv);
  pthread_mutex_destroy(&l->mu);
  if (l->cpuset)
    hwloc_bitmap_free(l->cpuset);
  if (l->topo)
    hwloc_topology_destroy(l->topo);
  for (int s = 0; s < 2; s++) {
    free(l->tokens[s]);
    free(l->targets[s]);
  }
  free(l);
}
