/* The ring back end (Baidu/Horovod): a reduce-scatter then an allgather
 * over the transport's point to point (MPI, or a TF_CONFIG cluster's TCP
 * mesh: the tcp back end is this ring), each of n-1 steps. The buffer is cut into n
 * segments, one per rank, and each segment into K chunks; chunk k of every
 * segment forms an independent ring, and the K rings run at once, so the
 * reduction of one chunk overlaps the transfer of the others (pipelining).
 *
 * Fixed reduction order: segment j is summed as ((x_j + x_j+1) + x_j+2)...
 * around the ring, whatever the timing, and then copied to every rank; so
 * the result is bit-identical on every rank and from run to run (for a given
 * number of ranks, count and chunk size). The ring runs over the comm's
 * ranks, or over a list of them (coll_ring_open: hier's ring across nodes).
 *
 * --compression bf16|fp16: every transfer carries 16-bit codes (codec.h)
 * and every sum is in fp32. Segment j = [elems*j/n, elems*(j+1)/n) starts at
 * rank j; with R() the round trip through the code (fp16: R(v) =
 * fp16(v*S)/S, S the request's scale), each element of it is
 *   p_1 = x_j;  p_m = fl(x_(j+m-1 mod n) + R(p_(m-1))), m = 2..n
 *   (the receiving rank adds the decoded partial sum to its own fp32 term);
 *   s = p_n, or fl(p_n / n) for an average (in fp32, on the segment's owner);
 *   result = R(s) on every rank, the owner included (it keeps the value of
 *   the code it sends round the allgather, not its unrounded sum), so the
 *   bits agree everywhere. The allgather forwards codes as received.
 * So each rank's term is rounded once where it enters (p_1) or joins a
 * partial sum that is rounded as it leaves, and the result once more; the
 * rounding points do not depend on the chunk size. One rank sends nothing
 * and rounds nothing. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fp16_scale.h"
#include "collective/codec.h"
#include "collective/coll_internal.h"

/* On one host each chunk is a rendezvous that both sides must progress,
 * and the receiver's copy and reduction run one after the other anyway:
 * fewer, larger chunks measured best (1 MiB lost 10-25% at 1-4 MB on 2
 * ranks). Across hosts smaller chunks overlap the wire with the adds. */
#define RING_DEFAULT_CHUNK_BYTES ((int64_t)4 * 1024 * 1024)
#define RING_MAX_CHUNKS 4096 /* chunk index is the tag; MPI guarantees 32767 */

typedef struct coll_ring {
  const int *ranks;        /* (n) the ring's ranks in order, the caller's; NULL: 0..n-1 */
  int n, me;               /* ranks in the ring, this rank's place */
  int64_t chunk_elems;     /* target chunk size */
  float *tmp;              /* (K * cap) received partial sums, one slot per chunk */
  int64_t tmp_elems;
  uint16_t *wire;          /* --compression: (elems) codes, at each element's own offset */
  int64_t wire_elems;
  void *req;               /* (2 * K) transport slots: send, recv per chunk */
  int *step, *pending;     /* (K) current step; requests still open in it */
  int chunks_cap;
} ring_comm;

typedef struct {
  ring_comm *rc;
  int n, r, left, right;   /* r: place in the ring; left, right: comm ranks */
  int K;
  int64_t cap;             /* elements in the largest chunk */
  int chunks_left;
  coll_compression comp;   /* COLL_COMP_NONE: fp32 transfers */
  float scale;             /* fp16: the request's scale */
} ring_req;

static int64_t ring_seg_lo(int64_t elems, int n, int j) { return elems * j / n; }

/* Chunk k of segment j (j taken mod n): [*lo, *lo + *len). */
static void ring_piece(const coll_request *r, const ring_req *q, int j, int k, int64_t *lo,
                       int64_t *len) {
  j = ((j % q->n) + q->n) % q->n;
  const int64_t s0 = ring_seg_lo(r->elems, q->n, j), s1 = ring_seg_lo(r->elems, q->n, j + 1);
  const int64_t seg = s1 - s0;
  *lo = s0 + seg * k / q->K;
  *len = s0 + seg * (k + 1) / q->K - *lo;
}

