/* checkpoint.h: versioned binary checkpoints: magic, format version, the trainer config, named sections
 * (parameters, optimizer moments, RNG and schedule state...), and a SHA-256 of everything before it.
 * Written to a temporary file then renamed; a truncated, corrupt or foreign file is refused with a
 * message, never trusted. All integers little-endian. */
#ifndef DUA_CHECKPOINT_H
#define DUA_CHECKPOINT_H

#include "dua_train.h"

#define DUA_CKPT_NAME_MAX 24

typedef struct dua_ckpt_section {
  char name[DUA_CKPT_NAME_MAX]; /* NUL-terminated */
  uint64_t bytes;
  void *data;
} dua_ckpt_section;

dua_status dua_checkpoint_save(const char *path, const dua_trainer_config *config,
                               const dua_ckpt_section *sections, int count, char *error, size_t error_size);
/* On success *sections is malloc'ed (free with dua_checkpoint_free) and config is validated. */
dua_status dua_checkpoint_load(const char *path, dua_trainer_config *config, dua_ckpt_section **sections,
                               int *count, char *error, size_t error_size);
void dua_checkpoint_free(dua_ckpt_section *sections, int count);
/* The section called name, or NULL. */
const dua_ckpt_section *dua_checkpoint_find(const dua_ckpt_section *sections, int count, const char *name);

#endif
