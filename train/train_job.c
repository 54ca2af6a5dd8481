/* `tfdist train`'s job set-up and run: see train_job.h. The world set-up
 * (TF_CONFIG, the launcher's world, the device, the allreduce, the
 * communicator) is one function, train_job_world_setup. */
#include "train/train_job.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/env.h"
#include "cluster/cluster.h"
#include "collective/coll.h"
#include "kernels/backend.h"
#include "tfdist_config.h"
#include "train/train.h"
#include "train/train_agree.h"
#include "train/train_ckpt.h"
#include "train/train_evaluator.h"
#include "train/train_ps.h"
#include "train/train_timeline.h"

struct train_job {
  train_config *cfg;   /* borrowed; resume_from is resolved in place */
  cluster_tf_config tf;   /* TF_CONFIG, parsed (owned) when in_cluster */
  int in_cluster;
  coll_world world;
  int world_up;        /* coll_world_init succeeded: finalized in train_job_free */
  kern_config kc;
  kern_backend *be;    /* owned */
  coll_comm *comm;     /* owned */
  trainer t;
  char auto_why[2][256]; /* what --allreduce and --overlap auto chose and why, for the rank log */
  int training;        /* trainer_init was called: a failure goes through comm to rank 0 */
};

int train_job_launcher_rank(void) {
  /* Open MPI's variable first: inside a Slurm allocation, SLURM_PROCID
   * describes mpirun's step. */
  static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                     "SLURM_PROCID"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    if (base_env_str(vars[i])) return (int)base_env_int(vars[i], 0, INT_MAX, 0);
  }
  return 0;
}

/* --device auto|cpu|cuda -> a backend config; auto says when it falls back. */
static int train_job_pick_device(const train_config *cfg, const coll_world *w, kern_config *kc,
                                 base_err *err) {
  char why[256] = "";
  memset(kc, 0, sizeof *kc);
  kc->threads = cfg->threads_run;
  kc->oversubscribed = cfg->threads_oversubscribed;
  kc->rank = w->rank;
  kc->math = cfg->math == TRAIN_MATH_TF32 ? KERN_MATH_TF32 : KERN_MATH_FP32;
  if (cfg->device == TRAIN_DEVICE_CPU) {
    kc->device = KERN_DEVICE_CPU;
    return 0;
  }
  int gpus = kern_cuda_device_count(why, sizeof why);
  if (gpus > 0) {
    kc->device = KERN_DEVICE_CUDA;
    kc->device_index = w->local_rank % gpus;
    return 0;
  }
  if (cfg->device == TRAIN_DEVICE_CUDA) {
    return base_err_bad_input(err, "--device cuda: no usable GPU (%s)", why);
  }
  kc->device = KERN_DEVICE_CPU;
  /* "no NVIDIA driver on this machine": said plainly, it is not an error */
  if (w->rank == 0 && strncmp(why, "no ", 3) == 0) {
    printf("tfdist: %s; running on the CPU\n", why);
  } else if (w->rank == 0) {
    printf("tfdist: no usable GPU (%s); running on the CPU\n", why);
  }
  return 0;
}

/* tcp goes with a TF_CONFIG cluster, and a cluster with tcp or hier alone:
 * a bad pair is bad input, found before anything starts. */
static int train_job_check_allreduce(const train_config *cfg, int in_cluster, base_err *err) {
  const int tcp = cfg->allreduce == TRAIN_ALLREDUCE_TCP;
  const int any = cfg->allreduce == TRAIN_ALLREDUCE_AUTO || cfg->allreduce == TRAIN_ALLREDUCE_HIER;
  if (in_cluster && !tcp && !any) {
    return base_err_set(err, "--allreduce %.32s: a TF_CONFIG cluster reduces over tcp or hier "
                        "(auto, tcp or hier)", train_allreduce_names[cfg->allreduce]);
  }
  if (!in_cluster && tcp) {
    return base_err_set(err, "--allreduce tcp: needs a TF_CONFIG cluster (TF_CONFIG is not set)");
  }
  return 0;
}

