/* `tfdist train`: resolve the config, start MPI, pick the device and the
 * allreduce, print the rank table, train. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "collective/coll.h"
#include "kernels/backend.h"
#include "cli/cli.h"
#include "train/train.h"
#include "train/train_agree.h"
#include "train/train_ckpt.h"
#include "train/train_evaluator.h"
#include "train/train_ps.h"
#include "train/train_timeline.h"
#include "tfdist_config.h"

static const char train_usage[] =
    "usage: tfdist train [flags]\n"
    "  Trains the 784-h1-h2-10 ReLU DNN of the tutorial. Run it under mpirun or srun\n"
    "  for data-parallel training; --batch-size is per rank. Or start each task of a\n"
    "  TF_CONFIG cluster on its own: chief and workers train (allreduce over TCP), ps\n"
    "  tasks hold the weights (parameter-server strategy).";

/* --device auto|cpu|cuda -> a backend config; auto says when it falls back. */
static int cli_pick_device(const train_config *cfg, const coll_world *w, kern_config *kc,
                           char *err, size_t err_bytes) {
  char why[256] = "";
  memset(kc, 0, sizeof *kc);
  kc->threads = cfg->threads_run;
  kc->rank = w->rank;
  kc->math = strcmp(cfg->math, "tf32") == 0 ? KERN_MATH_TF32 : KERN_MATH_FP32;
  if (strcmp(cfg->device, "cpu") == 0) {
    kc->device = KERN_DEVICE_CPU;
    return 0;
  }
  int gpus = kern_cuda_device_count(why, sizeof why);
  if (gpus > 0) {
    kc->device = KERN_DEVICE_CUDA;
    kc->device_index = w->local_rank % gpus;
    return 0;
  }
  if (strcmp(cfg->device, "cuda") == 0) {
    snprintf(err, err_bytes, "--device cuda: no usable GPU (%s)", why);
    return -1;
  }
  kc->device = KERN_DEVICE_CPU;
  if (w->rank == 0) printf("tfdist: no GPU found (%s); running on the CPU\n", why);
  return 0;
}

/* tcp goes with a TF_CONFIG cluster, and a cluster with tcp alone: a bad
 * pair is bad input, found before anything starts. */
static int cli_check_allreduce_flag(const train_config *cfg, int in_cluster, char *err,
                                    size_t err_bytes) {
  const int tcp = strcmp(cfg->allreduce, "tcp") == 0, any = strcmp(cfg->allreduce, "auto") == 0;
  if (in_cluster && !tcp && !any) {
    snprintf(err, err_bytes, "--allreduce %.32s: a TF_CONFIG cluster reduces over tcp (auto or tcp)",
             cfg->allreduce);
    return -1;
  }
  if (!in_cluster && tcp) {
    snprintf(err, err_bytes, "--allreduce tcp: needs a TF_CONFIG cluster (TF_CONFIG is not set)");
    return -1;
  }
  return 0;
}

static int cli_pick_allreduce(const train_config *cfg, const coll_world *w, const kern_config *kc,
                              coll_backend *b, char *err, size_t err_bytes) {
  if (coll_world_cluster(w)) {
    *b = COLL_BACKEND_TCP;
    return 0;
  }
  if (strcmp(cfg->allreduce, "auto") == 0) {
    *b = kc->device == KERN_DEVICE_CUDA ? COLL_BACKEND_NCCL : COLL_BACKEND_RING;
    return 0;
  }
  coll_backend_parse(cfg->allreduce, b);
  if (*b == COLL_BACKEND_NCCL && kc->device != KERN_DEVICE_CUDA) {
    snprintf(err, err_bytes, "--allreduce nccl: needs --device cuda (this rank runs on the CPU)");
    return -1;
  }
  return 0;
}

