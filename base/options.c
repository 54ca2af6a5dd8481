/* Option tables: parse flags and JSON config files with one-line errors. */
#include "base/options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/jsonkeys.h"

static void opt_json_key(const char *name, char *key, size_t key_bytes) {
  snprintf(key, key_bytes, "%s", name);
  for (char *p = key; *p; p++) if (*p == '-') *p = '_';
}

/* The index of v in choices, or -1. */
static int opt_choice_index(const char *const *choices, const char *v) {
  for (int i = 0; choices[i]; i++) {
    if (strcmp(choices[i], v) == 0) return i;
  }
  return -1;
}

void opt_choice_list(const opt_spec *s, char *out, size_t out_bytes) {
  size_t len = 0;
  out[0] = '\0';
  for (int i = 0; s->choices[i] && len < out_bytes; i++) {
    len += (size_t)snprintf(out + len, out_bytes - len, "%s%s", i ? "|" : "", s->choices[i]);
  }
}

/* Parses text into the field; `where` names the source ("--batch-size" or
 * "config.json: batch_size") for the error line. */
static int opt_bool_takes_auto(const opt_spec *s) {
  return s->type == OPT_BOOL && s->defval && strcmp(s->defval, "auto") == 0;
}

static int opt_set_text(const opt_spec *s, void *obj, const char *text, const char *where,
                        char *err, size_t err_bytes) {
  char *field = (char *)obj + s->offset;
  char *end = NULL;
  errno = 0;
  switch (s->type) {
  case OPT_INT: {
    if (s->choices && strcmp(text, s->choices[0]) == 0) { /* the word that stands for 0 */
      *(int64_t *)field = 0;
      return 0;
    }
    long long v = strtoll(text, &end, 10);
    if (!*text || *end || errno) {
      snprintf(err, err_bytes, "%s: '%s' is not an integer%s%s", where, text,
               s->choices ? " or " : "", s->choices ? s->choices[0] : "");
      return -1;
    }
    if ((double)v < s->min || (double)v > s->max) {
      snprintf(err, err_bytes, "%s: %lld is out of range [%.0f, %.0f]", where, v, s->min, s->max);
      return -1;
    }
    *(int64_t *)field = v;
    return 0;
  }
  case OPT_FLOAT: {
    double v = strtod(text, &end);
    if (!*text || *end || errno || !isfinite(v)) {
      snprintf(err, err_bytes, "%s: '%s' is not a finite number", where, text);
      return -1;
    }
    if (v < s->min || v > s->max) {
      snprintf(err, err_bytes, "%s: %g is out of range [%g, %g]", where, v, s->min, s->max);
      return -1;
    }
    *(double *)field = v;
    return 0;
  }
  case OPT_BOOL:
    if (opt_bool_takes_auto(s) && !strcmp(text, "auto")) {
      *(int *)field = OPT_AUTO;
    } else if (!strcmp(text, "on") || !strcmp(text, "true") || !strcmp(text, "1")) {
      *(int *)field = 1;
    } else if (!strcmp(text, "off") || !strcmp(text, "false") || !strcmp(text, "0")) {
      *(int *)field = 0;
    } else {
      snprintf(err, err_bytes, "%s: '%s' is not %s", where, text,
               opt_bool_takes_auto(s) ? "auto/on/off" : "on/off");
      return -1;
    }
    return 0;
  case OPT_CHOICE: {
    const int k = opt_choice_index(s->choices, text);
    if (k < 0) {
      char list[256];
      opt_choice_list(s, list, sizeof list);
      snprintf(err, err_bytes, "%s: '%s' is not one of %s", where, text, list);
      return -1;
    }
    *(int *)field = k;
    return 0;
  }
  case OPT_STRING:
    if (strlen(text) >= OPT_STR_BYTES) {
      snprintf(err, err_bytes, "%s: value too long", where);
      return -1;
    }
    snprintf(field, OPT_STR_BYTES, "%s", text);
    return 0;
  }
  return -1;
}

int opt_defaults(const opt_table *t, void *obj, char *err, size_t err_bytes) {
  for (int i = 0; i < t->count; i++) {
    const opt_spec *s = &t->specs[i];
    const char *d = s->defval ? s->defval : "";
    if (!s->defval && s->type == OPT_STRING) {
      ((char *)obj + s->offset)[0] = '\0';
      continue;
    }
    if (!s->defval && s->type == OPT_CHOICE) {
      *(int *)((char *)obj + s->offset) = -1; /* unset */
      continue;
    }
    if (opt_set_text(s, obj, d, s->name, err, err_bytes) != 0) return -1;
  }
  return 0;
}