static int train_job_pick_allreduce(const train_config *cfg, const coll_world *w,
                                    const kern_config *kc, coll_backend *b, char *why,
                                    size_t why_bytes, base_err *err) {
  static const coll_backend given[] = {
    [TRAIN_ALLREDUCE_MPI] = COLL_BACKEND_MPI, [TRAIN_ALLREDUCE_RING] = COLL_BACKEND_RING,
    [TRAIN_ALLREDUCE_NCCL] = COLL_BACKEND_NCCL, [TRAIN_ALLREDUCE_TCP] = COLL_BACKEND_TCP,
    [TRAIN_ALLREDUCE_SHM] = COLL_BACKEND_SHM, [TRAIN_ALLREDUCE_HIER] = COLL_BACKEND_HIER};
  if (cluster_world_tf(w)) {
    *b = cfg->allreduce == TRAIN_ALLREDUCE_HIER ? COLL_BACKEND_HIER : COLL_BACKEND_TCP;
    return 0;
  }
  if (cfg->allreduce == TRAIN_ALLREDUCE_AUTO) {
    /* NCCL does its own hierarchy (NVLink within a node, the network across). */
    const int one_node = w->size > 1 && w->local_size == w->size;
    *b = kc->device == KERN_DEVICE_CUDA ? COLL_BACKEND_NCCL
       : one_node ? COLL_BACKEND_SHM : w->size > 1 ? COLL_BACKEND_HIER : COLL_BACKEND_RING;
    snprintf(why, why_bytes, "allreduce: %s (auto: %s)", coll_backend_name(*b),
             kc->device == KERN_DEVICE_CUDA ? "this rank runs on a GPU"
             : one_node ? "CPU, and every rank is on this node"
             : w->size > 1 ? "CPU, ranks on more than one node: shm within each node, a ring "
                             "across nodes"
                           : "one rank");
    return 0;
  }
  *b = given[cfg->allreduce];
  if (*b == COLL_BACKEND_NCCL && kc->device != KERN_DEVICE_CUDA) {
    return base_err_bad_input(err, "--allreduce nccl: needs --device cuda (this rank runs on the CPU)");
  }
  return 0;
}

_Static_assert((int)TRAIN_COMPRESSION_NONE == (int)COLL_COMP_NONE &&
               (int)TRAIN_COMPRESSION_BF16 == (int)COLL_COMP_BF16 &&
               (int)TRAIN_COMPRESSION_FP16 == (int)COLL_COMP_FP16, "one order for both enums");

/* --compression against the back end: mpi and nccl refuse it (bad input).
 * Whether this comm then compresses is coll_comm_compresses' to say
 * (train_outputs_open logs it). */
static int train_job_check_compression(const train_config *cfg, coll_backend b, base_err *err) {
  char e[400];
  if (coll_compression_applies(b, (coll_compression)cfg->compression, e, sizeof e) < 0) {
    return base_err_bad_input(err, "%s", e);
  }
  return 0;
}

/* A TF_CONFIG task: checked against the launcher, connected to its peers
 * (MPI never starts); a ps task serves here until training ends (then
 * w->rank is -1). */
static train_job_status train_job_join(train_job *j, base_err *err) {
  coll_world *w = &j->world;
  int rank = 0, size = 1;
  memset(w, 0, sizeof *w);
  if (coll_world_launched(&rank, &size) && size > 1) {
    base_err_set(err, "rank %d: TF_CONFIG is set, but the launcher started %d ranks: start each "
                 "TF_CONFIG task on its own, or unset TF_CONFIG under mpirun/srun", rank, size);
    return TRAIN_JOB_BAD_INPUT;
  }
  if (cluster_world_join(w, &j->tf, j->cfg->timeout, err->msg, sizeof err->msg) != 0) {
    return TRAIN_JOB_NOT_STARTED;
  }
  if (w->rank >= 0) return TRAIN_JOB_OK;
  if (train_ps_task(j->cfg, w, err) != 0) {
    char me[320];
    cluster_tf_task_name(&j->tf, j->tf.self, me, sizeof me);
    base_err_prefix(err, "%s", me);
    return TRAIN_JOB_NOT_STARTED;
  }
  return TRAIN_JOB_OK;
}

