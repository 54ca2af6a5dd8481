/* Shared-memory groups (shm_group.h): the ranks of one node and one segment,
 * used by the shm back end here (one group of every rank) and by hier.c
 * (one group per node). The shm back end: the ranks of one node reduce
 * through one POSIX shared segment, in shm_node.c's steps (hier's too).
 * Per chunk, every rank copies its piece into its own slot; after a barrier
 * each rank sums its slice of the chunk over every rank's slot, in rank
 * order, into the result area; after a second barrier every rank copies the
 * whole result out. So the sum of element i is always ((x0 + x1) + x2) +
 * ..., bit-identical on every rank and from run to run.
 *
 * Zero copy: coll_comm_buffer gives each rank its part of a second segment
 * (the trainer's gradients, which backward writes straight into). An
 * in-place allreduce of a span of it, the same span on every rank, copies
 * nothing: a barrier, each rank sums its slice of every chunk of the span
 * over every rank's part in the same order and stores it into every part, a
 * barrier. Same bits; ranks that disagree on the path fail, named.
 *
 * Barriers are counters in shared memory, one cache line per rank, polled
 * through the progress loop (progress.c): nothing blocks, the --timeout
 * watchdog sees a stalled peer, and a peer whose pid is gone is named at once.
 * A segment is named per job and group (its first member's pid and a random
 * tag, exchanged by an allgather over the comm's transport), unlinked as
 * soon as every rank has mapped it; a start removes what killed jobs left. */
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "collective/shm_group.h"

#define SHM_PREFIX "tfdist-shm."
#define SHM_MAGIC 0x74666473686d3031ULL /* "tfdshm01" */
#define SHM_LINE 64
#define SHM_PID_CHECK_S 0.01 /* how often a waiting rank looks for dead peers */

struct shm_slot {
  _Alignas(SHM_LINE) int64_t arrive; /* barriers this rank has reached */
  int32_t pid;
  int32_t mapped;
  int32_t failed;                    /* this rank gave up: why says why */
  int64_t zc_off, zc_elems;          /* its request's span of the buffer; -1: copied */
  char why[180];
};

typedef struct {
  uint64_t magic;
  int32_t ranks;
  int64_t chunk_elems;
} shm_head;

typedef struct {
  shm_group g;       /* every rank of the comm */
  shm_parts buf;     /* coll_comm_buffer's segment: a part per rank */
  shm_node steps;    /* the steps over g (shm_node.c), no cross step */
} shm_comm;

/* ---- naming, stale segments ---- */

/* A segment of ours whose creator (rank 0 of its job) is gone. */
static int shm_name_is_stale(const char *name) {
  if (strncmp(name, SHM_PREFIX, strlen(SHM_PREFIX)) != 0) return 0;
  char *end = NULL;
  long pid = strtol(name + strlen(SHM_PREFIX), &end, 10);
  if (!end || *end != '.' || pid <= 0) return 0;
  return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* What killed jobs left in /dev/shm (between creation and unlink). */
static void shm_sweep_stale(void) {
  DIR *d = opendir("/dev/shm");
  if (!d) return;
  struct dirent *e;
  struct stat st;
  char path[300];
  while ((e = readdir(d)) != NULL) {
    if (!shm_name_is_stale(e->d_name)) continue;
    snprintf(path, sizeof path, "/dev/shm/%s", e->d_name);
    if (stat(path, &st) == 0 && st.st_uid == getuid()) {
      char name[300];
      snprintf(name, sizeof name, "/%s", e->d_name);
      shm_unlink(name);
    }
  }
  closedir(d);
}

static size_t shm_round(size_t b) { return (b + 4095) & ~(size_t)4095; }

static size_t shm_bytes(int ranks, int64_t chunk, size_t *head_bytes) {
  *head_bytes = shm_round(SHM_LINE + (size_t)ranks * sizeof(shm_slot));
  return *head_bytes + (size_t)(ranks + 1) * (size_t)chunk * sizeof(float);
}

/* Rank 0: creates and sizes the segment; name gets its name. */
static int shm_create(char *name, size_t name_bytes, unsigned long *tag_out, size_t bytes,
                      const char *what, char *err, size_t err_bytes) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  unsigned long tag = (unsigned long)ts.tv_nsec ^ ((unsigned long)ts.tv_sec << 20) ^
                      ((unsigned long)getpid() << 8);
  for (int tries = 0; tries < 16; tries++, tag = tag * 6364136223846793005UL + 1442695040888963407UL) {
    *tag_out = tag & 0xffffffffUL;
    snprintf(name, name_bytes, "/" SHM_PREFIX "%ld.%08lx", (long)getpid(), *tag_out);
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 && errno == EEXIST) continue;
    if (fd < 0) {
      snprintf(err, err_bytes, "--allreduce %s: shm_open(%s): %s", what, name, strerror(errno));
      return -1;
    }
    /* posix_fallocate, not ftruncate alone: a full /dev/shm is an error
     * here, not a SIGBUS at the first touch. */
    int rc = ftruncate(fd, (off_t)bytes) != 0 ? errno : posix_fallocate(fd, 0, (off_t)bytes);
    close(fd);
    if (rc != 0) {
      shm_unlink(name);
      snprintf(err, err_bytes, "--allreduce %s: sizing %s to %zu bytes: %s", what, name, bytes,
               strerror(rc));
      return -1;
    }
    return 0;
  }
  snprintf(err, err_bytes, "--allreduce %s: no free segment name", what);
  return -1;
}

