/* The environment variables tfdist's libraries read, each described once
 * here; the test-only fault switches (TFDIST_FAULT_*) are in base/fault.h.
 *
 * Read through base_env_*:
 *   TF_CONFIG              this process is one task of a TensorFlow-style
 *                          cluster (JSON: cluster, task): the task joins its
 *                          peers over TCP, or runs as a ps or evaluator task
 *                          (train/train_job.c).
 *   OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK, SLURM_PROCID
 *                          the rank a launcher gave this process, read before
 *                          MPI starts so only rank 0 reports a bad flag
 *                          (train_job_launcher_rank; Open MPI's first).
 *   TFDIST_SECRET          the TF_CONFIG job's secret (16 to 1024 bytes): the key
 *                          of the mesh's authenticated hello, unless
 *                          --secret-file is given (cluster/secret.c).
 *   TFDIST_REGISTRY        the model registry's folder when --registry is not
 *                          given (registry/registry.c).
 *   HOME                   the registry's default folder, $HOME/.tfdist/registry.
 *
 *   TFDIST_COLL_SPIN_US    microseconds a waiting collective spins before it
 *                          sleeps (collective/progress.c; default 200).
 *   TFDIST_CUDA_MODULE     the CUDA module's path, in place of the search
 *                          beside the executable (kernels/cuda_load.c).
 *   TFDIST_TEAM_SPIN_US    microseconds a CPU team member spins before it
 *                          sleeps (kernels/cpu_team.c; default 100, 5
 *                          where the node has fewer cores than
 *                          compute threads).
 *   OMPI_COMM_WORLD_LOCAL_SIZE
 *                          the ranks on this node, for --threads auto where
 *                          no world says (train/train_config.c).
 *
 * Read by the CUDA module itself (kernels/cuda/), with getenv: the module
 * takes no symbol from base/, so that it loads into any host binary:
 *   TFDIST_GEMM            cublas|small|auto: the CUDA GEMM path
 *                          (kernels/cuda/cuda_backend.c).
 *   TFDIST_FUSED_STEP      0: the CUDA step op by op instead of fused
 *                          (kernels/cuda/cuda_step.c; benchmarks).
 *   TFDIST_FUSED_CHAIN     steps per fused launch, a fallback for misbehaving
 *                          chained launches (kernels/cuda/cuda_step.c).
 *
 * Open MPI's own, read by collective/world.c for MPI programs run without a
 * launcher (singletons): TMPDIR, OMPI_MCA_orte_tmpdir_base,
 * OMPI_MCA_ess_singleton_isolated, and the launcher variables above. */
#ifndef TFDIST_BASE_ENV_H
#define TFDIST_BASE_ENV_H

/* The variable's value; NULL when it is unset or empty. */
const char *base_env_str(const char *name);
/* The variable as a base-10 integer in [min, max]; def when it is unset,
 * empty, not wholly an integer, or out of range. */
long base_env_int(const char *name, long min, long max, long def);

#endif