static const opt_spec *opt_lookup(const opt_table *t, const char *name, size_t len) {
  for (int i = 0; i < t->count; i++) {
    if (strlen(t->specs[i].name) == len && strncmp(t->specs[i].name, name, len) == 0) {
      return &t->specs[i];
    }
  }
  return NULL;
}

static const char *opt_json_type_name(const cJSON *v) {
  return cJSON_IsNull(v) ? "null" : cJSON_IsTrue(v) ? "true" : cJSON_IsFalse(v) ? "false"
       : cJSON_IsNumber(v) ? "a number" : cJSON_IsString(v) ? "a string"
       : cJSON_IsArray(v) ? "an array" : "an object";
}

/* The value as flag text. Numbers may come as strings ("3") and booleans as
 * 0/1 or "on"/"off", as on the command line; anything else of the wrong JSON
 * type (null, an array, a number for a path) is an error naming the type. */
static int opt_json_value_text(const cJSON *v, const opt_spec *s, const char *where, char *buf,
                               size_t buf_bytes, char *err, size_t err_bytes) {
  int numeric = s->type == OPT_INT || s->type == OPT_FLOAT;
  int ok = cJSON_IsString(v) || (cJSON_IsBool(v) && s->type == OPT_BOOL) ||
           (cJSON_IsNumber(v) && (numeric || s->type == OPT_BOOL));
  if (!ok) {
    const char *want = s->type == OPT_INT ? "an integer" : s->type == OPT_FLOAT ? "a number"
                     : s->type == OPT_BOOL ? "true or false" : "a string";
    snprintf(err, err_bytes, "%s: wrong JSON type (%s): expected %s", where, opt_json_type_name(v),
             want);
    return -1;
  }
  if (cJSON_IsString(v)) {
    snprintf(buf, buf_bytes, "%s", v->valuestring);
  } else if (cJSON_IsBool(v)) {
    snprintf(buf, buf_bytes, "%s", cJSON_IsTrue(v) ? "true" : "false");
  } else if (s->type == OPT_INT && v->valuedouble != floor(v->valuedouble)) {
    snprintf(err, err_bytes, "%s: %.17g is not an integer", where, v->valuedouble);
    return -1;
  } else {
    snprintf(buf, buf_bytes, "%.17g", v->valuedouble);
  }
  return 0;
}

int opt_apply_json(const opt_table *t, void *obj, const char *path, char *err, size_t err_bytes) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, err_bytes, "--config %s: %s", path, strerror(errno));
    return -1;
  }
  char *text = NULL;
  size_t len = 0, cap = 0;
  int read_errno = 0;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      cap = cap ? cap * 2 : 8192;
      char *grown = realloc(text, cap);
      if (!grown) break;
      text = grown;
    }
    errno = 0;
    size_t got = fread(text + len, 1, cap - len - 1, f);
    len += got;
    if (got == 0) {
      if (ferror(f)) read_errno = errno ? errno : EIO;
      break;
    }
  }
  fclose(f);
  if (!text || read_errno) {
    /* a folder opens, then fails to read: say so, not "syntax error at byte 0" */
    snprintf(err, err_bytes, "--config %s: %s", path,
             text ? strerror(read_errno) : "out of memory");
    free(text);
    return -1;
  }
  text[len] = '\0';
  const char *bad = NULL;
  cJSON *root = cJSON_ParseWithOpts(text, &bad, 1);
  int rc = -1;
  if (!root || !cJSON_IsObject(root)) {
    long off = root ? 0 : (bad ? (long)(bad - text) : 0);
    snprintf(err, err_bytes, "%s: not a JSON object (syntax error near byte %ld)", path, off);
    goto out;
  }
  if (json_keys_check_unique(root, path, err, err_bytes) != 0) goto out; /* else the last wins */
  for (const cJSON *item = root->child; item; item = item->next) {
    const opt_spec *s = NULL;
    for (int i = 0; i < t->count && !s; i++) {
      char key[128];
      opt_json_key(t->specs[i].name, key, sizeof key);
      if (strcmp(key, item->string) == 0) s = &t->specs[i];
    }
    char where[4352], val[OPT_STR_BYTES];
    snprintf(where, sizeof where, "%s: key \"%s\"", path, item->string);
    if (!s) {
      snprintf(err, err_bytes, "%s: unknown key (see tfdist %s --help)", where, t->command);
      goto out;
    }
    if (opt_json_value_text(item, s, where, val, sizeof val, err, err_bytes) != 0) goto out;
    /* "config" names the file a resolved config came from (run.json records
     * it); a config file does not include another, so it is not followed. */
    if (strcmp(s->name, "config") == 0) continue;
    if (opt_set_text(s, obj, val, where, err, err_bytes) != 0) goto out;
  }
  rc = 0;