/* Every rank's host, local rank and device, printed by rank 0 and kept in run.json. */
static cJSON *cli_rank_table(const coll_world *w, const kern_backend *be, const kern_config *kc) {
  coll_rank_info mine, *rows = calloc((size_t)w->size, sizeof *rows);
  char err[256];
  memset(&mine, 0, sizeof mine);
  snprintf(mine.host, sizeof mine.host, "%.63s", w->host);
  mine.local_rank = w->local_rank;
  if (kc->device == KERN_DEVICE_CUDA) snprintf(mine.device, sizeof mine.device, "cuda:%d", kc->device_index);
  else snprintf(mine.device, sizeof mine.device, "%s", kern_name(be));
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

/* A failing rank other than 0 tells rank 0 (which may be waiting in a
 * collective) and gives it a moment to record the run as Failed and end the
 * job; rank 0's abort ends this rank too. */
static void cli_train_tell_rank0(const coll_world *w, coll_comm *comm, const char *msg) {
  if (w->rank == 0 || !comm || coll_comm_report_failure(comm, msg) != 0) return;
  struct timespec ts = {2, 0};
  nanosleep(&ts, NULL);
}

/* One line to stderr; with several ranks the whole job must end, not just
 * us (comm, once there is one, carries the reason to rank 0 first). */
static int cli_train_fail(const coll_world *w, coll_comm *comm, const char *msg) {
  if (w->size > 1) fprintf(stderr, "tfdist: error: rank %d: %s\n", w->rank, msg);
  else fprintf(stderr, "tfdist: error: %s\n", msg);
  fflush(stderr);
  cli_train_tell_rank0(w, comm, msg);
  if (w->size > 1) coll_world_abort(w, CLI_FAIL);
  return CLI_FAIL;
}

/* Rank 0, stopped by a signal: one line, exit 128 + the signal, as a shell
 * reports a killed command; with several ranks the job ends with it. */
static int cli_train_canceled(const coll_world *w, const trainer *t) {
  fprintf(stderr, "tfdist: %s; %s records the run as Canceled\n", t->err, t->run.path);
  fflush(stderr);
  if (w->size > 1) coll_world_abort(w, 128 + t->canceled);
  return 128 + t->canceled;
}

int cli_check_default_data(const char *data_folder, char *err, size_t err_bytes) {
  struct stat st;
  if (strcmp(data_folder, TFDIST_DEFAULT_DATA) != 0 || stat(data_folder, &st) == 0) return 0;
  snprintf(err, err_bytes, "--data-folder: required: no default data set at %s (install "
           "Debian's dataset-fashion-mnist, or give --data-folder DIR)", TFDIST_DEFAULT_DATA);
  return -1;
}

/* The rank the launcher gave this process, read before MPI starts: a bad flag
 * is the same on every rank, so only rank 0 reports it. Open MPI's variable
 * first: inside a Slurm allocation, SLURM_PROCID describes mpirun's step. */
static int cli_launcher_rank(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                     "SLURM_PROCID"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && *v) return atoi(v);
  }
  return 0;
}

/* A TF_CONFIG task: checked against the launcher, connected to its peers; a
 * ps task serves here until training ends (then w->rank is -1). */