int coll_ring_open(coll_comm *c, coll_ring **out, const int *ranks, int n, int me,
                   int64_t chunk_bytes) {
  ring_comm *rc = calloc(1, sizeof *rc);
  *out = rc;
  if (!rc) return COLL_ERR;
  rc->ranks = ranks;
  rc->n = n;
  rc->me = me;
  rc->chunk_elems = (c->cfg.ring_chunk_bytes > 0 ? c->cfg.ring_chunk_bytes : chunk_bytes) /
                    (int64_t)sizeof(float);
  if (rc->chunk_elems < 1) rc->chunk_elems = 1;
  return COLL_OK;
}

static int ring_init(coll_comm *c, char *err, size_t err_bytes) {
  ring_comm *rc = NULL;
  if (coll_ring_open(c, &rc, NULL, c->size, c->rank, RING_DEFAULT_CHUNK_BYTES) != COLL_OK) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  c->impl = rc;
  return COLL_OK;
}

static int ring_start(coll_comm *c, coll_request *r) { return coll_ring_start(c, c->impl, r); }

static void ring_free(coll_comm *c) {
  coll_ring_close(c, c->impl);
  c->impl = NULL;
}

void coll_ring_close(coll_comm *c, coll_ring *rc) {
  if (!rc) return;
  /* After a timeout, sends may still read tmp or wire: the job is ending, leave them. */
  if (!coll_comm_failed(c)) {
    free(rc->tmp);
    free(rc->wire);
  }
  free(rc->req);
  free(rc->step);
  free(rc->pending);
  free(rc);
}

static int ring_reserve_wire(coll_comm *c, ring_comm *rc, int64_t elems) {
  if (elems <= rc->wire_elems) return COLL_OK;
  free(rc->wire);
  rc->wire = malloc((size_t)elems * sizeof(uint16_t));
  rc->wire_elems = rc->wire ? elems : 0;
  if (rc->wire) return COLL_OK;
  coll_set_error(c, "ring allreduce: out of memory (%lld 16-bit codes)", (long long)elems);
  return COLL_ERR;
}

static int ring_reserve(coll_comm *c, ring_comm *rc, int K, int64_t tmp_elems) {
  if (K > rc->chunks_cap) {
    free(rc->req);
    free(rc->step);
    free(rc->pending);
    rc->req = malloc((size_t)(2 * K) * c->tp->p2p_req_bytes);
    rc->step = malloc((size_t)K * sizeof *rc->step);
    rc->pending = malloc((size_t)K * sizeof *rc->pending);
    rc->chunks_cap = rc->req && rc->step && rc->pending ? K : 0;
  }
  if (tmp_elems > rc->tmp_elems) {
    free(rc->tmp);
    rc->tmp = malloc((size_t)tmp_elems * sizeof(float));
    rc->tmp_elems = rc->tmp ? tmp_elems : 0;
  }
  if (rc->chunks_cap < K || rc->tmp_elems < tmp_elems) {
    coll_set_error(c, "ring allreduce: out of memory (%lld floats of staging)", (long long)tmp_elems);
    return COLL_ERR;
  }
  return COLL_OK;
}

