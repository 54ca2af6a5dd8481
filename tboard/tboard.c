/* TensorBoard event-file writer: Event/Summary protobufs by hand (base/pbenc),
 * each framed as a TFRecord: uint64 length, masked CRC-32C of the length,
 * the bytes, masked CRC-32C of the bytes (all little-endian). */
#include "tboard/tboard.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/crc32c.h"
#include "base/fsutil.h"
#include "base/pbenc.h"

/* tensorflow/core/util/event.proto and framework/summary.proto */
enum {
  EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5,
  EVENT_SESSION_LOG = 7, /* 6 is the deprecated log_message */
  SUMMARY_VALUE = 1, VALUE_TAG = 1, VALUE_SIMPLE_VALUE = 2,
  SESSION_LOG_STATUS = 1, SESSION_LOG_START = 1
};

struct tboard_writer {
  int fd;
  char path[4400];
  pb_buf records; /* framed records not yet in the file */
  pb_buf event, inner, value; /* scratch */
};

uint32_t tboard_crc_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

static int tboard_frame(tboard_writer *w) {
  uint8_t len[8];
  for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)w->event.len >> (8 * i));
  if (w->event.failed) {
    w->records.failed = 1; /* reported by the next flush */
    return -1;
  }
  pb_buf_raw(&w->records, len, 8);
  pb_buf_fixed32(&w->records, tboard_crc_mask(crc32c(len, 8)));
  pb_buf_raw(&w->records, w->event.data, w->event.len);
  pb_buf_fixed32(&w->records, tboard_crc_mask(crc32c(w->event.data, w->event.len)));
  return w->records.failed ? -1 : 0;
}

/* Event{wall_time, step}: the common head of every record. */
static void tboard_event_begin(tboard_writer *w, int64_t step) {
  pb_buf_reset(&w->event);
  pb_buf_field_double(&w->event, EVENT_WALL_TIME, clock_wall_s());
  pb_buf_field_int64(&w->event, EVENT_STEP, step);
}

/* The time in a new file's name: now, or past every event file already in
 * dir. TensorBoard reads a folder's files in name order and never goes back
 * to an earlier name, so a resumed run's file, started within the same
 * second as the one it resumes, must still sort after it. */
static long long tboard_name_time(const char *dir) {
  long long t = (long long)clock_wall_s();
  DIR *d = opendir(dir);
  if (!d) return t;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    long long seen;
    if (sscanf(e->d_name, "events.out.tfevents.%lld.", &seen) == 1 && seen >= t) t = seen + 1;
  }
  closedir(d);
  return t;
}

int tboard_writer_open(tboard_writer **out, const char *dir, char *err, size_t eb) {
  *out = NULL;
  if (fs_mkdirs(dir, err, eb) != 0) return -1;
  tboard_writer *w = calloc(1, sizeof *w);
  if (!w) {
    snprintf(err, eb, "out of memory");
    return -1;
  }
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
  for (char *p = host; *p; p++) if (*p == '/') *p = '_';
  int n = snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%lld.%s.%ld.tfdist", dir,
                   tboard_name_time(dir), host, (long)getpid());
  if (n < 0 || (size_t)n >= sizeof w->path) {
    snprintf(err, eb, "%.4000s: path too long", dir);
    free(w);
    return -1;
  }
  w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_APPEND | O_CLOEXEC, 0644);
  if (w->fd < 0) {
    snprintf(err, eb, "%s: %s", w->path, strerror(errno));
    free(w);
    return -1;
  }
  pb_buf_init(&w->records);
  pb_buf_init(&w->event);
  pb_buf_init(&w->inner);
  pb_buf_init(&w->value);
  tboard_event_begin(w, 0);
  pb_buf_field_string(&w->event, EVENT_FILE_VERSION, "brain.Event:2");
  if (tboard_frame(w) != 0) {
    snprintf(err, eb, "out of memory");
    tboard_writer_free(w);
    return -1;
  }
  *out = w;
  return 0;
}

void tboard_writer_scalar(tboard_writer *w, const char *tag, double value, int64_t step) {
  if (!w) return;
  pb_buf_reset(&w->value);
  pb_buf_field_string(&w->value, VALUE_TAG, tag);
  pb_buf_field_float(&w->value, VALUE_SIMPLE_VALUE, (float)value);
  pb_buf_reset(&w->inner);
  pb_buf_field_message(&w->inner, SUMMARY_VALUE, &w->value);
  tboard_event_begin(w, step);
  pb_buf_field_message(&w->event, EVENT_SUMMARY, &w->inner);
  tboard_frame(w);
}

void tboard_writer_restart(tboard_writer *w, int64_t step) {
  if (!w) return;
  pb_buf_reset(&w->inner);
  pb_buf_field_varint(&w->inner, SESSION_LOG_STATUS, SESSION_LOG_START);
  tboard_event_begin(w, step);
  pb_buf_field_message(&w->event, EVENT_SESSION_LOG, &w->inner);
  tboard_frame(w);
}

int tboard_writer_flush(tboard_writer *w, char *err, size_t eb) {
  if (!w) return 0;
  if (w->records.failed) {
    snprintf(err, eb, "%.4000s: out of memory for its records", w->path);
    return -1;
  }
  struct stat st;
  if (fstat(w->fd, &st) != 0) {
    snprintf(err, eb, "%.4000s: %s", w->path, strerror(errno));
    return -1;
  }
  if (fs_write_fd(w->fd, w->path, w->records.data, w->records.len, err, eb) != 0) {
    if (ftruncate(w->fd, st.st_size) != 0) { /* err already says why the append failed */ }
    return -1;
  }
  pb_buf_reset(&w->records);
  if (fsync(w->fd) != 0) {
    snprintf(err, eb, "%.4000s: fsync: %s", w->path, strerror(errno));
    return -1;
  }
  return 0;
}

const char *tboard_writer_path(const tboard_writer *w) { return w ? w->path : ""; }

void tboard_writer_free(tboard_writer *w) {
  if (!w) return;
  close(w->fd);
  pb_buf_free(&w->records);
  pb_buf_free(&w->event);
  pb_buf_free(&w->inner);
  pb_buf_free(&w->value);
  free(w);
}