/* The evaluator task: no MPI, no mesh; it reads the chief's outputs. */
static train_job_status train_job_evaluator(train_job *j, base_err *err) {
  if (train_evaluator_task(j->cfg, err) == 0) return TRAIN_JOB_OK;
  base_err_prefix(err, "evaluator");
  return TRAIN_JOB_NOT_STARTED;
}

/* TF_CONFIG, the launcher's world, the device, the allreduce and the
 * communicator, in that order; a ps or evaluator task runs here to its end
 * (then *task_done is 1). */
static train_job_status train_job_world_setup(train_job *j, int *argc, char ***argv,
                                              int *task_done, base_err *err) {
  const train_config *cfg = j->cfg;
  *task_done = 0;
  const char *tf_json = base_env_str("TF_CONFIG");
  j->in_cluster = tf_json != NULL;
  if ((j->in_cluster && cluster_tf_config_parse(tf_json, &j->tf, err->msg, sizeof err->msg) != 0) ||
      train_job_check_allreduce(cfg, j->in_cluster, err) != 0) {
    return TRAIN_JOB_BAD_INPUT;
  }
  if (j->in_cluster && j->tf.nps > 0 && cfg->compression != TRAIN_COMPRESSION_NONE) {
    /* the workers push fp32 gradients to the ps tasks: no ring to compress */
    base_err_set(err, "--compression %s: this TF_CONFIG cluster has %d ps task(s): the workers "
                 "push fp32 gradients to them and run no allreduce; use --compression none, or "
                 "a cluster without ps tasks", train_compression_names[cfg->compression],
                 j->tf.nps);
    return TRAIN_JOB_BAD_INPUT;
  }
  if (!j->in_cluster && (cfg->secret_file[0] || cfg->insecure_cluster)) {
    base_err_set(err, "%s: only for a TF_CONFIG task (MPI keeps Open MPI's trust in its "
                 "network: README, \"Security\")",
                 cfg->secret_file[0] ? "--secret-file" : "--insecure-cluster");
    return TRAIN_JOB_BAD_INPUT;
  }
  if (j->in_cluster && !j->tf.evaluator &&
      cluster_tf_config_secure(&j->tf, cfg->secret_file, cfg->insecure_cluster, err->msg,
                               sizeof err->msg) != 0) {
    return TRAIN_JOB_BAD_INPUT;
  }
  if (j->in_cluster && j->tf.evaluator) {
    *task_done = 1;
    return train_job_evaluator(j, err);
  }
  /* MPI starts under an MPI launcher only: a plain run is a world of one,
   * and a TF_CONFIG task joins its cluster (train_job_join). */
  if (!j->in_cluster && !coll_world_launched(NULL, NULL)) {
    coll_world_init_self(&j->world);
  } else if (!j->in_cluster &&
             coll_world_init(&j->world, argc, argv, err->msg, sizeof err->msg) != 0) {
    return TRAIN_JOB_NOT_STARTED;
  }
  j->world_up = 1;
  train_job_status st = j->in_cluster ? train_job_join(j, err) : TRAIN_JOB_OK;
  if (st != TRAIN_JOB_OK || j->world.rank < 0) {
    *task_done = 1;
    return st;
  }
  train_threads_resolve(j->cfg, j->world.local_size);
  coll_backend cb;
  if (train_job_pick_device(cfg, &j->world, &j->kc, err) != 0 ||
      train_job_pick_allreduce(cfg, &j->world, &j->kc, &cb, j->auto_why[0],
                               sizeof j->auto_why[0], err) != 0 ||
      train_job_check_compression(cfg, cb, err) != 0 ||
      kern_backend_init(&j->be, &j->kc, err->msg, sizeof err->msg) != 0) {
    return TRAIN_JOB_FAILED;
  }
  kern_backend *be = j->be;
  coll_config cc = {.backend = cb, .timeout_s = cfg->timeout,
                    .stream = kern_stream(be),
                    .device = j->kc.device_index,
                    .compression = (coll_compression)cfg->compression};
  if (coll_comm_init(&j->comm, &j->world, &cc, err->msg, sizeof err->msg) != 0) {
    return TRAIN_JOB_FAILED;
  }
  return TRAIN_JOB_OK;
}

