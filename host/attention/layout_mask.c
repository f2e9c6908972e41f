/* layout_mask.c: pictures of a layout's block mask for one (batch, head): text ('#' full, '+' partial,
 * '.' skipped, one line per query block) and SVG (square cells, title with the layout parameters).
 * An SVG I/O failure returns DUA_ERROR_IO and leaves a message naming the path in the layout's internal
 * error text (struct dua_layout.error), the only channel the public signature has. */
#include "attention/layout_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Row m of the block mask as characters cells[0..nb). Uses scratch blocks/full of nb entries. */
static void mask_row(const struct dua_layout *l, int32_t b, int32_t h, int32_t m, char *cells,
                     int32_t *blocks, uint8_t *full) {
  memset(cells, '.', (size_t)l->num_blocks);
  int32_t c = dua_layout_row_blocks(l, b, h, m, blocks, full);
  for (int32_t k = 0; k < c; k++)
    cells[blocks[k]] = full[k] ? '#' : '+';
}

size_t dua_layout_mask_text(const dua_layout *layout, int32_t b, int32_t h, char *out, size_t size) {
  const struct dua_layout *l = layout;
  if (l == NULL || b < 0 || b >= l->batch || h < 0 || h >= l->heads) {
    if (out != NULL && size > 0)
      out[0] = '\0';
    return 0;
  }
  int32_t nb = l->num_blocks;
  size_t needed = (size_t)nb * ((size_t)nb + 1) + 1;
  if (out == NULL || size == 0)
    return needed;
  char *cells = malloc((size_t)nb + 1);
  int32_t *blocks = malloc((size_t)nb * sizeof(int32_t));
  uint8_t *full = malloc((size_t)nb);
  if (!cells || !blocks || !full) {
    free(cells);
    free(blocks);
    free(full);
    out[0] = '\0';
    return needed;
  }
  size_t pos = 0;
  for (int32_t m = 0; m < nb && pos + 1 < size; m++) {
    mask_row(l, b, h, m, cells, blocks, full);
    cells[nb] = '\n';
    size_t room = size - 1 - pos, n = (size_t)nb + 1 < room ? (size_t)nb + 1 : room;
    memcpy(out + pos, cells, n);
    pos += n;
  }
  out[pos] = '\0';
  free(cells);
  free(blocks);
  free(full);
  return needed;
}

dua_status dua_layout_mask_svg(const dua_layout *layout, int32_t b, int32_t h, const char *path) {
  const struct dua_layout *l = layout;
  if (l == NULL || path == NULL || b < 0 || b >= l->batch || h < 0 || h >= l->heads)
    return DUA_ERROR_INVALID_ARGUMENT;
  int32_t nb = l->num_blocks;
  char *cells = malloc((size_t)nb + 1);
  int32_t *blocks = malloc((size_t)nb * sizeof(int32_t));
  uint8_t *full = malloc((size_t)nb);
  if (!cells || !blocks || !full) {
    free(cells);
    free(blocks);
    free(full);
    return DUA_ERROR_OUT_OF_MEMORY;
  }
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    free(cells);
    free(blocks);
    free(full);
    return dua_layout_fail((char *)l->error, sizeof l->error, DUA_ERROR_IO,
                           "dua_layout_mask_svg: cannot open '%s' for writing", path);
  }
  /* cell size shrinks with nb so the picture stays near 512 px (1 px per block beyond 512 blocks) */
  int cell = nb >= 512 ? 1 : 512 / nb > 32 ? 32 : 512 / nb;
  int margin = 8, title_h = 40;
  long side = (long)cell * nb;
  static const char *kind_names[] = {"positional", "content", "list"};
  fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  fprintf(f,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%ld\" height=\"%ld\" viewBox=\"0 0 %ld %ld\" "
          "shape-rendering=\"crispEdges\">\n",
          side + 2 * margin, side + 2 * margin + title_h, side + 2 * margin, side + 2 * margin + title_h);
  fprintf(f, "<title>dua layout b=%d h=%d</title>\n", (int)b, (int)h);
  fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
  fprintf(f,
          "<text x=\"%d\" y=\"16\" font-family=\"monospace\" font-size=\"12\">%s N=%d BLK=%d nb=%d b=%d h=%d "
          "p=%d D=%d depth=%d</text>\n",
          margin, kind_names[l->kind], (int)l->seq_len, (int)l->block, (int)nb, (int)b, (int)h,
          (int)l->arity[h], (int)l->tree_depth[h], (int)l->depth[h]);
  fprintf(f,
          "<text x=\"%d\" y=\"32\" font-family=\"monospace\" font-size=\"12\">shift=%d window=%d sink=%d "
          "causal=%d | full #1f77b4, partial #ffbf00, skipped #eeeeee</text>\n",
          margin, (int)l->shift, (int)l->window, (int)l->sink, (int)l->causal);
  fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%ld\" height=\"%ld\" fill=\"#eeeeee\"/>\n", margin,
          margin + title_h, side, side);
  for (int32_t m = 0; m < nb; m++) {
    mask_row(l, b, h, m, cells, blocks, full);
    for (int32_t n = 0; n < nb;) { /* runs of equal cells become one rect */
      int32_t e = n + 1;
      while (e < nb && cells[e] == cells[n])
        e++;
      if (cells[n] != '.')
        fprintf(f, "<rect x=\"%ld\" y=\"%ld\" width=\"%ld\" height=\"%d\" fill=\"%s\"/>\n",
                (long)margin + (long)n * cell, (long)margin + title_h + (long)m * cell, (long)(e - n) * cell,
                cell, cells[n] == '#' ? "#1f77b4" : "#ffbf00");
      n = e;
    }
  }
  fprintf(f, "</svg>\n");
  free(cells);
  free(blocks);
  free(full);
  int bad = ferror(f);
  if (fclose(f) != 0 || bad)
    return dua_layout_fail((char *)l->error, sizeof l->error, DUA_ERROR_IO,
                           "dua_layout_mask_svg: writing '%s' failed", path);
  return DUA_SUCCESS;
}
