/* A TF_CONFIG "evaluator" task (TF's sidecar evaluator): outside the
 * training cluster, it evaluates each checkpoint of the chief's --outputs
 * as it appears, then the final model, into <outputs>/eval/metrics.jsonl
 * (eval_accuracy, eval_loss per checkpoint epoch; final_eval_*), and logs
 * to <logs>/evaluator-0.log. */
#ifndef TFDIST_TRAIN_TRAIN_EVALUATOR_H
#define TFDIST_TRAIN_TRAIN_EVALUATOR_H

#include "base/err.h"
#include "train/train_config.h"

/* Runs until the run in cfg->outputs is Completed (0) or ends otherwise,
 * disappears without a final status, or never starts within cfg->timeout
 * seconds (-1 with err set). */
int train_evaluator_task(const train_config *cfg, base_err *err);

#endif
