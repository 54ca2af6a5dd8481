/* Collectives for data-parallel training: allreduce and broadcast over one of
 * the back ends (MPI_Allreduce, our own ring over the transport's
 * point-to-point, NCCL, in a TF_CONFIG cluster the same ring over TCP, shared
 * memory within a node, and hier: shared memory within nodes, the ring across).
 * Typed calls take element counts, never byte counts. A comm is used by one
 * thread at a time (the caller's); the library runs its own progress thread. */
#ifndef TFDIST_COLLECTIVE_COLL_H
#define TFDIST_COLLECTIVE_COLL_H

#include <stddef.h>
#include <stdint.h>

enum { COLL_OK = 0, COLL_ERR = -1, COLL_ETIMEOUT = -2 };

/* tcp: the ring (ring.c) over the TCP mesh of a TF_CONFIG cluster (cluster/).
 * shm: the ranks of one node reduce through one shared segment (shm.c).
 * hier: shm within each node, the ring across nodes on each rank's slice (hier.c). */
typedef enum {
  COLL_BACKEND_MPI = 0,
  COLL_BACKEND_RING = 1,
  COLL_BACKEND_NCCL = 2,
  COLL_BACKEND_TCP = 3,
  COLL_BACKEND_SHM = 4,
  COLL_BACKEND_HIER = 5
} coll_backend;

/* --compression: the bytes that cross nodes are 16-bit; every sum is in
 * fp32 (collective/codec.h has the formats, ring.c the rounding points). */
typedef enum { COLL_COMP_NONE = 0, COLL_COMP_BF16 = 1, COLL_COMP_FP16 = 2 } coll_compression;

struct coll_transport_ops;

/* Who this process is, and the transport its collectives run over (see
 * transport.h): MPI, started by coll_world_init, or a TF_CONFIG cluster's
 * mesh (cluster/), which starts no MPI. */
typedef struct {
  int rank, size;
  int local_rank, local_size; /* MPI: from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) */
  int node_first;             /* the lowest rank on this node: names the node (hier) */
  char host[256];
  int thread_level;           /* what MPI granted; 0 where MPI never started */
  int async;                  /* collectives may progress on a thread of their own */
  const struct coll_transport_ops *tp;
  void *tp_state;             /* the transport's, for the world's life */
} coll_world;

typedef struct {
  coll_backend backend;
  double timeout_s;  /* a collective without progress for this long fails with COLL_ETIMEOUT */
  void *stream;      /* NCCL: the cudaStream_t the caller orders work on */
  int device;        /* NCCL: CUDA device index */
  int64_t ring_chunk_bytes; /* ring: pipeline chunk per step and rank (0: default, 4 MiB;
                             * hier's ring across nodes 32 KiB) */
  /* the bytes that cross nodes are 16-bit; every sum is in fp32. The ring
   * (and tcp) compress every transfer; shm moves no bytes across nodes and
   * ignores it; mpi and nccl refuse it (coll_comm_init). */
  coll_compression compression;
} coll_config;

typedef struct coll_comm coll_comm;
typedef struct coll_request coll_request;

/* Starts MPI (MPI_Init_thread): for a process an MPI launcher started, and
 * for MPI programs (tests, benchmarks), which run as singletons without one. */
int coll_world_init(coll_world *w, int *argc, char ***argv, char *err, size_t err_bytes);
/* A world of this process alone, with no MPI: a run with no launcher. */
void coll_world_init_self(coll_world *w);
/* Whether an MPI launcher (mpirun; srun with PMI or PMIx) started this
 * process: only then may MPI start. Its rank and size as the launcher's
 * variables give them (Open MPI's first; size -1 where none says). */
int coll_world_launched(int *rank, int *size);
/* Gathers every rank's host and local rank; rows is (size) entries, owned by the caller. */
typedef struct {
  char host[64];
  int local_rank;
  char device[64];
} coll_rank_info;
int coll_world_gather_info(const coll_world *w, const coll_rank_info *mine, coll_rank_info *rows,
                           char *err, size_t err_bytes);
void coll_world_finalize(coll_world *w);
/* Only the CLI may call this: it ends every rank of the job. */
void coll_world_abort(const coll_world *w, int code);

/* The MPI library's own version line, e.g. "Open MPI v4.1.4, ...". */
void coll_mpi_version(char *out, size_t out_bytes);

/* Collective over the world: every rank calls it with the same config. */
int coll_comm_init(coll_comm **out, const coll_world *w, const coll_config *cfg, char *err,
                   size_t err_bytes);
void coll_comm_free(coll_comm *c);
/* A rank other than 0 that is about to end the job tells rank 0 why (0 when
 * the notice went out), so that rank 0, waiting in a collective, fails with
 * "rank R failed: msg" and can record it before the job ends. A no-op on
 * rank 0, on one rank, and after a failed collective (rank 0 knows). */
int coll_comm_report_failure(coll_comm *c, const char *msg);
/* A rank other than 0 stopped by signal sig passes it to rank 0, which alone
 * records the run as Canceled and ends the job (a launcher that signals one
 * rank only would otherwise leave the run going). 0 when the notice went out. */
