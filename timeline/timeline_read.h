/* Reading the timelines that --timeline writes (timeline/timeline.h): one
 * event per line, '[' first, ']' last (missing in a dead run's .part, whose
 * last line a kill may have cut: that line is skipped). For
 * `tfdist timeline merge` and `tfdist timeline summary`. */
#ifndef TFDIST_TIMELINE_TIMELINE_READ_H
#define TFDIST_TIMELINE_TIMELINE_READ_H

#include <stddef.h>

#include <cjson/cJSON.h>

typedef struct {
  const char *name; /* the span's name; for 'M' the metadata kind */
  char ph;          /* 'X' (span) or 'M' (metadata) */
  int pid, tid;
  double ts, dur;   /* microseconds ('X') */
  const char *meta; /* 'M': args.name */
  double queued_us; /* an allreduce's args.queued_us, else 0 */
} timeline_event;

/* Called per event; line is its JSON text. Nonzero stops the read. */
typedef int (*timeline_event_fn)(void *ctx, const timeline_event *e, const char *line);

/* Every event of path, in order. 0, or -1 with err naming path:line and the
 * field at fault. */
int timeline_read(const char *path, timeline_event_fn fn, void *ctx, char *err, size_t err_bytes);
/* Files to read for arg: arg itself, or a folder's timeline-<r>.json (a
 * rank's .part when its run died), by rank. *paths (n strings) is the
 * caller's to free with timeline_paths_free. */
int timeline_paths(const char *arg, char ***paths, int *n, char *err, size_t err_bytes);
void timeline_paths_free(char **paths, int n);
/* Removes dir's timeline-<r>.json and .part for r >= ranks: an earlier,
 * larger run's, which a folder's summary would take for this run's. */
void timeline_remove_ranks_from(const char *dir, int ranks);
/* One trace of every file, written atomically to out. Two files with the
 * same rank are refused (two runs in one folder). */
int timeline_merge(const char *out, char **paths, int n, char *err, size_t err_bytes);
/* Per rank: step time, each phase's mean and share of the step, each
 * allreduce's time and queueing, the share of reduction time hidden behind
 * backward, and the epoch-level spans. NULL with err set on bad input (as
 * in merge, a rank found in two files is refused). */
cJSON *timeline_summarize(char **paths, int n, char *err, size_t err_bytes);

#endif
