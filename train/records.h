/* Run records: run.json (id, status and stage times, resolved config, hosts,
 * ranks, devices, versions), metrics.jsonl, and each rank's log. */
#ifndef TFDIST_TRAIN_RECORDS_H
#define TFDIST_TRAIN_RECORDS_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "base/clock.h"

typedef enum {
  RUN_PREPARING = 0, RUN_RUNNING, RUN_FINALIZING, RUN_COMPLETED, RUN_FAILED, RUN_CANCELED,
  RUN_STATUS_COUNT
} run_status;

typedef struct {
  char id[64];
  char path[4200];        /* <outputs>/run.json; empty on ranks other than 0 */
  run_status status;
  double stage_time[RUN_STATUS_COUNT]; /* unix seconds each stage began, 0 if never */
  cJSON *doc;             /* config, hosts, versions, ... kept for rewrites */
  char error[512];
  int lock_fd;            /* <outputs>/.tfdist.lock, flock'd while the run lives */
  int locked;
} run_record;

const char *run_status_name(run_status s);
/* A new id: run-<utc date>-<time>-<6 hex>. Same on every rank once broadcast. */
void run_id_make(char *out, size_t out_bytes);

/* Takes <outputs> for this run (a second run into it while this one lives is
 * refused: their records would interleave) and writes run.json. */
int run_record_init(run_record *r, const char *id, const char *outputs, cJSON *config,
                    char *err, size_t err_bytes);
/* Sets a top-level field (takes ownership of item). */
void run_record_set(run_record *r, const char *key, cJSON *item);
/* Moves to a status, stamps its time, rewrites run.json atomically. */
int run_record_stage(run_record *r, run_status s, char *err, size_t err_bytes);
void run_record_free(run_record *r);

/* SIGINT/SIGTERM while a run trains: the first one only notes the signal, so
 * the loop can stop between steps and the run be recorded Canceled; the
 * handler then resets, so a second one ends the process at once. */
void run_cancel_install(void);
void run_cancel_uninstall(void);
int run_cancel_signal(void); /* the signal received, 0 if none */

typedef struct {
  int is_open;
  int fd;                 /* O_APPEND */
  char path[4200];
  char *rows;             /* lines written since the last sync, not yet in the file */
  size_t rows_len, rows_cap;
} metrics_log;

int metrics_open(metrics_log *m, const char *outputs, int append, char *err, size_t err_bytes);
/* One line {"name","value","epoch","step","time"}, kept until metrics_sync. */
int metrics_write(metrics_log *m, const char *name, double value, int64_t epoch, int64_t step);
/* Appends the kept lines and fsyncs: called once per epoch, so a crash loses
 * at most one epoch. A failed append (a full disk) is cut back off, so the
 * file holds whole rows only; err names the file and the reason. */
int metrics_sync(metrics_log *m, char *err, size_t err_bytes);
void metrics_close(metrics_log *m);

typedef struct {
  FILE *f;
  char who[32]; /* "rank 3", "ps 0": each line's prefix and the file's name */
} rank_log;

/* <logs>/rank-<rank>.log */
int rank_log_open(rank_log *l, const char *logs, int rank, char *err, size_t err_bytes);
/* <logs>/<kind>-<index>.log, lines "<kind> <index>: " (a TF_CONFIG ps task) */
int rank_log_open_task(rank_log *l, const char *logs, const char *kind, int index, char *err,
                       size_t err_bytes);
void rank_log_printf(rank_log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rank_log_close(rank_log *l);

#endif
