/* train_plots.h: dua-train's SVG plots: loss/accuracy curves from the run's CSV logs, and the learned
 * per-layer x per-head depth map. */
#ifndef DUA_TRAIN_PLOTS_H
#define DUA_TRAIN_PLOTS_H

#include "dua_train.h"

/* Writes dir/loss.svg (from dir/train.csv and dir/eval.csv) and dir/depths.svg; 0 on success. */
int dua_train_plots(const char *dir, dua_trainer *trainer);

#endif