static int shm_map(shm_group *s, const char *name, size_t bytes, const char *what, char *err,
                   size_t err_bytes) {
  int fd = shm_open(name, O_RDWR, 0600);
  if (fd < 0) {
    snprintf(err, err_bytes, "--allreduce %s: shm_open(%s): %s", what, name, strerror(errno));
    return -1;
  }
  struct stat st = {0}; /* a segment shorter than this rank's layout faults on first touch */
  if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != (uint64_t)bytes) {
    snprintf(err, err_bytes, "--allreduce %s: %s holds %lld bytes where this rank needs %zu "
             "(ranks disagree on its size)", what, name, (long long)st.st_size, bytes);
    close(fd);
    return -1;
  }
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    snprintf(err, err_bytes, "--allreduce %s: mmap(%s, %zu bytes): %s", what, name, bytes,
             strerror(errno));
    return -1;
  }
  s->base = p;
  s->bytes = bytes;
  return 0;
}

/* ---- a group's set-up: collective over the comm's transport ---- */

/* Every rank learns whether every rank got this far (0 on all of them). */
static int shm_agree(coll_comm *c, int failed) {
  double f = failed ? 1.0 : 0.0;
  if (c->tp->sum_f64(c, 0, &f, 1) != COLL_OK) return -1;
  return f == 0.0 ? 0 : -1;
}

static int shm_member_rank(const shm_group *g, int m) { return g->ranks ? g->ranks[m] : m; }

/* Lays the group out on a mapped segment. */
static void shm_group_layout(shm_group *g, size_t head_bytes) {
  g->slot = (shm_slot *)((char *)g->base + SHM_LINE);
  g->data = (float *)((char *)g->base + head_bytes);
  g->result = g->data + (int64_t)g->n * g->chunk;
  if (g->me == 0) {
    shm_head *h = g->base;
    h->magic = SHM_MAGIC;
    h->ranks = g->n;
    h->chunk_elems = g->chunk;
  }
  g->slot[g->me].pid = (int32_t)getpid();
  __atomic_store_n(&g->slot[g->me].mapped, 1, __ATOMIC_RELEASE);
}

/* Every group's member 0 publishes its segment's name as (pid, tag + 1) in
 * an allgather over the comm (the other members' rows are 0); the other
 * members read their member 0's row. 0 on success; name[0] == '\0' when
 * member 0 could not create it. */
static int shm_names_exchange(coll_comm *c, const shm_group *g, char *name, size_t name_bytes,
                              unsigned long tag) {
  int64_t mine[2] = {0, 0};
  int64_t *rows = calloc((size_t)c->size * 2, sizeof *rows);
  if (!rows) return -1;
  if (g->me == 0 && name[0]) {
    mine[0] = (int64_t)getpid();
    mine[1] = (int64_t)tag + 1;
  }
  int rc = c->tp->allgather(c, 0, mine, rows, (int64_t)sizeof mine);
  if (rc == COLL_OK && g->me != 0) {
    const int first = shm_member_rank(g, 0);
    const int64_t pid = rows[2 * first], t = rows[2 * first + 1];
    name[0] = '\0';
    if (t >= 1 && t <= ((int64_t)1 << 32) && pid >= 1 && pid <= INT_MAX) {
      snprintf(name, name_bytes, "/" SHM_PREFIX "%ld.%08lx", (long)pid, (unsigned long)(t - 1));
    }
  }
  free(rows);
  return rc == COLL_OK ? 0 : -1;
}