/* Posts chunk k's receive then send for its current step. */
static int ring_post(coll_comm *c, coll_request *r, ring_req *q, int k) {
  ring_comm *rc = q->rc;
  const int s = rc->step[k], n = q->n, rs = s < n - 1;
  const int t = s - (n - 1);
  const int send_seg = rs ? q->r - s : q->r + 1 - t, recv_seg = rs ? q->r - s - 1 : q->r - t;
  int64_t slo, slen, rlo, rlen;
  ring_piece(r, q, send_seg, k, &slo, &slen);
  ring_piece(r, q, recv_seg, k, &rlo, &rlen);
  const float *sbuf = (s == 0 ? r->send : r->recv) + slo;
  const void *out = sbuf;
  void *in = rs ? rc->tmp + (int64_t)k * q->cap : r->recv + rlo;
  coll_wire type = COLL_WIRE_F32;
  if (q->comp != COLL_COMP_NONE) {
    /* the allgather's codes are in place already: made by ring_fold, or received */
    if (rs) coll_codec_encode(q->comp, rc->wire + slo, sbuf, slen, q->scale);
    out = rc->wire + slo;
    in = rc->wire + rlo;
    type = COLL_WIRE_U16;
  }
  if (c->tp->irecv(c, rc->req, 2 * k + 1, in, rlen, type, q->left, k) != COLL_OK ||
      c->tp->isend(c, rc->req, 2 * k, out, slen, type, q->right, k) != COLL_OK) {
    return COLL_ERR;
  }
  rc->pending[k] = 2;
  return COLL_OK;
}

static void ring_add(float *restrict out, const float *restrict b, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] += b[i];
}

