/* One rank's timeline: a Chrome trace (Trace Event Format, JSON array form)
 * of where a step's time goes, what Horovod's HOROVOD_TIMELINE gives.
 * Load it in chrome://tracing or ui.perfetto.dev; `tfdist timeline merge`
 * puts every rank's file into one trace (pid = rank).
 *
 * Spans are written as they end, one event per line, to <path>.part; close
 * fsyncs it and renames it to <path> (an earlier run's <path> is removed at
 * open, so it never stands for this run). A run that dies leaves the .part,
 * which the viewers still read (the closing ']' is optional in that form).
 * Safe to call from several threads. */
#ifndef TFDIST_TIMELINE_TIMELINE_H
#define TFDIST_TIMELINE_TIMELINE_H

#include <stddef.h>

typedef struct timeline timeline;

/* The threads a training rank names. */
enum { TIMELINE_MAIN = 0, TIMELINE_COLLECTIVE = 1 };

/* pid: the rank; t0: the monotonic second that becomes ts 0 (taken by every
 * rank as it leaves one barrier, so the ranks' spans line up). */
int timeline_open(timeline **out, const char *path, int pid, const char *process_name, double t0,
                  char *err, size_t err_bytes);
void timeline_thread_name(timeline *tl, int tid, const char *name);
/* A complete span [begin, end] in monotonic seconds; args: the text of a
 * JSON object, or NULL. */
void timeline_span(timeline *tl, int tid, const char *name, double begin, double end,
                   const char *args);
/* Ends the array, fsyncs and renames; frees tl. 0, or -1 with err set (a
 * write that failed on the way is reported here, naming the file). */
int timeline_close(timeline *tl, char *err, size_t err_bytes);
/* Writes out the spans held in memory (whole lines), for a rank that its
 * job's abort is about to end. Safe while other threads still add spans. */
void timeline_flush(timeline *tl);
/* After a failed run: flushes what was written, keeps the .part, frees tl. */
void timeline_free(timeline *tl);

#endif
