/* task.h: seeded task generators (Dyck-k, ListOps) with a held-out test set that training never sees.
 * An example is S tokens and S targets; targets are DUA_IGNORE except where the answer is due, so
 * classification tasks and next-token LM share one loss. Examples are right-padded with PAD (causal
 * attention means padding after the answer position changes nothing). */
#ifndef DUA_TASK_H
#define DUA_TASK_H

#include "dua_train.h"

#define DUA_IGNORE (-1)

typedef struct dua_task dua_task;

/* Builds the generator and the de-duplicated test set (config->test_size distinct examples, from a
 * seed derived from config->seed). Errors (bad config, a test set that cannot be filled with distinct
 * examples) go to error. */
dua_status dua_task_create(const dua_trainer_config *config, dua_task **out, char *error, size_t error_size);
void dua_task_destroy(dua_task *task);

int32_t dua_task_vocab_size(const dua_task *task);
/* Printable name of token id ("(", "]", "MAX", "7", "PAD", "="...); "?" for an unknown id. */
const char *dua_task_token_name(const dua_task *task, int32_t id);

/* Training batch for optimizer step `step`: a pure function of (config->seed, step), so resuming from a
 * checkpoint reproduces the data stream exactly. tokens, targets: [batch][seq_len]. No example equals
 * one of the test set. */
void dua_task_train_batch(const dua_task *task, uint64_t step, int32_t batch, int32_t *tokens,
                          int32_t *targets);

/* Test examples [first, first + count) (count <= test_size - first). */
int32_t dua_task_test_size(const dua_task *task);
void dua_task_test_examples(const dua_task *task, int32_t first, int32_t count, int32_t *tokens,
                            int32_t *targets);

/* Background batch loader: one host thread, bound with hwloc to the cores of the NUMA node the device
 * hangs off (all cores when unknown), producing the batch of the next step while the device trains. */
typedef struct dua_loader dua_loader;
dua_status dua_loader_create(const dua_task *task, int32_t batch, int numa_node, uint64_t first_step,
                             dua_loader **out);
/* Blocks until the batch for `step` is ready and copies it out; steps must be requested in order. */
dua_status dua_loader_next(dua_loader *loader, uint64_t step, int32_t *tokens, int32_t *targets);
void dua_loader_destroy(dua_loader *loader);

#endif
