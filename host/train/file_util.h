/* file_util.h: small helpers shared by the trainer's file readers and writers (checkpoints, routing files,
 * task setup): a formatted error into a caller's buffer, and a durable rename's directory sync. */
#ifndef DUA_TRAIN_FILE_UTIL_H
#define DUA_TRAIN_FILE_UTIL_H

#include "dua.h"

/* Formats into error (when error != NULL and error_size > 0) and returns status. */
dua_status dua_train_fail(char *error, size_t error_size, dua_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* fsync the directory holding path, so that a rename into it is durable (best effort). */
void dua_sync_parent_dir(const char *path);

#endif