/* Member 0 of each group creates a segment of bytes and every member maps
 * it: *base, or *failed with why in my_err. name keeps the segment's name
 * for shm_share_end. Collective over the comm; COLL_ERR when the comm's
 * exchange itself failed (err says). A group of one maps private memory. */
static int shm_share_begin(coll_comm *c, const shm_group *g, size_t bytes, void **base,
                           char *name, size_t name_bytes, int *failed, char *my_err,
                           size_t my_err_bytes, char *err, size_t err_bytes) {
  const char *what = coll_backend_name(c->cfg.backend);
  unsigned long tag = 0;
  *base = NULL;
  *failed = 0;
  name[0] = '\0';
  if (g->n == 1) { /* nothing to share: private memory, the same layout */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      snprintf(my_err, my_err_bytes, "--allreduce %s: mmap(%zu bytes): %s", what, bytes,
               strerror(errno));
      *failed = 1;
    } else {
      *base = p;
    }
  } else if (g->me == 0) {
    shm_sweep_stale();
    if (shm_create(name, name_bytes, &tag, bytes, what, my_err, my_err_bytes) != 0) name[0] = '\0';
  }
  /* Every rank joins the exchange, a group of one too: it is over the comm. */
  if (shm_names_exchange(c, g, name, name_bytes, tag) != 0) {
    if (g->n > 1 && g->me == 0 && name[0]) shm_unlink(name);
    if (*base) munmap(*base, bytes);
    *base = NULL;
    snprintf(err, err_bytes, "--allreduce %s: %s", what, coll_comm_error(c));
    return COLL_ERR;
  }
  if (g->n > 1 && !name[0]) {
    if (!my_err[0]) {
      snprintf(my_err, my_err_bytes, "--allreduce %s: rank %d could not create the segment",
               what, shm_member_rank(g, 0));
    }
    *failed = 1;
  } else if (g->n > 1) {
    shm_group m = { 0 };
    if (shm_map(&m, name, bytes, what, my_err, my_err_bytes) != 0) *failed = 1;
    *base = m.base;
  }
  return COLL_OK;
}

/* Every member has mapped it (or failed): the name can go, so a killed job
 * leaves nothing behind. COLL_ERR (and *base unmapped) unless all agree. */
static int shm_share_end(coll_comm *c, const shm_group *g, size_t bytes, void **base,
                         const char *name, int failed, const char *my_err, char *err,
                         size_t err_bytes) {
  int agreed = shm_agree(c, failed);
  if (g->n > 1 && g->me == 0 && name[0]) shm_unlink(name);
  if (agreed == 0) return COLL_OK;
  if (my_err[0]) snprintf(err, err_bytes, "%s", my_err);
  else snprintf(err, err_bytes, "--allreduce %s: another rank could not map its segment",
                coll_backend_name(c->cfg.backend));
  if (*base) munmap(*base, bytes);
  *base = NULL;
  return COLL_ERR;
}

int shm_group_open(coll_comm *c, shm_group *g, const int *ranks, int n, int me, int64_t chunk,
                   char *err, size_t err_bytes) {
  memset(g, 0, sizeof *g);
  g->ranks = ranks;
  g->n = n;
  g->me = me;
  g->chunk = chunk;
  g->in = malloc((size_t)n * sizeof *g->in);
  g->out = malloc((size_t)(n + 1) * sizeof *g->out);
  size_t head_bytes, bytes = shm_bytes(n, chunk, &head_bytes);
  char name[64] = "", my_err[256] = "";
  int failed = 0;
  void *base = NULL;
  if (shm_share_begin(c, g, bytes, &base, name, sizeof name, &failed, my_err, sizeof my_err, err,
                      err_bytes) != COLL_OK) {
    return COLL_ERR;
  }
  g->base = base;
  g->bytes = bytes;
  if (!failed && (!g->in || !g->out)) { /* after the exchange, which every rank joins */
    snprintf(my_err, sizeof my_err, "collective: out of memory");
    failed = 1;
  }
  if (!failed) shm_group_layout(g, head_bytes);
  if (shm_share_end(c, g, bytes, &g->base, name, failed, my_err, err, err_bytes) != COLL_OK) {
    return COLL_ERR;
  }
  const shm_head *h = g->base;
  if (h->magic != SHM_MAGIC || h->ranks != n || h->chunk_elems != chunk) {
    snprintf(err, err_bytes, "--allreduce %s: segment %s is not this job's",
             coll_backend_name(c->cfg.backend), name);
    return COLL_ERR;
  }
  /* A member in another pid namespace cannot be watched by pid. */
  g->pid_check = n > 1;
  for (int p = 0; p < n; p++) {
    const pid_t pid = (pid_t)g->slot[p].pid; /* <= 0 would name a process group */
    if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) g->pid_check = 0;
  }
  return COLL_OK;
}

