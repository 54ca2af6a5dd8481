/* `tfdist timeline merge|summary`: the traces of `tfdist train --timeline on`. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "base/options.h"
#include "timeline/timeline_read.h"

typedef struct {
  char out[OPT_STR_BYTES];
  int json;
} timeline_opts;

#define F(field) offsetof(timeline_opts, field)
static const opt_spec timeline_specs[] = {
  {"out", OPT_STRING, F(out), NULL, 0, 0, NULL, "merge: the trace to write (required)"},
  {"json", OPT_BOOL, F(json), "off", 0, 0, NULL, "summary: one JSON object instead of tables"},
};
#undef F
static const opt_table timeline_options = {
    timeline_specs, (int)(sizeof timeline_specs / sizeof timeline_specs[0]), "timeline"};

static const char timeline_usage[] =
    "usage: tfdist timeline merge --out FILE PATH...\n"
    "       tfdist timeline summary [--json] PATH...\n"
    "  PATH: a timeline-<rank>.json, or a --logs folder holding them (a rank whose run\n"
    "  died is read from its .part). merge writes one Chrome trace of every rank for\n"
    "  chrome://tracing or ui.perfetto.dev; summary says where each rank's step time goes.";

static void timeline_print_row(const cJSON *s, int with_share) {
  const cJSON *share = cJSON_GetObjectItem(s, "share_of_step");
  const cJSON *queued = cJSON_GetObjectItem(s, "mean_queued_us");
  printf("  %-22s %7d %10.1f %10.1f %10.1f", cJSON_GetObjectItem(s, "name")->valuestring,
         cJSON_GetObjectItem(s, "count")->valueint,
         cJSON_GetObjectItem(s, "mean_us")->valuedouble,
         cJSON_GetObjectItem(s, "p50_us")->valuedouble,
         cJSON_GetObjectItem(s, "p95_us")->valuedouble);
  if (with_share && share) printf(" %7.1f%%", 100.0 * share->valuedouble);
  if (queued) printf("   queued %.1f us", queued->valuedouble);
  printf("\n");
}

static void timeline_print_rank(const cJSON *r) {
  printf("%s: %d steps recorded\n", cJSON_GetObjectItem(r, "process")->valuestring,
         cJSON_GetObjectItem(r, "steps")->valueint);
  printf("  %-22s %7s %10s %10s %10s %8s\n", "span", "count", "mean us", "p50 us", "p95 us",
         "of step");
  const char *groups[] = {"phases", "allreduce", "epoch_spans"};
  for (int g = 0; g < 3; g++) {
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(r, groups[g])) timeline_print_row(s, g < 2);
  }
  const cJSON *hidden = cJSON_GetObjectItem(r, "allreduce_hidden_by_backward");
  if (cJSON_IsNumber(hidden)) {
    printf("  allreduce time hidden behind backward: %.1f%%\n", 100.0 * hidden->valuedouble);
  }
  const cJSON *last = cJSON_GetObjectItem(r, "last_to_reduce_share");
  if (cJSON_IsNumber(last)) {
    printf("  last rank to reach the reduction in %.1f%% of the steps\n", 100.0 * last->valuedouble);
  }
  printf("\n");
}

/* Every PATH's files, in order. */
static int timeline_collect(const char **args, int nargs, char ***paths, int *n, char *err,
                            size_t eb) {
  *paths = NULL;
  *n = 0;
  for (int i = 0; i < nargs; i++) {
    char **more;
    int m;
    if (timeline_paths(args[i], &more, &m, err, eb) != 0) return -1;
    char **all = realloc(*paths, (size_t)(*n + m) * sizeof *all);
    if (!all) {
      timeline_paths_free(more, m);
      snprintf(err, eb, "out of memory");
      return -1;
    }
    memcpy(all + *n, more, (size_t)m * sizeof *more);
    free(more);
    *paths = all;
    *n += m;
  }
  return 0;
}

static int timeline_summary_run(const timeline_opts *o, char **paths, int n, char *err,
                                size_t eb) {
  cJSON *sum = timeline_summarize(paths, n, err, eb);
  if (!sum) return CLI_USAGE;
  if (o->json) {
    char *text = cJSON_PrintUnformatted(sum);
    printf("%s\n", text ? text : "{}");
    free(text);
  } else {
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(sum, "ranks")) timeline_print_rank(r);
  }
  cJSON_Delete(sum);
  return CLI_OK;
}

static int timeline_main(int argc, char **argv, const char **args) {
  timeline_opts o;
  int nargs = 0;
  char err[4400] = "";
  if (argc < 2 || opt_wants_help(argc - 1, argv + 1)) {
    opt_print_help(&timeline_options, timeline_usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  const char *verb = argv[1];
  if (strcmp(verb, "merge") != 0 && strcmp(verb, "summary") != 0) {
    fprintf(stderr, "tfdist: error: timeline: unknown subcommand '%s' (merge or summary)\n", verb);
    return CLI_USAGE;
  }
  if (opt_defaults(&timeline_options, &o, err, sizeof err) != 0 ||
      opt_apply_argv(&timeline_options, &o, argc - 2, argv + 2, args, argc, &nargs,
                     err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  const int merge = !strcmp(verb, "merge");
  if ((merge && o.json) || (!merge && o.out[0])) { /* not silently ignored */
    fprintf(stderr, "tfdist: error: timeline %s: %s\n", verb,
            merge ? "--json is summary's flag" : "--out is merge's flag (summary prints)");
    return CLI_USAGE;
  }
  if (nargs == 0 || (!strcmp(verb, "merge") && !o.out[0])) {
    fprintf(stderr, "tfdist: error: timeline %s: %s\n", verb,
            nargs == 0 ? "give a timeline file or a logs folder" : "--out: required");
    return CLI_USAGE;
  }
  char **paths;
  int n, rc = CLI_USAGE;
  if (timeline_collect(args, nargs, &paths, &n, err, sizeof err) == 0) {
    if (!strcmp(verb, "summary")) rc = timeline_summary_run(&o, paths, n, err, sizeof err);
    else rc = timeline_merge(o.out, paths, n, err, sizeof err) == 0 ? CLI_OK : CLI_USAGE;
    if (merge && rc == CLI_OK) { /* a success says what it wrote */
      printf("wrote %s: %d rank trace(s) merged (open in chrome://tracing or ui.perfetto.dev)\n",
             o.out, n);
    }
  }
  timeline_paths_free(paths, n);
  if (rc != CLI_OK) fprintf(stderr, "tfdist: error: %s\n", err);
  return rc;
}

/* Room for every word as a PATH: a big job's files, globbed, are many. */
int cli_timeline(int argc, char **argv) {
  const char **args = calloc((size_t)argc + 1, sizeof *args);
  if (!args) {
    fprintf(stderr, "tfdist: error: timeline: out of memory\n");
    return CLI_FAIL;
  }
  int rc = timeline_main(argc, argv, args);
  free(args);
  return rc;
}
