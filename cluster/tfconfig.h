/* TF_CONFIG: a cluster of tasks started one by one (Azure, Kubernetes), not by
 * mpirun. {"cluster": {"chief": [a], "worker": [a, ...], "ps": [a, ...]},
 * "task": {"type": T, "index": i}}, each address "host:port".
 * Tasks are ordered chief, workers, ps: a training task's index in that order
 * is its rank (with no chief, worker 0 is rank 0 and does the chief's work).
 * An "evaluator" task (TF's sidecar evaluator) is no part of the training
 * cluster; a "cluster.evaluator" list is checked and otherwise ignored. */
#ifndef TFDIST_CLUSTER_TFCONFIG_H
#define TFDIST_CLUSTER_TFCONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CLUSTER_SECRET_MIN 16  /* bytes: 128 bits */
#define CLUSTER_SECRET_MAX 1024

typedef enum { CLUSTER_TF_CHIEF = 0, CLUSTER_TF_WORKER = 1, CLUSTER_TF_PS = 2 } cluster_tf_type;

typedef struct {
  cluster_tf_type type;
  int index;           /* within its type */
  char host[256];
  char port[8];
} cluster_tf_task;

typedef struct cluster_tf_config {
  cluster_tf_task *tasks; /* (ntasks) chief, workers, ps */
  int ntasks;
  int ntrain;          /* chief + workers: the training ranks 0..ntrain-1 */
  int nps;
  int nevaluators;     /* cluster.evaluator's length (0: not listed) */
  int self;            /* this process's task; -1 for the evaluator */
  int evaluator;       /* this process is the evaluator: outside the mesh, it
                          evaluates the chief's checkpoints as they appear */
  uint64_t fingerprint; /* of the cluster: every task must hold the same one */
  unsigned char secret[CLUSTER_SECRET_MAX]; /* the job's key for the mesh's hello */
  size_t secret_bytes;  /* 0: none (a loopback cluster, or --insecure-cluster) */
} cluster_tf_config;

/* Parses and checks json (TF_CONFIG's text). 0, or -1 with err one line that
 * names the field, e.g. "TF_CONFIG: task.index: 3 is out of range ...". */
int cluster_tf_config_parse(const char *json, cluster_tf_config *out, char *err, size_t err_bytes);
void cluster_tf_config_free(cluster_tf_config *c);
/* Gives tf the job's secret: the file secret_file (when not NULL; it must
 * be a regular file that its group and others cannot read), else the
 * variable TFDIST_SECRET; at least CLUSTER_SECRET_MIN bytes. Without one, a
 * cluster with any address other than loopback is refused unless insecure
 * (--insecure-cluster). 0, or -1 with err one line naming the fix. */
int cluster_tf_config_secure(cluster_tf_config *tf, const char *secret_file, int insecure,
                             char *err, size_t err_bytes);
/* Whether host (a name or an address) is loopback: localhost, 127/8, ::1. */
int cluster_tf_host_is_loopback(const char *host);
/* "chief 0", "worker 1", "ps 0". */
const char *cluster_tf_type_name(cluster_tf_type t);
void cluster_tf_task_name(const cluster_tf_config *c, int task, char *out, size_t out_bytes);
/* Training ranks on the same host before this task's: its local rank (GPU). */
int cluster_tf_local_rank(const cluster_tf_config *c, int *local_size);
/* The first training task on this task's host (the host part of its
 * address): the node hier groups it into. */
int cluster_tf_node_first(const cluster_tf_config *c);

#endif
