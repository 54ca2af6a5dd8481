/* Duplicate object keys in parsed JSON (RFC 8259: names SHOULD be unique;
 * a reader that picks one of two values guesses what the sender meant). */
#include "base/jsonkeys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char path[256]; /* where the walk is, e.g. "instances[1]"; "" at the root */
  size_t len;
  const char *root_name;
  char *err;
  size_t err_bytes;
} json_keys_walk;

static int json_keys_cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorting makes the check O(n log n): a body may hold an object of a
 * million keys. */
static int json_keys_object_check(json_keys_walk *w, const cJSON *obj) {
  const int n = cJSON_GetArraySize(obj);
  if (n < 2) return 0;
  const char **keys = malloc((size_t)n * sizeof *keys);
  if (!keys) {
    snprintf(w->err, w->err_bytes, "%s: out of memory", w->len ? w->path : w->root_name);
    return -1;
  }
  int k = 0;
  for (const cJSON *c = obj->child; c && k < n; c = c->next) keys[k++] = c->string ? c->string : "";
  qsort(keys, (size_t)k, sizeof *keys, json_keys_cmp);
  const char *dup = NULL;
  for (int i = 1; i < k && !dup; i++) {
    if (strcmp(keys[i - 1], keys[i]) == 0) dup = keys[i];
  }
  if (dup) {
    snprintf(w->err, w->err_bytes, "%s: duplicate key \"%.100s\"",
             w->len ? w->path : w->root_name, dup);
  }
  free(keys);
  return dup ? -1 : 0;
}

static int json_keys_walk_item(json_keys_walk *w, const cJSON *item) {
  if (cJSON_IsObject(item) && json_keys_object_check(w, item) != 0) return -1;
  const int is_object = cJSON_IsObject(item);
  long i = 0;
  for (const cJSON *c = item->child; c; c = c->next, i++) {
    if (!cJSON_IsObject(c) && !cJSON_IsArray(c)) continue; /* numbers need no path */
    const size_t len = w->len;
    int add = is_object ? snprintf(w->path + len, sizeof w->path - len, "%s%.100s",
                                   len ? "." : "", c->string ? c->string : "")
                        : snprintf(w->path + len, sizeof w->path - len, "[%ld]", i);
    w->len = add > 0 && len + (size_t)add < sizeof w->path ? len + (size_t)add : sizeof w->path - 1;
    int rc = json_keys_walk_item(w, c);
    w->len = len;
    w->path[len] = '\0';
    if (rc != 0) return -1;
  }
  return 0;
}

int json_keys_check_unique(const cJSON *root, const char *root_name, char *err, size_t err_bytes) {
  json_keys_walk w = {.len = 0, .root_name = root_name, .err = err, .err_bytes = err_bytes};
  w.path[0] = '\0';
  return root ? json_keys_walk_item(&w, root) : 0;
}
