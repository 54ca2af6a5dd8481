/* Duplicate object keys in parsed JSON: cJSON keeps every member and its
 * lookups return the first, so a repeated key would silently pick one. */
#ifndef TFDIST_BASE_JSONKEYS_H
#define TFDIST_BASE_JSONKEYS_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* 0 when no object in root's tree (root included) repeats a key; else -1
 * with err "<where>: duplicate key \"k\"", where is root_name for root's own
 * keys and a path such as instances[1] or inputs.x below it. */
int json_keys_check_unique(const cJSON *root, const char *root_name, char *err, size_t err_bytes);

#endif
