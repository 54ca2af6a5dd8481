/* What this binary was built with: `tfdist --version`, `--check-build`, run.json. */
#ifndef TFDIST_TRAIN_BUILDINFO_H
#define TFDIST_TRAIN_BUILDINFO_H

#include <cjson/cJSON.h>
#include <stdio.h>

cJSON *buildinfo_json(void);
void buildinfo_print(FILE *out);

#endif