int coll_comm_report_cancel(coll_comm *c, int sig);
/* Rank 0: the signal a peer relayed (its rank in *from), 0 when none. */
int coll_comm_peer_cancel(coll_comm *c, int *from);
/* The first error of this comm: one line that names the call, the ranks
 * concerned and, for a stall, which ranks never arrived. */
const char *coll_comm_error(coll_comm *c);
/* Whether a collective of this comm has failed (then every later one does). */
int coll_comm_failed(coll_comm *c);
coll_backend coll_comm_backend(const coll_comm *c);
const char *coll_backend_name(coll_backend b);
int coll_backend_parse(const char *name, coll_backend *out);
/* Whether this build has the back end (nccl needs CUDA). */
int coll_backend_available(coll_backend b);
const char *coll_compression_name(coll_compression k);
int coll_compression_parse(const char *name, coll_compression *out);
/* Whether back end b applies compression k (shm: never, nothing crosses a
 * node); -1 when it refuses it (mpi, nccl), with why in err. */
int coll_compression_applies(coll_backend b, coll_compression k, char *err, size_t err_bytes);
/* Whether this comm's allreduce sends 16-bit terms: compression on, 2+
 * ranks, and a back end whose bytes cross nodes (ring, tcp; hier with 2+
 * nodes). shm, and hier on one node, sum in fp32 and move nothing across
 * nodes. The same on every rank; what the fp16 scaler, the rank log and
 * run.json go by. */
int coll_comm_compresses(const coll_comm *c);
/* fp16: the power of two each term is multiplied by before it is rounded to
 * fp16, the sum divided by after (1 at first). The trainer sets it between
 * collectives; a request keeps the value it was started with. */
void coll_comm_set_fp16_scale(coll_comm *c, float scale);

/* In place; buf holds elems floats (device memory for NCCL, host otherwise).
 * The average is the sum divided by the number of ranks. */
int coll_allreduce_avg_f32(coll_comm *c, float *buf, int64_t elems);
/* Out of place when send != recv; send == recv is in place. The buffers must
 * not overlap otherwise. */
int coll_allreduce_sum_f32(coll_comm *c, const float *send, float *recv, int64_t elems);
/* Host doubles, for metrics; over the transport whatever the back end. */
int coll_allreduce_sum_f64(coll_comm *c, double *buf, int64_t elems);
/* Host memory, over the transport whatever the back end. */
int coll_broadcast_f32(coll_comm *c, float *buf, int64_t elems, int root);
int coll_broadcast_bytes(coll_comm *c, void *buf, int64_t bytes, int root);
int coll_barrier(coll_comm *c);

/* Collective (every rank at once, the same elems, no collective in flight):
 * host memory for elems floats that this comm reduces without copying it
 * (shm with 2+ ranks: every rank's buffer is its part of one shared
 * segment; an in-place allreduce of a span of it, the same span on every
 * rank, sums straight from the peers' buffers and writes the result into
 * every rank's; hier: the same within each node, its ring across nodes in
 * place on the slices). Owned by the comm until coll_comm_free; one per comm.
 * COLL_OK with *out NULL where the back end has none, or where no rank could
 * get one and the comm still works (err then says why): allocate your own. */
int coll_comm_buffer(coll_comm *c, int64_t elems, float **out, char *err, size_t err_bytes);

/* Non-blocking allreduces, for overlapping a layer's reduction with the rest
 * of backward. The buffers must stay untouched, and *req valid, until
 * coll_wait returns; coll_wait frees *req. Requests complete in the order
 * they were started. The ring and mpi back ends progress on a thread of
 * their own; nccl is ordered on the caller's stream (coll_wait makes the
 * stream wait, without blocking the host). */
int coll_iallreduce_avg_f32(coll_comm *c, float *buf, int64_t elems, coll_request **req);
int coll_iallreduce_sum_f32(coll_comm *c, const float *send, float *recv, int64_t elems,
                            coll_request **req);
int coll_wait(coll_comm *c, coll_request *req);
/* Whether req has finished, without blocking and without driving it (the
 * progress thread, or the device, does that). coll_wait must still follow. */
int coll_test(coll_comm *c, coll_request *req, int *done);

/* Timelines: fn is called by whichever thread ran an allreduce (the progress
 * thread, or the caller's), as it ends, with its buffer and its submit,
 * start and end times in monotonic seconds. nccl's, ordered on the stream,
 * are not seen. Set it before the first collective; NULL turns it off. */
typedef void (*coll_trace_fn)(void *ctx, const float *buf, int64_t elems, double submitted,
                              double began, double ended, int status);
void coll_comm_set_trace(coll_comm *c, coll_trace_fn fn, void *ctx);

/* Waits, bounded by the timeout, until every collective issued so far has
 * finished (nccl: on the device; others: a no-op once coll_wait returned). */
int coll_sync(coll_comm *c);

#endif
