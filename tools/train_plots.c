/* train_plots.c: SVG plots for dua-train (no plotting library: a polyline chart and a coloured grid are a
 * few dozen lines of SVG, and SVG opens in any browser). */
#include "train_plots.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct series {
  double *x, *y;
  int n, cap;
} series;

static void push(series *s, double x, double y) {
  if (s->n == s->cap) {
    int cap = s->cap ? 2 * s->cap : 256;
    double *nx = realloc(s->x, (size_t)cap * sizeof *nx),
           *ny = nx ? realloc(s->y, (size_t)cap * sizeof *ny) : NULL;
    if (!nx || !ny) {
      s->x = nx ? nx : s->x;
      return;
    }
    s->x = nx, s->y = ny, s->cap = cap;
  }
  s->x[s->n] = x, s->y[s->n] = y, s->n++;
}

/* Column col (0-based) against column 0 of a CSV with a header line. */
static void read_csv(const char *path, int col, series *s) {
  FILE *f = fopen(path, "r");
  if (!f)
    return;
  char line[1024];
  if (!fgets(line, sizeof line, f)) {
    fclose(f);
    return;
  }
  while (fgets(line, sizeof line, f)) {
    double v[16];
    int n = 0;
    for (char *p = line; n < 16 && *p;) {
      char *end;
      v[n++] = strtod(p, &end);
      p = strchr(end, ',');
      if (!p)
        break;
      p++;
    }
    if (n > col)
      push(s, v[0], v[col]);
  }
  fclose(f);
}

/* One panel: a polyline of s in the box (x0, y0, w, h) with its y range and a title. */
static void panel(FILE *f, const series *s, double x0, double y0, double w, double h, double ylo, double yhi,
                  const char *title, const char *colour, double xmax) {
  fprintf(f, "<rect x='%g' y='%g' width='%g' height='%g' fill='none' stroke='#888'/>\n", x0, y0, w, h);
  fprintf(f, "<text x='%g' y='%g' font-size='13'>%s</text>\n", x0, y0 - 6, title);
  fprintf(f, "<text x='%g' y='%g' font-size='10' text-anchor='end'>%.3g</text>\n", x0 - 4, y0 + 10, yhi);
  fprintf(f, "<text x='%g' y='%g' font-size='10' text-anchor='end'>%.3g</text>\n", x0 - 4, y0 + h, ylo);
  fprintf(f, "<text x='%g' y='%g' font-size='10' text-anchor='end'>step %.0f</text>\n", x0 + w, y0 + h + 14,
          xmax);
  if (s->n == 0)
    return;
  fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='1.2' points='", colour);
  for (int i = 0; i < s->n; i++) {
    double fy = (s->y[i] - ylo) / (yhi - ylo > 0 ? yhi - ylo : 1);
    fprintf(f, "%.1f,%.1f ", x0 + w * s->x[i] / (xmax > 0 ? xmax : 1), y0 + h * (1 - fy));
  }
  fprintf(f, "'/>\n");
}

static void range(const series *s, double *lo, double *hi) {
  *lo = 1e300, *hi = -1e300;
  for (int i = 0; i < s->n; i++) {
    *lo = s->y[i] < *lo ? s->y[i] : *lo;
    *hi = s->y[i] > *hi ? s->y[i] : *hi;
  }
  if (s->n == 0)
    *lo = 0, *hi = 1;
}

