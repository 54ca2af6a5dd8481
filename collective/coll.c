/* The collective interface over MPI_Allreduce. Other back ends plug in here. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collective/coll.h"

struct coll_request {
  MPI_Request req;
  float *buf;
  int64_t elems;
};

struct coll_comm {
  coll_config cfg;
  MPI_Comm comm;
  int rank, size;
  char err[512];
};

#define COLL_MPI_CHECK(c, call)                                                              \
  do {                                                                                       \
    int coll_rc_ = (call);                                                                   \
    if (coll_rc_ != MPI_SUCCESS) {                                                           \
      char coll_msg_[MPI_MAX_ERROR_STRING];                                                  \
      int coll_len_ = 0;                                                                     \
      MPI_Error_string(coll_rc_, coll_msg_, &coll_len_);                                     \
      snprintf((c)->err, sizeof (c)->err, "rank %d: %s failed at %s:%d: %s", (c)->rank,     \
               #call, __FILE__, __LINE__, coll_msg_);                                        \
      fprintf(stderr, "tfdist: %s\n", (c)->err);                                             \
      return COLL_ERR;                                                                       \
    }                                                                                        \
  } while (0)

const char *coll_backend_name(coll_backend b) {
  switch (b) {
  case COLL_BACKEND_MPI: return "mpi";
  case COLL_BACKEND_RING: return "ring";
  case COLL_BACKEND_NCCL: return "nccl";
  }
  return "?";
}

int coll_backend_parse(const char *name, coll_backend *out) {
  for (int b = COLL_BACKEND_MPI; b <= COLL_BACKEND_NCCL; b++) {
    if (strcmp(name, coll_backend_name((coll_backend)b)) == 0) {
      *out = (coll_backend)b;
      return 0;
    }
  }
  return -1;
}

int coll_comm_init(coll_comm **out, const coll_world *w, const coll_config *cfg, char *err,
                   size_t err_bytes) {
  coll_comm *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  c->cfg = *cfg;
  c->rank = w->rank;
  c->size = w->size;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &c->comm) != MPI_SUCCESS) {
    snprintf(err, err_bytes, "collective: MPI_Comm_dup failed");
    free(c);
    return COLL_ERR;
  }
  MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
  *out = c;
  return COLL_OK;
}

void coll_comm_free(coll_comm *c) {
  if (!c) return;
  MPI_Comm_free(&c->comm);
  free(c);
}

const char *coll_comm_error(const coll_comm *c) { return c->err; }
coll_backend coll_comm_backend(const coll_comm *c) { return c->cfg.backend; }

int coll_allreduce_sum_f32(coll_comm *c, const float *send, float *recv, int64_t elems) {
  const void *s = send == recv ? MPI_IN_PLACE : (const void *)send;
  COLL_MPI_CHECK(c, MPI_Allreduce(s, recv, (int)elems, MPI_FLOAT, MPI_SUM, c->comm));
  return COLL_OK;
}

int coll_allreduce_avg_f32(coll_comm *c, float *buf, int64_t elems) {
  if (coll_allreduce_sum_f32(c, buf, buf, elems) != COLL_OK) return COLL_ERR;
  const float inv = 1.0f / (float)c->size;
  for (int64_t i = 0; i < elems; i++) buf[i] *= inv;
  return COLL_OK;
}

int coll_allreduce_sum_f64(coll_comm *c, double *buf, int64_t elems) {
  COLL_MPI_CHECK(c, MPI_Allreduce(MPI_IN_PLACE, buf, (int)elems, MPI_DOUBLE, MPI_SUM, c->comm));
  return COLL_OK;
}

int coll_broadcast_f32(coll_comm *c, float *buf, int64_t elems, int root) {
  COLL_MPI_CHECK(c, MPI_Bcast(buf, (int)elems, MPI_FLOAT, root, c->comm));
  return COLL_OK;
}

int coll_broadcast_bytes(coll_comm *c, void *buf, int64_t bytes, int root) {
  COLL_MPI_CHECK(c, MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, c->comm));
  return COLL_OK;
}

int coll_barrier(coll_comm *c) {
  COLL_MPI_CHECK(c, MPI_Barrier(c->comm));
  return COLL_OK;
}

int coll_iallreduce_avg_f32(coll_comm *c, float *buf, int64_t elems, coll_request **req) {
  coll_request *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(c->err, sizeof c->err, "collective: out of memory");
    return COLL_ERR;
  }
  r->buf = buf;
  r->elems = elems;
  int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)elems, MPI_FLOAT, MPI_SUM, c->comm, &r->req);
  if (rc != MPI_SUCCESS) {
    free(r);
    COLL_MPI_CHECK(c, rc);
  }
  *req = r;
  return COLL_OK;
}

int coll_wait(coll_comm *c, coll_request *req) {
  int rc = MPI_Wait(&req->req, MPI_STATUS_IGNORE);
  float *buf = req->buf;
  int64_t elems = req->elems;
  free(req);
  COLL_MPI_CHECK(c, rc);
  const float inv = 1.0f / (float)c->size;
  for (int64_t i = 0; i < elems; i++) buf[i] *= inv;
  return COLL_OK;
}
