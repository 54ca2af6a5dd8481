"""PyTorch peer of `tfdist train`: the same 784-300-100-10 ReLU DNN, Glorot-
uniform kernels and zero biases, mean sparse softmax cross-entropy, plain SGD
at lr 0.01, batch 50, on the same Fashion-MNIST idx files (uint8 / 255), with
the data set resident on the device and each batch gathered there by index,
as tfdist does. Times one training step in eager mode, torch.compile and a
whole-step CUDA graph (where each runs), and can train whole epochs.

  python3 pytorch_mnist.py [--device cuda|cpu] [--data-folder DIR] [--batch 50]
                           [--steps 300] [--reps 7] [--modes eager,cudagraph,compile]
                           [--epochs 0] [--train-mode eager|cudagraph]

Prints a table and `JSON {...}` lines: one per mode as soon as it finishes
(a later mode that hangs or fails leaves the earlier results), and a summary."""
import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


class HelpFormat(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help gives the whole docstring, and every flag's default."""

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default is not None:
            action.help = "default: %(default)s"
        return super()._format_action(action)


def read_idx(folder, stem):
    """The idx file stem(.gz) anywhere under folder; checks the magic."""
    for root, _, files in os.walk(folder):
        for name in (stem, stem + ".gz"):
            if name in files:
                path = os.path.join(root, name)
                opener = gzip.open if name.endswith(".gz") else open
                with opener(path, "rb") as f:
                    data = f.read()
                magic, count = struct.unpack(">II", data[:8])
                if magic == 0x803:
                    rows, cols = struct.unpack(">II", data[8:16])
                    return np.frombuffer(data, np.uint8, count * rows * cols, 16).reshape(count, -1)
                if magic == 0x801:
                    return np.frombuffer(data, np.uint8, count, 8)
                raise ValueError(f"{path}: bad magic 0x{magic:08x}")
    raise FileNotFoundError(f"{stem}[.gz] not found under {folder}")


class Net(torch.nn.Module):
    def __init__(self, h1=300, h2=100):
        super().__init__()
        self.l1, self.l2, self.l3 = (torch.nn.Linear(784, h1), torch.nn.Linear(h1, h2),
                                     torch.nn.Linear(h2, 10))
        for layer in (self.l1, self.l2, self.l3):  # Keras defaults: glorot_uniform, zeros
            torch.nn.init.xavier_uniform_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))


class Peer:
    """Model, optimizer, resident data and the per-step stats, as tfdist keeps them."""

    def __init__(self, args, data):
        torch.manual_seed(args.seed)
        self.dev = torch.device(args.device)
        self.batch = args.batch
        self.model = Net().to(self.dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=args.lr)
        self.images, self.labels, self.test_images, self.test_labels = data
        self.stats = torch.zeros(2, dtype=torch.float64, device=self.dev)  # loss sum, correct
        self.scale = 1.0 / 255.0

    def body(self, idx):
        x = self.images.index_select(0, idx).float().mul_(self.scale)
        y = self.labels.index_select(0, idx)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            correct = (logits.argmax(1) == y).sum()
            self.stats += torch.stack([loss.detach().double() * idx.numel(), correct.double()])

    def step_eager(self, idx):
        self.opt.zero_grad(set_to_none=True)
        self.body(idx)

    def evaluate(self):
        with torch.no_grad():
            x = self.test_images.float().mul_(self.scale)
            return (self.model(x).argmax(1) == self.test_labels).float().mean().item()


def make_compiled(peer):
    """torch.compile as most users apply it: the model (forward, and backward
    through AOTAutograd) compiled by Inductor, the SGD step as in eager."""
    peer.model = torch.compile(peer.model)
    return peer.step_eager