static void ring_add_to(float *restrict out, const float *restrict a, const float *restrict b,
                        int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void ring_scale(float *restrict out, int64_t n, float div) {
  for (int64_t i = 0; i < n; i++) out[i] /= div;
}

/* Reduce-scatter step s of chunk k received: fold the partial sum in; the
 * last step leaves this rank's own segment complete (averaged if asked). */
static void ring_fold(coll_comm *c, coll_request *r, ring_req *q, int k) {
  (void)c;
  ring_comm *rc = q->rc;
  const int s = rc->step[k];
  int64_t lo, len;
  ring_piece(r, q, q->r - s - 1, k, &lo, &len);
  const float *part = rc->tmp + (int64_t)k * q->cap;
  if (q->comp != COLL_COMP_NONE) {
    coll_codec_add(q->comp, r->recv + lo, r->send + lo,
                   rc->wire + lo, len, q->scale);
  } else if (r->send == r->recv) {
    ring_add(r->recv + lo, part, len);
  } else {
    ring_add_to(r->recv + lo, r->send + lo, part, len);
  }
  if (s == q->n - 2 && r->avg) ring_scale(r->recv + lo, len, (float)q->n);
  /* the owner keeps what its code says, as its receivers will */
  if (s == q->n - 2 && q->comp != COLL_COMP_NONE) {
    coll_codec_round(q->comp, rc->wire + lo, r->recv + lo, len, q->scale);
  }
}

/* Allgather step of chunk k received (compressed): its codes, decoded. */
static void ring_unpack(coll_request *r, ring_req *q, int k) {
  ring_comm *rc = q->rc;
  int64_t lo, len;
  ring_piece(r, q, q->r - (rc->step[k] - (q->n - 1)), k, &lo, &len);
  coll_codec_decode(q->comp, r->recv + lo, rc->wire + lo, len, q->scale);
}

/* --compression: the request's format and scale (fp16: a power of two). */
static int ring_compression(coll_comm *c, coll_request *r, ring_req *q) {
  q->comp = c->cfg.compression;
  q->scale = q->comp == COLL_COMP_FP16 ? r->fp16_scale : 1.0f;
  if (!fp16_scale_valid(q->scale)) {
    coll_set_error(c, "ring allreduce: fp16 scale %g is not a power of two in 2^%d..2^%d",
                   (double)q->scale, FP16_SCALE_MIN_LOG2, FP16_SCALE_MAX_LOG2);
    return COLL_ERR;
  }
  return q->comp == COLL_COMP_NONE ? COLL_OK : ring_reserve_wire(c, q->rc, r->elems);
}

int coll_ring_start(coll_comm *c, coll_ring *rc, coll_request *r) {
  ring_req *q = calloc(1, sizeof *q);
  if (!q) {
    coll_set_error(c, "collective: out of memory");
    return COLL_ERR;
  }
  r->impl = q;
  q->rc = rc;
  q->n = rc->n;
  q->r = rc->me;
  q->left = (rc->me + rc->n - 1) % rc->n;
  q->right = (rc->me + 1) % rc->n;
  if (rc->ranks) {
    q->left = rc->ranks[q->left];
    q->right = rc->ranks[q->right];
  }
  if (q->n == 1 || r->elems == 0) {
    if (r->send != r->recv && r->elems) memcpy(r->recv, r->send, (size_t)r->elems * sizeof(float));
    return COLL_OK; /* the average of one rank is itself */
  }
  const int64_t seg_max = (r->elems + q->n - 1) / q->n;
  int64_t K = (seg_max + rc->chunk_elems - 1) / rc->chunk_elems;
  if (K < 1) K = 1;
  if (K > RING_MAX_CHUNKS) K = RING_MAX_CHUNKS;
  const int64_t cap = (seg_max + K - 1) / K + 1;
  if (cap > INT_MAX) {
    coll_set_error(c, "ring allreduce: %lld elements is too many", (long long)r->elems);
    return COLL_ERR;
  }
  if (ring_compression(c, r, q) != COLL_OK ||
      ring_reserve(c, rc, (int)K, q->comp == COLL_COMP_NONE ? K * cap : 0) != COLL_OK) {
    return COLL_ERR;
  }
  q->K = (int)K; /* only now may ring_abandon look at rc->req */
  q->cap = cap;
  q->chunks_left = q->K;
  c->tp->p2p_clear(rc->req, 2 * q->K);
  for (int k = 0; k < q->K; k++) rc->step[k] = 0;
  for (int k = 0; k < q->K; k++) {
    if (ring_post(c, r, q, k) != COLL_OK) return COLL_ERR;
  }
  return COLL_OK;
}

/* One request of chunk k finished; a finished receive of the reduce-scatter
 * is folded in; with both done the chunk moves to its next step. */
static int ring_complete(coll_comm *c, coll_request *r, ring_req *q, int idx) {
  ring_comm *rc = q->rc;
  const int k = idx / 2;
  if ((idx & 1) && rc->step[k] < q->n - 1) ring_fold(c, r, q, k);
  else if ((idx & 1) && q->comp != COLL_COMP_NONE) ring_unpack(r, q, k);
  if (--rc->pending[k] > 0) return COLL_OK;
  if (++rc->step[k] < 2 * (q->n - 1)) return ring_post(c, r, q, k);
  q->chunks_left--;
  return COLL_OK;
}

int coll_ring_test(coll_comm *c, coll_request *r, int *done) {
  ring_req *q = r->impl;
  ring_comm *rc = q->rc;
  *done = 0;
  if (q->n > 1 && r->elems > 0 && q->chunks_left > 0) {
    int outcount = 0;
    int idx[2 * RING_MAX_CHUNKS];
    if (c->tp->p2p_testsome(c, rc->req, 2 * q->K, &outcount, idx) != COLL_OK) return COLL_ERR;
    if (outcount == 0) return COLL_OK;
    coll_req_touch(r);
    for (int i = 0; i < outcount; i++) {
      if (ring_complete(c, r, q, idx[i]) != COLL_OK) return COLL_ERR;
    }
    if (q->chunks_left > 0) return COLL_OK;
  }
  free(q);
  r->impl = NULL;
  *done = 1;
  return COLL_OK;
}

/* Receives are cancelled; sends cannot be, and keep reading the buffers
 * (the caller's and tmp) until the job ends. */
void coll_ring_abandon(coll_comm *c, coll_request *r) {
  ring_req *q = r->impl;
  if (!q) return;
  ring_comm *rc = q->rc;
  for (int k = 0; q->n > 1 && k < q->K; k++) {
    c->tp->p2p_abandon(c, rc->req, 2 * k + 1, 1);
    c->tp->p2p_abandon(c, rc->req, 2 * k, 0);
  }
  free(q);
  r->impl = NULL;
}

const coll_backend_ops coll_ring_ops = {
  .name = "ring",
  .threaded = 1,
  .init = ring_init,
  .free = ring_free,
  .start = ring_start,
  .test = coll_ring_test,
  .abandon = coll_ring_abandon,
};
