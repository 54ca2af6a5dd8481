"""The parameter servers of a TF_CONFIG cluster run every optimizer: with
adam under a warm-up and a cosine schedule, chief + worker + 2 ps give the
weights of `mpirun -np 2` after 30 steps within 1e-6 (each ps holds its
slice of both moments and derives each update's rate and count itself);
rmsprop likewise; and a fresh adam cluster resumed from the epoch-1
checkpoint ends within 1e-6 of the uninterrupted cluster run (the moments
and the update count travel through the checkpoint and back to the ps)."""
import os
import shutil
import sys
import tempfile

import tfcluster as TC

B = 10
TOL = 1e-6
ADAM = ["--seed", "7", "--optimizer", "adam", "--learning-rate", "0.003", "--lr-schedule",
        "cosine", "--lr-decay-epochs", "2", "--warmup-epochs", "0.5", "--weight-decay", "0.01",
        "--batch-size", str(B), "--max-steps", "15"]
RMS = ["--seed", "7", "--optimizer", "rmsprop", "--learning-rate", "0.001",
       "--batch-size", str(B), "--max-steps", "30", "--epochs", "1"]


def model(folder):
    return os.path.join(folder, "outputs", "model", "model.h5")


def main():
    C = TC.Checks()
    with tempfile.TemporaryDirectory() as tmp:
        data = TC.make_data(os.path.join(tmp, "data"))
        pairs = (("adam", ADAM + ["--epochs", "2", "--checkpoint-every", "1"]), ("rmsprop", RMS))
        runs = {}
        for name, args in pairs:
            folder = os.path.join(tmp, "mpi-" + name)
            rc, out = TC.run_mpi(2, folder, data, args)
            ref, why = TC.try_weights(model(folder)) if rc == 0 else (None, out[-1500:])
            C.check(ref is not None, "mpirun -np 2 %s (oracle): %s" % (name, why))
            folder = os.path.join(tmp, "ps-" + name)
            c = TC.run_cluster(folder, TC.cluster_spec(1, 1, 2), TC.train_args(folder, data, args),
                               limit_s=60)
            bad = [t.name for t in c.tasks if t.rc != 0]
            w = None
            if C.check(not bad, "ps %s: tasks %s did not exit 0" % (name, bad), c.summary()):
                w, why = TC.try_weights(model(folder))
                C.check(w is not None, "ps %s: %s" % (name, why))
            runs[name] = (folder, w)
            if w is not None and ref is not None:
                d = TC.max_abs_diff(w, ref)
                if C.check(d <= TOL, "%s: ps cluster vs mpirun -np 2: max |dw| %.3g" % (name, d)):
                    C.ok("%s: ps cluster vs mpirun -np 2 after 30 steps: max |dw| = %.3g" % (name, d))
        # A fresh cluster resumes the adam run from its epoch-1 checkpoint.
        straight_folder, straight = runs["adam"]
        ck = os.path.join(straight_folder, "outputs", "checkpoints", "ckpt-epoch-1.h5")
        if straight is not None and C.check(os.path.exists(ck), "ps adam: no epoch-1 checkpoint"):
            folder = os.path.join(tmp, "ps-adam-resumed")
            os.makedirs(os.path.join(folder, "outputs", "checkpoints"))
            mine = os.path.join(folder, "outputs", "checkpoints", "ckpt-epoch-1.h5")
            shutil.copyfile(ck, mine)
            args = ADAM + ["--epochs", "2", "--checkpoint-every", "1", "--resume-from", mine]
            c = TC.run_cluster(folder, TC.cluster_spec(1, 1, 2), TC.train_args(folder, data, args),
                               limit_s=60)
            bad = [t.name for t in c.tasks if t.rc != 0]
            if C.check(not bad, "ps adam resumed: tasks %s did not exit 0" % bad, c.summary()):
                w, why = TC.try_weights(model(folder))
                if C.check(w is not None, "ps adam resumed: %s" % why):
                    d = TC.max_abs_diff(w, straight)
                    if C.check(d <= TOL, "ps adam resumed vs straight: max |dw| %.3g" % d):
                        C.ok("ps adam resumed from epoch 1 vs straight: max |dw| = %.3g" % d)
    return C.verdict()


if __name__ == "__main__":
    sys.exit(main())
