/* A TF_CONFIG cluster's world: each task started on its own (no MPI),
 * connected by a TCP mesh that is the world's transport (tcp_transport.c). */
#ifndef TFDIST_CLUSTER_CLUSTER_H
#define TFDIST_CLUSTER_CLUSTER_H

#include <stddef.h>

#include "cluster/tfconfig.h"
#include "collective/coll.h"

struct cluster_tcp;

/* Makes w tf's task: connects the mesh (bounded by timeout_s); a training
 * task takes its rank, size and local rank from tf, which must outlive w.
 * A ps task gets rank -1. 0, or -1 with err set. coll_world_finalize
 * closes the mesh. */
int cluster_world_join(coll_world *w, const cluster_tf_config *tf, double timeout_s, char *err,
                       size_t err_bytes);
/* The TF_CONFIG cluster w joined; NULL for another world (MPI). */
const cluster_tf_config *cluster_world_tf(const coll_world *w);
/* The mesh of w, or of c's world; NULL for another transport. */
struct cluster_tcp *cluster_world_mesh(const coll_world *w);
struct cluster_tcp *cluster_comm_mesh(const coll_comm *c);

#endif