/* Every rank's host, local rank and device, printed by rank 0 and kept in run.json. */
static cJSON *train_job_rank_table(const coll_world *w, const kern_backend *be,
                                   const kern_config *kc) {
  coll_rank_info mine, *rows = calloc((size_t)w->size, sizeof *rows);
  char err[256];
  memset(&mine, 0, sizeof mine);
  snprintf(mine.host, sizeof mine.host, "%.63s", w->host);
  mine.local_rank = w->local_rank;
  if (kc->device == KERN_DEVICE_CUDA) {
    snprintf(mine.device, sizeof mine.device, "cuda:%d", kc->device_index);
  } else {
    snprintf(mine.device, sizeof mine.device, "%s", kern_name(be));
  }
  cJSON *arr = cJSON_CreateArray();
  if (!rows || coll_world_gather_info(w, &mine, rows, err, sizeof err) != 0) {
    free(rows);
    return arr;
  }
  if (w->rank == 0) printf("%-5s %-24s %-10s %s\n", "rank", "host", "local_rank", "device");
  for (int r = 0; r < w->size; r++) {
    if (w->rank == 0) {
      printf("%-5d %-24s %-10d %s\n", r, rows[r].host, rows[r].local_rank, rows[r].device);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rank", r);
    cJSON_AddStringToObject(o, "host", rows[r].host);
    cJSON_AddNumberToObject(o, "local_rank", rows[r].local_rank);
    cJSON_AddStringToObject(o, "device", rows[r].device);
    cJSON_AddItemToArray(arr, o);
  }
  if (w->rank == 0) fflush(stdout);
  free(rows);
  return arr;
}

/* --overlap auto: a progress thread that reduces while backward runs pays
 * only where it has a core of its own: usable cores (the affinity mask) more
 * than the compute threads of this node's ranks. On a GPU the host is idle. */
static int train_job_pick_overlap(train_config *cfg, const coll_world *w, const kern_config *kc,
                                  coll_comm *comm, char *why, size_t why_bytes, base_err *err) {
  if (cfg->overlap != OPT_AUTO) return 0;
  const int cores = cfg->usable_cores; /* train_threads_resolve's */
  const long compute = (long)cfg->threads_run * (w->local_size > 0 ? w->local_size : 1);
  if (kc->device == KERN_DEVICE_CUDA) {
    cfg->overlap = 1;
    snprintf(why, why_bytes, "overlap: on (auto: compute runs on the GPU)");
  } else {
    cfg->overlap = cores > compute;
    snprintf(why, why_bytes, "overlap: %s (auto: %d usable cores %s %ld compute threads of %d "
             "local rank(s))", cfg->overlap ? "on" : "off", cores, cfg->overlap ? ">" : "<=",
             compute, w->local_size);
  }
  /* Every rank must issue the same collectives: off if any rank says off
   * (ranks bound to fewer cores than others). */
  double off = cfg->overlap ? 0.0 : 1.0;
  if (w->size > 1 && coll_allreduce_sum_f64(comm, &off, 1) != COLL_OK) {
    return train_err_coll(err, comm);
  }
  if (cfg->overlap && off > 0) {
    cfg->overlap = 0;
    snprintf(why, why_bytes, "overlap: off (auto: another rank has no core to spare)");
  }
  return 0;
}

/* Rank 0's flags on every rank, then --resume-from auto's verdict. */
static int train_job_agree(train_job *j, base_err *err) {
  train_config *cfg = j->cfg;
  const coll_world *w = &j->world;
  int found = 0;
  if ((w->size > 1 && train_agree_check(cfg, j->comm, w->rank, w->size, err) != 0) ||
      train_ckpt_resolve_auto(cfg, j->comm, w->rank, w->size, &found, err) != 0) {
    return -1;
  }
  if (w->rank == 0 && cfg->resume_mode == TRAIN_RESUME_AUTO && !found) {
    printf("tfdist: --resume-from auto: no checkpoint in %s/checkpoints; starting afresh\n",
           cfg->outputs);
  }
  if (w->rank == 0 && strcmp(cfg->data_folder, TFDIST_DEFAULT_DATA) == 0) {
    printf("tfdist: data: the default data set, %s\n", cfg->data_folder);
  }
  return 0;
}

/* The trainer, from the rank table to the saved model. A failure is recorded
 * in run.json (rank 0) before the caller reports it. */
static train_job_status train_job_train(train_job *j, base_err *err) {
  trainer *t = &j->t;
  cJSON *ranks = train_job_rank_table(&j->world, j->be, &j->kc);
  j->training = 1;
  int ok = trainer_init(t, j->cfg, &j->world, j->comm, j->be, ranks) == 0;
  for (int k = 0; ok && k < 2; k++) {
    if (j->auto_why[k][0]) rank_log_printf(&t->out.log, "%s", j->auto_why[k]);
  }
  if (ok) {
    run_cancel_install(); /* from here a signal is recorded as Canceled */
    ok = trainer_run(t) == 0;
    run_cancel_uninstall();
  }
  if (ok) return TRAIN_JOB_OK;
  train_timeline_flush(&t->out.tl); /* with several ranks, the caller's abort ends us */
  if (j->world.rank == 0 && t->out.run.doc) {
    char ignored[256];
    snprintf(t->out.run.error, sizeof t->out.run.error, "%.511s", t->err.msg);
    run_record_stage(&t->out.run, t->out.canceled ? RUN_CANCELED : RUN_FAILED, ignored,
                     sizeof ignored);
  }
  const int sig = run_cancel_signal();
  if (!t->out.canceled && sig && j->world.rank != 0) {
    /* this rank was signalled alone and passed it on: rank 0 ended the job,
     * so the lost connection that follows is no failure of ours */
    t->out.canceled = sig;
    base_err_set(err, "stopped by %s, passed on to rank 0, which records the run as Canceled "
                 "(this rank's last error: %.400s)", sig == SIGINT ? "SIGINT" : "SIGTERM",
                 t->err.msg);
    return TRAIN_JOB_CANCELED;
  }
  base_err_set(err, "%s", t->err.msg);
  err->bad_input = t->err.bad_input;
  return t->out.canceled ? TRAIN_JOB_CANCELED : TRAIN_JOB_FAILED;
}

train_job_status train_job_run(train_job **out, train_config *cfg, int *argc, char ***argv,
                               base_err *err) {
  train_job *j = calloc(1, sizeof *j);
  *out = j;
  if (!j) {
    base_err_set(err, "out of host memory");
    return TRAIN_JOB_NOT_STARTED;
  }
  j->cfg = cfg;
  int task_done = 0;
  train_job_status st = train_job_world_setup(j, argc, argv, &task_done, err);
  if (st != TRAIN_JOB_OK || task_done) return st;
  if (train_job_agree(j, err) != 0) return TRAIN_JOB_FAILED;
  if (train_job_pick_overlap(cfg, &j->world, &j->kc, j->comm, j->auto_why[1],
                             sizeof j->auto_why[1], err) != 0) {
    return TRAIN_JOB_FAILED;
  }
  return train_job_train(j, err);
}

int train_job_rank(const train_job *j) { return j && j->world_up ? j->world.rank : 0; }

int train_job_size(const train_job *j) { return j && j->world_up ? j->world.size : 1; }

int train_job_signal(const train_job *j) { return j->t.out.canceled; }

const char *train_job_record_path(const train_job *j) { return j->t.out.run.path; }

void train_job_tell_rank0(train_job *j, const char *msg) {
  if (!j->training || j->world.rank == 0 || !j->comm ||
      coll_comm_report_failure(j->comm, msg) != 0) {
    return;
  }
  struct timespec ts = {2, 0};
  nanosleep(&ts, NULL);
}

void train_job_abort(train_job *j, int code) {
  if (j->world_up) coll_world_abort(&j->world, code);
}

void train_job_free(train_job *j) {
  if (!j) return;
  if (j->training) trainer_free(&j->t);
  coll_comm_free(j->comm);
  kern_backend_free(j->be);
  if (j->world_up) coll_world_finalize(&j->world);
  if (j->in_cluster) cluster_tf_config_free(&j->tf);
  free(j);
}
