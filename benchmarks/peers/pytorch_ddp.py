"""PyTorch DistributedDataParallel peer of a `tfdist train` cluster on CPUs:
the model of pytorch_mnist.py (784-300-100-10, Glorot-uniform, zero biases,
mean sparse softmax cross-entropy, plain SGD), every process started on its
own and joined over TCP (gloo), --batch per rank, rank r taking rows
[r*B, (r+1)*B) of each global batch of one permutation, as tfdist does. The
data set is resident as float32. Times --steps steps after --warmup, between
barriers, and rank 0 prints `JSON {"samples_per_s": ...}` (global samples).

  python3 pytorch_ddp.py --rank R --world N --port P [--data-folder DIR]
                         [--batch 50] [--steps 400] [--warmup 50] [--threads 1]"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_mnist import Net, read_idx  # noqa: E402  (the same model and reader)


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormat)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data-folder", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % a.port, rank=a.rank,
                            world_size=a.world)
    torch.manual_seed(a.seed)
    images = torch.from_numpy(read_idx(a.data_folder, "train-images-idx3-ubyte").copy())
    labels = torch.from_numpy(read_idx(a.data_folder, "train-labels-idx1-ubyte").astype("int64"))
    images = images.float().mul_(1.0 / 255.0)
    model = torch.nn.parallel.DistributedDataParallel(Net())
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    g = torch.Generator().manual_seed(a.seed)
    perm = torch.randperm(images.shape[0], generator=g)
    gb = a.batch * a.world
    per_epoch = images.shape[0] // gb

    def step(s):
        k = s % per_epoch
        idx = perm[k * gb + a.rank * a.batch:k * gb + (a.rank + 1) * a.batch]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images.index_select(0, idx)), labels.index_select(0, idx))
        loss.backward()
        opt.step()
        return loss

    for s in range(a.warmup):
        step(s)
    dist.barrier()
    t0 = time.perf_counter()
    for s in range(a.steps):
        loss = step(a.warmup + s)
    dist.barrier()
    dt = time.perf_counter() - t0
    if a.rank == 0:
        print("JSON " + json.dumps({"samples_per_s": gb * a.steps / dt, "steps": a.steps,
                                    "seconds": dt, "last_loss": float(loss)}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
