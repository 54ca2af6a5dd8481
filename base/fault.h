/* Test-only fault switches: environment variables the tests set to make a
 * rank hang, fail or slow down at a chosen point. Off unless set; each is
 * read once (the step loop is hot).
 *
 *   TFDIST_FAULT_STALL_RANK=r TFDIST_FAULT_STALL_STEP=s
 *       rank r stops answering at global step s, as a hung GPU or host would
 *       (the watchdog and the launcher must end the job).
 *   TFDIST_FAULT_FAIL_RANK=r TFDIST_FAULT_FAIL_STEP=s
 *       rank r fails with an error at global step s, as a bad shard would.
 *   TFDIST_FAULT_INFLATE_RANK=r TFDIST_FAULT_INFLATE_STEP=s
 *   [TFDIST_FAULT_INFLATE_STEPS=k] [TFDIST_FAULT_INFLATE_FACTOR=f]
 *       rank r multiplies its gradient by f (default 1e6) before the
 *       allreduce of global steps s .. s+k-1 (k default 1): an fp16 overflow
 *       (--compression fp16) the trainer must report and skip.
 *   TFDIST_FAULT_CKPT_SLOW_MS=ms
 *       a checkpoint save sleeps ms between its phases, so a test's kill -9
 *       lands inside one (modelio/checkpoint.c). */
#ifndef TFDIST_BASE_FAULT_H
#define TFDIST_BASE_FAULT_H

typedef struct {
  int rank;  /* -1: off */
  long step; /* global step */
} base_fault_at;

base_fault_at base_fault_stall(void);
base_fault_at base_fault_fail(void);

typedef struct {
  base_fault_at at; /* rank -1: off */
  long steps;       /* from at.step on */
  float factor;
} base_fault_inflate_spec;
base_fault_inflate_spec base_fault_inflate(void);
/* 0: off. */
long base_fault_ckpt_slow_ms(void);

#endif