def make_cudagraph(peer):
    """The whole step (gather, forward, loss, backward, SGD, stats) as one
    captured graph; each replay reads its batch indices from static_idx."""
    static_idx = torch.zeros(peer.batch, dtype=torch.long, device=peer.dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            peer.step_eager(static_idx)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    peer.opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        peer.body(static_idx)

    def step(idx):
        static_idx.copy_(idx, non_blocking=True)
        graph.replay()
    return step


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_steps(peer, step, perm, steps, reps):
    """Median microseconds per step over reps runs of steps back-to-back."""
    B = peer.batch
    steps = min(steps, perm.numel() // B)
    batches = [perm[i * B:(i + 1) * B] for i in range(steps)]
    for i in range(min(5, steps)):  # warm-up (compilation, allocator, cuBLAS handles)
        step(batches[i])
    times = []
    for _ in range(reps):
        sync(peer.dev)
        t0 = time.perf_counter()
        for b in batches:
            step(b)
        sync(peer.dev)
        times.append((time.perf_counter() - t0) * 1e6 / steps)
    if not torch.isfinite(peer.stats).all():
        raise RuntimeError("loss went non-finite")
    return statistics.median(times)


def build_step(mode, peer):
    if mode == "eager":
        return peer.step_eager
    if mode == "compile":
        if not hasattr(torch, "compile"):
            raise RuntimeError(f"torch {torch.__version__} has no torch.compile")
        return make_compiled(peer)
    if mode == "cudagraph":
        if peer.dev.type != "cuda":
            raise RuntimeError("CUDA graphs need --device cuda")
        return make_cudagraph(peer)
    raise ValueError(mode)


def train_epochs(args, data, mode):
    """Whole epochs as tfdist runs them: fresh permutation, floor(N/B) steps,
    evaluation on the test set after each; returns (seconds, accuracies)."""
    peer = Peer(args, data)
    step = build_step(mode, peer)
    n, B = peer.images.shape[0], peer.batch
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    accs = []
    sync(peer.dev)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        perm = torch.randperm(n, generator=gen).to(peer.dev)
        for i in range(n // B):
            step(perm[i * B:(i + 1) * B])
        accs.append(peer.evaluate())
    sync(peer.dev)
    return time.perf_counter() - t0, accs


def load(args):
    dev = torch.device(args.device)
    arrays = [read_idx(args.data_folder, s) for s in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    return [torch.from_numpy(a.copy()).to(dev).long() if a.ndim == 1
            else torch.from_numpy(a.copy()).to(dev) for a in arrays]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=HelpFormat)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data-folder", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--modes", default="eager,cudagraph,compile")
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--train-mode", default="eager")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"# PyTorch {torch.__version__} peer, 784-300-100-10, batch {args.batch}, lr {args.lr}, "
          f"{name}, {torch.get_num_threads()} CPU threads", flush=True)
    data = load(args)
    perm = torch.randperm(data[0].shape[0], generator=torch.Generator().manual_seed(0)).to(dev)
    summary = {"bench": "pytorch_mnist", "device": name, "torch": torch.__version__,
               "batch": args.batch, "modes": {}}
    for mode in [m for m in args.modes.split(",") if m]:
        t0 = time.perf_counter()
        try:
            peer = Peer(args, data)
            us = time_steps(peer, build_step(mode, peer), perm, args.steps, args.reps)
            res = {"step_us": round(us, 3), "samples_per_s": round(args.batch / us * 1e6),
                   "setup_s": round(time.perf_counter() - t0, 1)}
            print(f"  {mode:10s} {us:10.2f} us/step {args.batch / us * 1e6:12.0f} samples/s",
                  flush=True)
        except Exception as e:  # a mode that cannot run here is reported, not fatal
            res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            print(f"  {mode:10s} unavailable: {res['error']}", flush=True)
        summary["modes"][mode] = res
        print("JSON " + json.dumps({"bench": "pytorch_mnist_mode", "mode": mode, **res}), flush=True)
    if args.epochs > 0:
        secs, accs = train_epochs(args, data, args.train_mode)
        summary["train"] = {"mode": args.train_mode, "epochs": args.epochs,
                            "seconds": round(secs, 3), "final_acc": round(accs[-1], 4)}
        print(f"  train {args.epochs} epochs ({args.train_mode}): {secs:.2f} s, "
              f"validation_acc per epoch {[round(a, 4) for a in accs]}", flush=True)
    print("JSON " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
