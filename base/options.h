/* One table per command describes each option once: its flag, JSON key,
 * type, default, bounds and help. Flags, config files, --help and the
 * resolved config in run.json are all driven from it. */
#ifndef TFDIST_BASE_OPTIONS_H
#define TFDIST_BASE_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

typedef enum { OPT_INT, OPT_FLOAT, OPT_STRING, OPT_BOOL, OPT_CHOICE } opt_type;

typedef struct {
  const char *name;    /* flag without "--"; the JSON key is the same with '_' for '-' */
  opt_type type;
  size_t offset;       /* into the options struct: int64_t (OPT_INT), double (OPT_FLOAT),
                          char[OPT_STR_BYTES] (OPT_STRING), int (OPT_BOOL), or an enum the
                          size of an int (OPT_CHOICE: the value's index in choices) */
  const char *defval;  /* as text; NULL means "unset" (empty string) */
  double min, max;     /* inclusive bounds for OPT_INT / OPT_FLOAT */
  const char *const *choices; /* OPT_CHOICE: the names, NULL-terminated; shown as "a|b|c";
                               OPT_INT: choices[0] is a word that stands for 0 ("auto") */
  const char *help;
} opt_spec;

#define OPT_STR_BYTES 4096
/* An OPT_BOOL whose default is "auto" also takes "auto", stored as OPT_AUTO:
 * the caller decides once it knows the machine. */
#define OPT_AUTO (-1)

typedef struct {
  const opt_spec *specs;
  int count;
  const char *command; /* "train", for messages */
} opt_table;

/* Sets every field to its default. */
int opt_defaults(const opt_table *t, void *obj, char *err, size_t err_bytes);
/* Applies a JSON object; an unknown key or a bad value names the file and key. */
int opt_apply_json(const opt_table *t, void *obj, const char *path, char *err, size_t err_bytes);
/* Applies argv (after the command word). Positional arguments are refused
 * unless positional != NULL, which then receives them (at most max_pos). */
int opt_apply_argv(const opt_table *t, void *obj, int argc, char **argv, const char **positional,
                   int max_pos, int *npos, char *err, size_t err_bytes);
int opt_wants_help(int argc, char **argv);
void opt_print_help(const opt_table *t, const char *usage, void *out_file);
/* An OPT_CHOICE spec's names as "a|b|c", as --help and the errors show them. */
void opt_choice_list(const opt_spec *s, char *out, size_t out_bytes);
/* The resolved values as a JSON object (caller frees); a choice is its name. */
cJSON *opt_to_json(const opt_table *t, const void *obj);

#endif