int shm_group_share(coll_comm *c, const shm_group *g, size_t bytes, void **base, char *err,
                    size_t err_bytes) {
  char name[64] = "", my_err[256] = "";
  int failed = 0;
  if (shm_share_begin(c, g, bytes, base, name, sizeof name, &failed, my_err, sizeof my_err, err,
                      err_bytes) != COLL_OK) {
    return COLL_ERR;
  }
  return shm_share_end(c, g, bytes, base, name, failed, my_err, err, err_bytes);
}

void shm_group_close(shm_group *g) {
  if (g->base) munmap(g->base, g->bytes);
  g->base = NULL;
  free(g->in);
  free(g->out);
  g->in = NULL;
  g->out = NULL;
}

void shm_group_arrive(shm_group *g) {
  g->phase++;
  __atomic_store_n(&g->slot[g->me].arrive, g->phase, __ATOMIC_RELEASE);
}

void shm_group_fail(coll_comm *c, shm_group *g) {
  if (!g->base || g->n < 2) return;
  shm_slot *s = &g->slot[g->me];
  if (__atomic_load_n(&s->failed, __ATOMIC_ACQUIRE)) return;
  snprintf(s->why, sizeof s->why, "%s", coll_comm_error(c));
  __atomic_store_n(&s->failed, 1, __ATOMIC_RELEASE); /* after the text */
}

/* A member that gave up (its why, in the segment) or died (its pid gone):
 * COLL_ERR with the comm's error naming it. The one that gave up first
 * says more than its death, which follows. */
static int shm_group_check_member(coll_comm *c, shm_group *g, int p, int look_pid) {
  const int rank = shm_member_rank(g, p);
  const char *what = coll_backend_name(c->cfg.backend);
  if (__atomic_load_n(&g->slot[p].failed, __ATOMIC_ACQUIRE)) {
    coll_set_error(c, "allreduce(%s) on %s: rank %d failed: %.180s", what, c->host, rank,
                   g->slot[p].why);
    return COLL_ERR;
  }
  pid_t pid = (pid_t)g->slot[p].pid;
  if (look_pid && kill(pid, 0) != 0 && errno == ESRCH) {
    coll_set_error(c, "allreduce(%s) on %s: rank %d (pid %d) died; missing rank(s) %d", what,
                   c->host, rank, (int)pid, rank);
    return COLL_ERR;
  }
  return COLL_OK;
}

int shm_group_all_arrived(coll_comm *c, shm_group *g, int *yes) {
  *yes = 1;
  int late = -1;
  for (int p = 0; p < g->n; p++) {
    if (__atomic_load_n(&g->slot[p].arrive, __ATOMIC_ACQUIRE) < g->phase) {
      *yes = 0;
      late = p;
      break;
    }
  }
  if (*yes) return COLL_OK;
  if (shm_group_check_member(c, g, late, 0) != COLL_OK) return COLL_ERR;
  if (!g->pid_check) return COLL_OK;
  const double now = clock_mono_s();
  if (now - g->pid_checked < SHM_PID_CHECK_S) return COLL_OK;
  g->pid_checked = now;
  for (int p = 0; p < g->n; p++) {
    if (__atomic_load_n(&g->slot[p].arrive, __ATOMIC_ACQUIRE) >= g->phase) continue;
    if (shm_group_check_member(c, g, p, 1) != COLL_OK) return COLL_ERR;
  }
  return COLL_OK;
}

/* ---- paths, parts and the ordered sum: shm's and hier's ---- */

void shm_group_post_path(shm_group *g, int64_t zc_off, int64_t elems) {
  shm_slot *mine = &g->slot[g->me];
  mine->zc_off = zc_off; /* read by the members after the next barrier */
  mine->zc_elems = elems;
}

int shm_group_paths_agree(coll_comm *c, const shm_group *g, int64_t zc_off, int64_t elems) {
  for (int p = 0; p < g->n; p++) {
    const shm_slot *o = &g->slot[p];
    if (o->zc_off == zc_off && (zc_off < 0 || o->zc_elems == elems)) continue;
    coll_set_error(c, "allreduce(%s) on %s: rank %d reduces %s, rank %d %s (every rank must "
                   "pass the same span of its coll_comm_buffer, or none)",
                   coll_backend_name(c->cfg.backend), c->host, c->rank,
                   zc_off < 0 ? "a buffer of its own" : "its comm buffer", shm_member_rank(g, p),
                   o->zc_off < 0 ? "a buffer of its own" : "another span of its comm buffer");
    return COLL_ERR;
  }
  return COLL_OK;
}

