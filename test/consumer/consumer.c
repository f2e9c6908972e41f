/* consumer.c: a program built only from the installed dua.pc, headers and libdua.so (packaging test). */
#include <dua.h>
#include <dua_cl.h>

#include <stdio.h>
#include <string.h>

int main(void) {
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", DUA_VERSION_MAJOR, DUA_VERSION_MINOR, DUA_VERSION_PATCH);
  if (strcmp(dua_version(), want) != 0) {
    fprintf(stderr, "header says %s, library says %s\n", want, dua_version());
    return 1;
  }
  dua_layout_desc d;
  memset(&d, 0, sizeof d);
  dua_layout *layout = NULL;
  char err[256];
  if (dua_layout_create(&d, &layout, err, sizeof err) != DUA_ERROR_INVALID_ARGUMENT || layout) {
    fprintf(stderr, "an all-zero layout was accepted\n");
    return 1;
  }
  printf("consumer linked libdua %s: %s (%s)\n", dua_version(), dua_status_string(DUA_ERROR_INVALID_ARGUMENT),
         err);
  return 0;
}