out:
  cJSON_Delete(root);
  free(text);
  return rc;
}

/* The words a boolean flag takes as its own next argument. */
static int opt_bool_word(const opt_spec *s, const char *w) {
  if (opt_bool_takes_auto(s) && strcmp(w, "auto") == 0) return 1;
  static const char *const words[] = {"on", "off", "true", "false", "1", "0"};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
    if (strcmp(w, words[i]) == 0) return 1;
  }
  return 0;
}

int opt_apply_argv(const opt_table *t, void *obj, int argc, char **argv, const char **positional,
                   int max_pos, int *npos, char *err, size_t err_bytes) {
  if (npos) *npos = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      if (!positional || !npos || *npos >= max_pos) {
        snprintf(err, err_bytes, "tfdist %s: unexpected argument '%s'", t->command, a);
        return -1;
      }
      positional[(*npos)++] = a;
      continue;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const opt_spec *s = opt_lookup(t, name, len);
    if (!s) {
      snprintf(err, err_bytes, "tfdist %s: unknown flag '--%.*s' (see --help)", t->command,
               (int)len, name);
      return -1;
    }
    const char *val = eq ? eq + 1 : NULL;
    if (!val && s->type == OPT_BOOL && (i + 1 >= argc || !opt_bool_word(s, argv[i + 1]))) {
      val = "on"; /* a bare boolean flag switches it on */
    }
    if (!val) {
      /* "--outputs --epochs 1": a missing value, not a folder named "--epochs" */
      if (i + 1 >= argc || (strncmp(argv[i + 1], "--", 2) == 0 && argv[i + 1][2] != '\0')) {
        snprintf(err, err_bytes, "--%s: missing value%s%.200s%s", s->name,
                 i + 1 < argc ? " (got the flag " : "", i + 1 < argc ? argv[i + 1] : "",
                 i + 1 < argc ? ")" : "");
        return -1;
      }
      val = argv[++i];
    }
    char where[160];
    snprintf(where, sizeof where, "--%s", s->name);
    if (opt_set_text(s, obj, val, where, err, err_bytes) != 0) return -1;
  }
  return 0;
}

int opt_wants_help(int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
  }
  return 0;
}

void opt_print_help(const opt_table *t, const char *usage, void *out_file) {
  FILE *out = out_file;
  fprintf(out, "%s\n\nFlags (JSON config keys use '_' for '-'; flags override the config):\n",
          usage);
  for (int i = 0; i < t->count; i++) {
    const opt_spec *s = &t->specs[i];
    char list[256] = "", left[sizeof list + 96];
    if (s->type == OPT_CHOICE) opt_choice_list(s, list, sizeof list);
    if (s->type == OPT_INT && s->choices) snprintf(list, sizeof list, "N|%s", s->choices[0]);
    const char *meta = s->type == OPT_INT ? (s->choices ? list : "N") : s->type == OPT_FLOAT ? "X"
                     : s->type == OPT_BOOL ? (opt_bool_takes_auto(s) ? "auto|on|off" : "on|off")
                     : s->type == OPT_CHOICE ? list
                     : "VALUE";
    snprintf(left, sizeof left, "--%s %s", s->name, meta);
    fprintf(out, "  %-34s %s", left, s->help);
    if (s->defval && *s->defval) fprintf(out, " (default: %s)", s->defval);
    fputc('\n', out);
  }
}

cJSON *opt_to_json(const opt_table *t, const void *obj) {
  cJSON *o = cJSON_CreateObject();
  for (int i = 0; i < t->count && o; i++) {
    const opt_spec *s = &t->specs[i];
    const char *field = (const char *)obj + s->offset;
    char key[128];
    opt_json_key(s->name, key, sizeof key);
    switch (s->type) {
    case OPT_INT:
      if (s->choices && *(const int64_t *)field == 0) cJSON_AddStringToObject(o, key, s->choices[0]);
      else cJSON_AddNumberToObject(o, key, (double)*(const int64_t *)field);
      break;
    case OPT_FLOAT: cJSON_AddNumberToObject(o, key, *(const double *)field); break;
    case OPT_BOOL:
      if (*(const int *)field == OPT_AUTO) cJSON_AddStringToObject(o, key, "auto");
      else cJSON_AddBoolToObject(o, key, *(const int *)field);
      break;
    case OPT_CHOICE: {
      const int k = *(const int *)field;
      cJSON_AddStringToObject(o, key, k >= 0 ? s->choices[k] : "");
      break;
    }
    default: cJSON_AddStringToObject(o, key, field); break;
    }
  }
  return o;
}