int shm_parts_open(coll_comm *c, const shm_group *g, shm_parts *p, int64_t elems, float **out,
                   char *err, size_t err_bytes) {
  if (p->base) {
    snprintf(err, err_bytes, "--allreduce %s: the comm already has its buffer",
             coll_backend_name(c->cfg.backend));
    return COLL_ERR;
  }
  const int64_t stride = (int64_t)(shm_round((size_t)elems * sizeof(float)) / sizeof(float));
  const size_t bytes = (size_t)stride * sizeof(float) * (size_t)g->n;
  void *base = NULL;
  if (shm_group_share(c, g, bytes, &base, err, err_bytes) != COLL_OK) {
    /* Every rank failed alike (/dev/shm too small, say) and the comm still
     * works: no buffer, err says why; the caller's own memory will do. */
    return coll_comm_failed(c) ? COLL_ERR : COLL_OK;
  }
  *p = (shm_parts){.base = base, .elems = elems, .stride = stride, .bytes = bytes};
  *out = shm_parts_at(p, g->me);
  return COLL_OK;
}

void shm_parts_close(shm_parts *p) {
  if (p->base) munmap(p->base, p->bytes);
  p->base = NULL;
}

int64_t shm_parts_span(const shm_parts *p, int me, const coll_request *r) {
  if (!p->base || r->send != r->recv || r->elems == 0) return -1;
  const uintptr_t mine = (uintptr_t)shm_parts_at(p, me);
  const uintptr_t at = (uintptr_t)r->recv;
  if (at < mine || (at - mine) % sizeof(float) != 0) return -1;
  const uint64_t off = (at - mine) / sizeof(float);
  return off <= (uint64_t)p->elems && (uint64_t)r->elems <= (uint64_t)p->elems - off
             ? (int64_t)off : -1;
}

/* ---- the shm back end: one group of every rank ---- */

static void shm_free(coll_comm *c) {
  shm_comm *s = c->impl;
  if (!s) return;
  shm_parts_close(&s->buf);
  shm_group_close(&s->g);
  free(s);
  c->impl = NULL;
}

static int shm_init(coll_comm *c, char *err, size_t err_bytes) {
  shm_comm *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, err_bytes, "collective: out of memory");
    return COLL_ERR;
  }
  c->impl = s;
  if (c->size == 1) return COLL_OK; /* nothing to share */
  if (c->local_size != c->size) {
    snprintf(err, err_bytes, "--allreduce shm: needs every rank on one node (this node has %d "
             "of %d ranks); use hier or ring across nodes", c->local_size, c->size);
    return COLL_ERR; /* every rank sees the same split: all fail alike */
  }
  s->steps = (shm_node){.g = &s->g, .parts = &s->buf, .slices = c->size, .ranks = c->size};
  return shm_group_open(c, &s->g, NULL, c->size, c->rank, SHM_CHUNK_ELEMS, err, err_bytes);
}

/* coll_comm_buffer: one segment, a part per rank. */
static int shm_buffer(coll_comm *c, int64_t elems, float **out, char *err, size_t err_bytes) {
  shm_comm *s = c->impl;
  if (c->size == 1) return COLL_OK; /* nothing to share: the caller's memory is as good */
  return shm_parts_open(c, &s->g, &s->buf, elems, out, err, err_bytes);
}

/* ---- the allreduce: shm_node.c's steps over every rank ---- */

static int shm_start(coll_comm *c, coll_request *r) {
  return shm_node_start(c, &((shm_comm *)c->impl)->steps, r, sizeof(shm_node_req));
}

static int shm_test(coll_comm *c, coll_request *r, int *done) {
  return shm_node_test(c, &((shm_comm *)c->impl)->steps, r, done);
}

/* The peers' counters no longer match ours: the comm is broken (every
 * later collective fails), so nothing needs to be undone; the peers
 * waiting on this rank read why in its slot. */
static void shm_abandon(coll_comm *c, coll_request *r) {
  shm_comm *s = c->impl;
  shm_group_fail(c, &s->g);
  free(r->impl);
  r->impl = NULL;
}

const coll_backend_ops coll_shm_ops = {
  .name = "shm",
  .threaded = 1,
  .init = shm_init,
  .free = shm_free,
  .start = shm_start,
  .test = shm_test,
  .abandon = shm_abandon,
  .buffer = shm_buffer,
};
