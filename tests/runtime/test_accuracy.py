"""Two epochs on the default Fashion-MNIST reach validation_acc >= 0.82, and
the run's records are complete (SPEC: metrics names, run.json stages)."""
import json
import os

import tfdtest as T

data = "/usr/share/datasets/fashion-mnist"
if not os.path.isdir(data):
    print("no Fashion-MNIST package installed")
    raise SystemExit(77)
d = T.tmpdir()
p = T.run(["train", "--epochs", "2", "--progress", "off"], cwd=d)
T.check(p.returncode == 0, f"train failed: {p.stderr.strip()}")
T.check("data: the default data set, " + data in p.stdout, "did not say it uses the default data")
out = os.path.join(d, "outputs")
final = T.metric(out, "final_acc")
T.check(len(final) == 1 and final[0] >= 0.82, f"final_acc {final} < 0.82")
val = T.metric(out, "validation_acc")
T.check(len(val) == 2 and val[-1] == final[0], f"validation_acc rows {val}")
for name in ("training_acc", "loss", "samples_per_s", "train_acc_mean", "step_time_ms"):
    T.check(len(T.metric(out, name)) == 2, f"metric {name} missing")
steps = [r["step"] for r in T.metrics(out) if r["name"] == "validation_acc"]
T.check(steps == [1200, 2400], f"steps {steps}: expected floor(60000/50) per epoch")
run = json.load(open(os.path.join(out, "run.json")))
T.check(run["status"] == "Completed", f"status {run['status']}")
for stage in ("Preparing", "Running", "Finalizing", "Completed"):
    T.check(stage in run["stage_times"], f"stage {stage} missing")
T.check(run["config"]["batch_size"] == 50 and run["config"]["learning_rate"] == 0.01, "config")
T.check(run["ranks"][0]["rank"] == 0 and run["ranks"][0]["host"], "ranks table")
T.check(os.path.exists(os.path.join(d, "logs", "rank-0.log")), "rank-0.log missing")
T.check(os.path.exists(os.path.join(out, "model", "model.h5")), "model.h5 missing")
T.done()
