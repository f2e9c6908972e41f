/* task.h: the trainer's tasks (dua_task_kind): seeded generators (Dyck-k, ListOps, Dyck-LM) and windows of
 * a text corpus, each with a held-out test set that training never sees. An example is S tokens and S
 * targets; targets are DUA_IGNORE except where an answer is due, so classification tasks and next-token LM
 * share one loss. Classification examples are right-padded with PAD (causal attention means padding after
 * the answer position changes nothing). */
#ifndef DUA_TASK_H
#define DUA_TASK_H

#include "dua_train.h"

#define DUA_IGNORE (-1)

typedef struct dua_task dua_task;

/* The corpus of DUA_TASK_TEXT: which file to read and, for a checkpoint's corpus, what it must be. */
typedef struct dua_task_corpus {
  const char *path; /* the file to read; NULL: the recorded one */
  int verify;       /* 1: refuse a file whose size, SHA-256 or split differ from the fields below */
  uint64_t bytes, train_bytes;
  unsigned char sha256[32];
  char recorded[4096]; /* the path a checkpoint records ("" if none) */
} dua_task_corpus;

/* Builds the generator and the de-duplicated test set (config->test_size examples, from a seed derived
 * from config->seed, or the held-out windows of the corpus). corpus: required for DUA_TASK_TEXT (read and
 * validated here), NULL or with a NULL path for the other tasks. Errors (bad config, a test set that cannot
 * be filled with distinct examples, a bad or mismatched corpus) go to error. */
dua_status dua_task_create(const dua_trainer_config *config, const dua_task_corpus *corpus, dua_task **out,
                           char *error, size_t error_size);
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

/* Text corpus of a text task (info->path points into the task); DUA_ERROR_INVALID_ARGUMENT otherwise. */
dua_status dua_task_text_corpus(const dua_task *task, dua_text_corpus_info *info);

/* The checkpoint section that records a text task's corpus (name, and payload malloc'ed into *data; NULL
 * and 0 bytes for other tasks). */
#define DUA_TASK_CORPUS_SECTION "text_corpus"
dua_status dua_task_corpus_record(const dua_task *task, void **data, uint64_t *bytes);
/* The corpus a checkpoint of config needs, from its "text_corpus" section (payload, bytes; data NULL when
 * the checkpoint has none): for DUA_TASK_TEXT the record with verify = 1 and path = path_override (NULL:
 * the recorded path); for other tasks an empty one. A missing, extra or malformed record gives
 * DUA_ERROR_CORRUPT_FILE, a path_override for another task DUA_ERROR_INVALID_ARGUMENT. */
dua_status dua_task_corpus_from_record(const dua_trainer_config *config, const void *data, uint64_t bytes,
                                       const char *path_override, dua_task_corpus *corpus, char *error,
                                       size_t error_size);

/* Background batch loader: one host thread, bound with hwloc to the cores of the NUMA node the device
 * hangs off (all cores when unknown), producing the batch of the next step while the device trains. */
typedef struct dua_loader dua_loader;
dua_status dua_loader_create(const dua_task *task, int32_t batch, int numa_node, uint64_t first_step,
                             dua_loader **out);
/* Blocks until the batch for `step` is ready and copies it out; steps must be requested in order. */
dua_status dua_loader_next(dua_loader *loader, uint64_t step, int32_t *tokens, int32_t *targets);
void dua_loader_destroy(dua_loader *loader);

#endif
