/* fuzz_tuning_db.c: libFuzzer harness for the tuning database reader (host/tuning/tuning_db.c). Any input
 * must be parsed or refused without a crash, leak or sanitizer report; an accepted input must print back to
 * JSON that parses to the same entries, and every accepted entry must pass the writer's own checks.
 * Built with -Dfuzz=true under clang only; test/corpus/tuning/ is the seed corpus (test/fuzz/run_fuzz.sh). */
#include "tuning/tuning_db.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dua_tuning_db a = {0}, b = {0}, c = {0};
  char why[512];
  if (dua_tuning_db_parse((const char *)data, size, &a, why, sizeof why) == 0) {
    char *text = dua_tuning_db_print(&a);
    if (!text)
      abort();
    if (dua_tuning_db_parse(text, strlen(text), &b, why, sizeof why) != 0 || a.count != b.count)
      abort();
    for (int i = 0; i < a.count; i++) {
      if (memcmp(&a.entries[i], &b.entries[i], sizeof a.entries[i]))
        abort();
      if (dua_tuning_db_put(&c, &a.entries[i], why, sizeof why))
        abort();
    }
    if (c.count != a.count)
      abort();
    free(text);
  } else if (a.count != 0 || a.entries != NULL || why[0] == '\0') {
    abort();
  }
  dua_tuning_db_free(&a);
  dua_tuning_db_free(&b);
  dua_tuning_db_free(&c);
  return 0;
}