static int loss_plot(const char *dir) {
  char path[4096];
  series loss = {0}, acc = {0}, tacc = {0}, dens = {0};
  snprintf(path, sizeof path, "%s/train.csv", dir);
  read_csv(path, 2, &loss);
  read_csv(path, 3, &acc);
  read_csv(path, 7, &dens);
  snprintf(path, sizeof path, "%s/eval.csv", dir);
  read_csv(path, 2, &tacc);
  double xmax = loss.n ? loss.x[loss.n - 1] : 1, lo, hi;
  snprintf(path, sizeof path, "%s/loss.svg", dir);
  FILE *f = fopen(path, "w");
  if (!f)
    return -1;
  fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='760' height='560' font-family='sans-serif'>\n");
  fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n");
  range(&loss, &lo, &hi);
  panel(f, &loss, 60, 30, 660, 140, lo < 0 ? lo : 0, hi, "training loss", "#1f77b4", xmax);
  panel(f, &acc, 60, 210, 660, 140, 0, 1, "accuracy: training batch (orange), test with hard routing (green)",
        "#ff7f0e", xmax);
  panel(f, &tacc, 60, 210, 660, 140, 0, 1, "", "#2ca02c", xmax);
  panel(f, &dens, 60, 390, 660, 140, 0, 1, "key blocks visited / dense causal", "#9467bd", xmax);
  fprintf(f, "</svg>\n");
  free(loss.x), free(loss.y), free(acc.x), free(acc.y), free(tacc.x), free(tacc.y), free(dens.x),
      free(dens.y);
  return fclose(f) == 0 ? 0 : -1;
}

static int depth_plot(const char *dir, dua_trainer *t) {
  dua_routing r;
  if (dua_trainer_routing(t, &r) != DUA_SUCCESS)
    return -1;
  const int D = dua_trainer_tree_depth(t), cell = 56;
  float *probs = calloc((size_t)r.layers * r.heads * (D > 0 ? D : 1), sizeof *probs);
  if (!probs || dua_trainer_gate_probs(t, probs) != DUA_SUCCESS) {
    free(probs);
    dua_routing_free(&r);
    return -1;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/depths.svg", dir);
  FILE *f = fopen(path, "w");
  if (!f) {
    free(probs);
    dua_routing_free(&r);
    return -1;
  }
  const int W = 90 + cell * r.heads, Hh = 60 + cell * r.layers;
  fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' font-family='sans-serif'>\n", W,
          Hh);
  fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n");
  fprintf(
      f,
      "<text x='10' y='18' font-size='13'>learned depth per layer (rows) and head (columns), D = %d</text>\n",
      D);
  for (int h = 0; h < r.heads; h++)
    fprintf(f, "<text x='%d' y='44' font-size='11' text-anchor='middle'>head %d</text>\n",
            80 + cell * h + cell / 2, h);
  for (int l = 0; l < r.layers; l++) {
    fprintf(f, "<text x='10' y='%d' font-size='11'>layer %d</text>\n", 50 + cell * l + cell / 2 + 4, l);
    for (int h = 0; h < r.heads; h++) {
      int d = r.head[(size_t)l * r.heads + h].depth;
      double v = D > 0 ? (double)d / D : 0; /* 0 dense (light) .. 1 block-diagonal (dark) */
      int shade = (int)(235 - 185 * v);
      fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='rgb(%d,%d,255)' stroke='white'/>\n",
              80 + cell * h, 50 + cell * l, cell, cell, shade, shade);
      fprintf(f, "<text x='%d' y='%d' font-size='16' text-anchor='middle' fill='%s'>%d</text>\n",
              80 + cell * h + cell / 2, 50 + cell * l + cell / 2 + 2, v > 0.5 ? "white" : "black", d);
      if (D > 0) { /* gate probabilities of levels 1..D, small */
        char g[128] = "";
        size_t at = 0;
        for (int k = 0; k < D && at + 8 < sizeof g; k++)
          at += (size_t)snprintf(g + at, sizeof g - at, "%s%.2f", k ? " " : "",
                                 probs[((size_t)l * r.heads + h) * D + k]);
        fprintf(f, "<text x='%d' y='%d' font-size='8' text-anchor='middle' fill='%s'>%s</text>\n",
                80 + cell * h + cell / 2, 50 + cell * l + cell - 6, v > 0.5 ? "white" : "black", g);
      }
    }
  }
  fprintf(f, "</svg>\n");
  free(probs);
  dua_routing_free(&r);
  return fclose(f) == 0 ? 0 : -1;
}

int dua_train_plots(const char *dir, dua_trainer *t) {
  int a = loss_plot(dir), b = depth_plot(dir, t);
  return a || b ? -1 : 0;
}