static int cli_train_join(const train_config *cfg, coll_world *w, const coll_tf_config *tf) {
  char err[1024];
  if (w->size > 1) {
    fprintf(stderr, "tfdist: error: rank %d: TF_CONFIG is set, but the launcher started %d ranks: "
            "start each TF_CONFIG task on its own, or unset TF_CONFIG under mpirun/srun\n",
            w->rank, w->size);
    return CLI_USAGE;
  }
  if (coll_world_join_tf(w, tf, cfg->timeout, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_FAIL;
  }
  if (w->rank >= 0) return CLI_OK;
  if (train_ps_task(cfg, w, err, sizeof err) != 0) {
    char me[320];
    coll_tf_task_name(tf, tf->self, me, sizeof me);
    fprintf(stderr, "tfdist: error: %s: %s\n", me, err);
    return CLI_FAIL;
  }
  return CLI_OK;
}

/* The evaluator task: no MPI, no mesh; it reads the chief's outputs. */
static int cli_train_evaluator(const train_config *cfg, coll_tf_config *tf) {
  char err[4400];
  int rc = train_evaluator_task(cfg, err, sizeof err);
  if (rc != 0) fprintf(stderr, "tfdist: error: evaluator: %s\n", err);
  coll_tf_config_free(tf);
  return rc == 0 ? CLI_OK : CLI_FAIL;
}

int cli_train(int argc, char **argv) {
  static train_config cfg;
  static trainer t;
  char err[1024];
  if (opt_wants_help(argc - 1, argv + 1)) {
    opt_print_help(&train_options, train_usage, stdout);
    return CLI_OK;
  }
  if (train_config_resolve(&cfg, argc - 1, argv + 1, err, sizeof err) != 0 ||
      cli_check_default_data(cfg.data_folder, err, sizeof err) != 0) {
    if (cli_launcher_rank() == 0) fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_USAGE;
  }
  static coll_tf_config tf;
  const char *tf_json = getenv("TF_CONFIG");
  const int in_cluster = tf_json && *tf_json;
  if ((in_cluster && coll_tf_config_parse(tf_json, &tf, err, sizeof err) != 0) ||
      cli_check_allreduce_flag(&cfg, in_cluster, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    if (in_cluster) coll_tf_config_free(&tf);
    return CLI_USAGE;
  }
  if (in_cluster && tf.evaluator) return cli_train_evaluator(&cfg, &tf);
  coll_world w;
  if (coll_world_init(&w, &argc, &argv, err, sizeof err) != 0) {
    fprintf(stderr, "tfdist: error: %s\n", err);
    return CLI_FAIL;
  }
  int rc = in_cluster ? cli_train_join(&cfg, &w, &tf) : CLI_OK;
  if (rc != CLI_OK || w.rank < 0) goto done;
  kern_config kc;
  coll_backend cb;
  kern_backend *be = NULL;
  coll_comm *comm = NULL;
  train_threads_resolve(&cfg, w.local_size);
  if (cli_pick_device(&cfg, &w, &kc, err, sizeof err) != 0 ||
      cli_pick_allreduce(&cfg, &w, &kc, &cb, err, sizeof err) != 0 ||
      kern_backend_init(&be, &kc, err, sizeof err) != 0) {
    rc = cli_train_fail(&w, NULL, err);
    goto out;
  }
  coll_config cc = {.backend = cb, .timeout_s = cfg.timeout, .stream = kern_stream(be),
                    .device = kc.device_index};
  int auto_found = 0, auto_given = strcmp(cfg.resume_from, "auto") == 0;
  if (coll_comm_init(&comm, &w, &cc, err, sizeof err) != 0 ||
      (w.size > 1 && train_agree_check(&cfg, comm, w.rank, w.size, err, sizeof err) != 0) ||
      train_ckpt_resolve_auto(&cfg, comm, w.rank, w.size, &auto_found, err, sizeof err) != 0) {
    rc = cli_train_fail(&w, NULL, err);
    goto out;
  }
  if (w.rank == 0 && auto_given && !auto_found) {
    printf("tfdist: --resume-from auto: no checkpoint in %s/checkpoints; starting afresh\n",
           cfg.outputs);
  }
  if (w.rank == 0 && strcmp(cfg.data_folder, TFDIST_DEFAULT_DATA) == 0) {
    printf("tfdist: no --data-folder given; using the default data set %s\n", cfg.data_folder);
  }
  cJSON *ranks = cli_rank_table(&w, be, &kc);
  int ok = trainer_init(&t, &cfg, &w, comm, be, ranks) == 0;
  if (ok) {
    run_cancel_install(); /* from here a signal is recorded as Canceled */
    ok = trainer_run(&t) == 0;
    run_cancel_uninstall();
  }
  if (!ok) {
    train_timeline_flush(&t); /* with several ranks, the abort below ends us */
    if (w.rank == 0 && t.run.doc) {
      char ignored[256];
      snprintf(t.run.error, sizeof t.run.error, "%.511s", t.err);
      run_record_stage(&t.run, t.canceled ? RUN_CANCELED : RUN_FAILED, ignored, sizeof ignored);
    }
    rc = t.canceled ? cli_train_canceled(&w, &t) : cli_train_fail(&w, comm, t.err);
  }
  trainer_free(&t);
out:
  coll_comm_free(comm);
  kern_backend_free(be);
done:
  coll_world_finalize(&w);
  if (in_cluster) coll_tf_config_free(&tf);
  return rc;
}
