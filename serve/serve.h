/* `tfdist serve`'s endpoints (SPEC "Deployment (scoring)"), apart from the
 * sockets: the Azure-style GET / and POST /score, and TF Serving's REST
 * predict, status and metadata, over one model name and its versions. */
#ifndef TFDIST_SERVE_SERVE_H
#define TFDIST_SERVE_SERVE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct serve_version serve_version;

typedef struct {
  char name[160];
  serve_version **versions; /* newest first */
  int count, cap;
  int default_index;       /* the version for /score and an unversioned :predict */
  long long default_version;
  int max_sessions;        /* per version: one per worker thread */
  char root[4096];         /* the registry, when every version of a name is served */
  int watch;               /* serve_models_refresh looks for new versions */
  long long refused;       /* the newest version that failed to load: not tried again */
  pthread_rwlock_t lock;   /* versions[], count, default_*: refresh writes, requests read */
} serve_models;

/* ref: an existing path (model.h5, checkpoint, folder) served as name
 * version 1; else registry NAME (every version, newest the default) or
 * NAME:VERSION (only it). Every file is loaded once here, so a bad one fails
 * at start-up; registry files are checked against their sha256. */
int serve_models_open(serve_models *m, const char *ref, const char *registry_flag,
                      const char *name, int threads, char *err, size_t err_bytes);
void serve_models_close(serve_models *m);
/* Registry NAME only: loads the versions registered since the last look
 * (sha256-checked), and the newest becomes the default. Their numbers go
 * to added ("3,4"). 1 when some were added, 0 when none, -1 with err when
 * one failed to load (it is not tried again; the served set is unchanged). */
int serve_models_refresh(serve_models *m, char *added, size_t added_bytes, char *err, size_t eb);
/* "1,2" newest first, for the start-up line. */
void serve_models_describe(const serve_models *m, char *out, size_t out_bytes);

typedef struct {
  int status;
  const char *content_type;
  const char *allow; /* for 405 */
  char *body;        /* malloc'd */
  size_t len;
} serve_reply;

/* Thread-safe, also against serve_models_refresh: each call takes a free
 * inference session of its version. */
void serve_handle(serve_models *m, const char *method, const char *path, const char *body,
                  size_t len, serve_reply *out);
/* {"error": msg} with status. */
void serve_reply_error(serve_reply *out, int status, const char *msg);
void serve_reply_free(serve_reply *out);

#endif
