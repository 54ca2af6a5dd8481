/* Chrome trace writer: see timeline.h. */
#include "timeline/timeline.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fsutil.h"

/* Events wait here between writes: the hot loop must not write(2) per span,
 * and a rank killed by its job's abort loses at most this much. */
#define TIMELINE_BUF_BYTES (64 * 1024)

struct timeline {
  FILE *f;
  char *buf; /* f's buffer; it goes to the file in whole lines only */
  pthread_mutex_t mu;
  int pid;
  double t0;
  int events;    /* written so far: all but the first start with ',' */
  int write_err; /* errno of the first failed write, 0 if none */
  char path[4200], part[4300];
};

/* JSON string body of s: names come from us, hosts from the system. */
static void timeline_escape(char *out, size_t n, const char *s) {
  size_t o = 0;
  for (; *s && o + 7 < n; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      out[o++] = '\\';
      out[o++] = (char)ch;
    } else if (ch < 0x20) {
      o += (size_t)snprintf(out + o, n - o, "\\u%04x", ch);
    } else {
      out[o++] = (char)ch;
    }
  }
  out[o] = '\0';
}

/* The caller holds mu. A kill leaves the .part cut at a write: flushing
 * before a line that would not fit keeps stdio from splitting it. */
static void timeline_drain(timeline *tl, size_t next_bytes) {
  if (__fpending(tl->f) + next_bytes > TIMELINE_BUF_BYTES && fflush(tl->f) != 0 &&
      !tl->write_err) {
    tl->write_err = errno ? errno : EIO;
  }
}

/* One event line; the caller holds mu. */
static void timeline_put(timeline *tl, const char *line) {
  timeline_drain(tl, strlen(line) + 2);
  if (fprintf(tl->f, "%s%s\n", tl->events ? "," : "", line) < 0 && !tl->write_err) {
    tl->write_err = errno ? errno : EIO;
  }
  tl->events++;
}

static void timeline_meta(timeline *tl, const char *what, int tid, const char *name) {
  char esc[512], line[768];
  timeline_escape(esc, sizeof esc, name);
  snprintf(line, sizeof line,
           "{\"name\":\"%s\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s\"}}", what,
           tl->pid, tid, esc);
  pthread_mutex_lock(&tl->mu);
  timeline_put(tl, line);
  pthread_mutex_unlock(&tl->mu);
}

int timeline_open(timeline **out, const char *path, int pid, const char *process_name, double t0,
                  char *err, size_t err_bytes) {
  timeline *tl = calloc(1, sizeof *tl);
  if (!tl) {
    snprintf(err, err_bytes, "%s: out of memory", path);
    return -1;
  }
  snprintf(tl->path, sizeof tl->path, "%s", path);
  snprintf(tl->part, sizeof tl->part, "%s.part", path);
  /* An earlier run's trace would be read in place of this run's .part if
   * this one dies (a .json wins over a .part); it is replaced at close anyway. */
  if (unlink(tl->path) != 0 && errno != ENOENT) {
    snprintf(err, err_bytes, "%.4200s: %s", tl->path, strerror(errno));
    free(tl);
    return -1;
  }
  tl->buf = malloc(TIMELINE_BUF_BYTES);
  int fd = tl->buf ? fs_open_nofollow(tl->part, O_WRONLY | O_TRUNC, err, err_bytes) : -1;
  tl->f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!tl->f) {
    if (fd >= 0) close(fd);
    if (!tl->buf || fd >= 0) {
      snprintf(err, err_bytes, "%.4200s: %s", tl->part, tl->buf ? strerror(errno) : "out of memory");
    }
    free(tl->buf);
    free(tl);
    return -1;
  }
  setvbuf(tl->f, tl->buf, _IOFBF, TIMELINE_BUF_BYTES); /* with NULL, glibc takes 4 KiB */
  pthread_mutex_init(&tl->mu, NULL);
  tl->pid = pid;
  tl->t0 = t0;
  fputs("[\n", tl->f);
  timeline_meta(tl, "process_name", 0, process_name);
  *out = tl;
  return 0;
}

void timeline_thread_name(timeline *tl, int tid, const char *name) {
  if (tl) timeline_meta(tl, "thread_name", tid, name);
}

void timeline_span(timeline *tl, int tid, const char *name, double begin, double end,
                   const char *args) {
  if (!tl) return;
  char line[1024];
  /* microseconds with ns digits: a step's phases are a few us long */
  snprintf(line, sizeof line,
           "{\"name\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":%d,\"tid\":%d%s%s}",
           name, (begin - tl->t0) * 1e6, (end - begin) * 1e6, tl->pid, tid,
           args ? ",\"args\":" : "", args ? args : "");
  pthread_mutex_lock(&tl->mu);
  timeline_put(tl, line);
  pthread_mutex_unlock(&tl->mu);
}

int timeline_close(timeline *tl, char *err, size_t err_bytes) {
  if (!tl) return 0;
  int rc = 0;
  fputs("]\n", tl->f);
  if (fflush(tl->f) != 0 && !tl->write_err) tl->write_err = errno ? errno : EIO;
  if (tl->write_err) {
    snprintf(err, err_bytes, "%.4200s: %s", tl->part, strerror(tl->write_err));
    rc = -1;
  }
  if (rc == 0) rc = fs_commit(tl->part, tl->path, err, err_bytes);
  if (fclose(tl->f) != 0 && rc == 0) {
    snprintf(err, err_bytes, "%.4200s: %s", tl->part, strerror(errno));
    rc = -1;
  }
  pthread_mutex_destroy(&tl->mu);
  free(tl->buf);
  free(tl);
  return rc;
}

void timeline_flush(timeline *tl) {
  if (!tl) return;
  pthread_mutex_lock(&tl->mu);
  fflush(tl->f);
  pthread_mutex_unlock(&tl->mu);
}

void timeline_free(timeline *tl) {
  if (!tl) return;
  fflush(tl->f);
  fclose(tl->f);
  pthread_mutex_destroy(&tl->mu);
  free(tl->buf);
  free(tl);
}
