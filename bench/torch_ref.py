#!/usr/bin/env python3
"""PyTorch reference for the training benchmark (`cargo bench --bench train`).

The homework CNN the way its PyTorch script trains it, with the same model, hyper-parameters
and data files as orchestrate, so `benches/train.rs` can time both sides on the same machine.
Every subcommand prints one JSON object on the last line of stdout; timings exclude Python
and torch start-up except for `run`, which stands for one invocation of the homework script
in a shell loop and reports its own wall time from process start.

  torch_ref.py info                         versions and thread defaults
  torch_ref.py train --batch 8 --steps 300 --threads 1
  torch_ref.py eval --threads 1 --passes 5
  torch_ref.py run --lr 0.0005 --epochs 2 --train-limit 2000 --test-limit 1000
  torch_ref.py peak --threads 1             fp32 matmul GFLOP/s (torch, else numpy)

Exit status 3 with a message on stderr when torch is not installed (`pip install torch`).
"""

import argparse
import gzip
import json
import os
import sys
import time

PROCESS_START = time.perf_counter()

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data", "fashion-mnist-mini")
NO_TORCH = 3


def read_idx(path):
    """An IDX file (optionally gzip-compressed) as a numpy array of its declared shape."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file holds {data.size} bytes")
    return data.reshape(dims)


def load(split, limit=0):
    """`split` ("train" or "t10k") as float images (N, 1, 28, 28) in [0, 1] and int64 labels."""
    x = read_idx(os.path.join(DATA, f"{split}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(DATA, f"{split}-labels-idx1-ubyte.gz"))
    if limit:
        x, y = x[:limit], y[:limit]
    x = (x.astype(np.float32) / 255.0)[:, None, :, :]
    return x, y.astype(np.int64)


def need_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        print(
            "torch is not installed: `pip install torch` (about 3 GB with its CUDA wheels) "
            "to run the PyTorch side of the benchmark",
            file=sys.stderr,
        )
        sys.exit(NO_TORCH)
    return torch


def make_model(torch):
    """The homework CNN: 420,906 parameters, log-softmax output."""
    nn = torch.nn

    class Cnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 5, padding=2)
            self.conv2 = nn.Conv2d(8, 16, 3)
            self.fc1 = nn.Linear(576, 600)
            self.drop = nn.Dropout(0.3)
            self.fc2 = nn.Linear(600, 120)
            self.fc3 = nn.Linear(120, 10)

        def forward(self, x):
            f = torch.nn.functional
            x = f.max_pool2d(f.relu(self.conv1(x)), 2)
            x = f.max_pool2d(f.relu(self.conv2(x)), 2)
            x = x.flatten(1)
            x = self.drop(f.relu(self.fc1(x)))
            x = f.relu(self.fc2(x))
            return f.log_softmax(self.fc3(x), dim=1)

    return Cnn()


def setup(threads, seed=7):
    torch = need_torch()
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return torch


def train_steps(torch, model, opt, xs, ys, batch, steps, start_at=0, max_seconds=float("inf")):
    """Up to `steps` optimizer steps over consecutive batches of (xs, ys), wrapping around,
    stopping once `max_seconds` have passed; returns (steps done, last loss). Reads the loss
    every step like the homework script (and our loop) do."""
    f = torch.nn.functional
    n = xs.shape[0]
    pos = start_at
    loss_value = 0.0
    started = time.perf_counter()
    done = 0
    while done < steps and time.perf_counter() - started < max_seconds:
        done += 1
        if pos + batch > n:
            pos = 0
        xb, yb = xs[pos : pos + batch], ys[pos : pos + batch]
        pos += batch
        opt.zero_grad()
        loss = f.nll_loss(model(xb), yb)
        loss.backward()
        opt.step()
        loss_value = loss.item()
    return done, loss_value


def cmd_train(a):
    torch = setup(a.threads)
    x, y = load("train")
    perm = torch.randperm(x.shape[0])
    xs, ys = torch.from_numpy(x)[perm].contiguous(), torch.from_numpy(y)[perm].contiguous()
    model = make_model(torch)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    train_steps(torch, model, opt, xs, ys, a.batch, a.warmup)
    t = time.perf_counter()
    done, loss = train_steps(torch, model, opt, xs, ys, a.batch, a.steps, a.warmup * a.batch,
                             a.max_seconds)
    seconds = time.perf_counter() - t
    images = done * a.batch
    emit(images_per_s=images / seconds, seconds=seconds, images=images, loss=loss,
         threads=torch.get_num_threads())


def evaluate(torch, model, x, y, batch=1000):
    """Mean NLL and accuracy of (x, y) in batches of `batch`, no gradients."""
    f = torch.nn.functional
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            xb, yb = x[s : s + batch], y[s : s + batch]
            logp = model(xb)
            loss_sum += f.nll_loss(logp, yb).item() * xb.shape[0]
            correct += int((logp.argmax(1) == yb).sum().item())
    model.train()
    n = max(x.shape[0], 1)
    return loss_sum / n, correct / n


def cmd_eval(a):
    torch = setup(a.threads)
    x, y = load("t10k")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = make_model(torch)
    evaluate(torch, model, x, y)
    t = time.perf_counter()
    for _ in range(a.passes):
        evaluate(torch, model, x, y)
    seconds = time.perf_counter() - t
    images = a.passes * x.shape[0]
    emit(images_per_s=images / seconds, seconds=seconds, images=images,
         threads=torch.get_num_threads())


def cmd_run(a):
    """One grid run as the homework script does it: train `epochs` epochs over shuffled
    batches, evaluate dev after each, test after the last."""
    torch = setup(a.threads, a.seed)
    x, y = load("train", a.train_limit)
    xt, yt = load("t10k", a.test_limit)
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(x.shape[0])
    n_dev = round(x.shape[0] * a.dev_fraction)
    dev_idx, train_idx = np.sort(perm[:n_dev]), np.sort(perm[n_dev:])
    xtr, ytr = torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx])
    xdev, ydev = torch.from_numpy(x[dev_idx]), torch.from_numpy(y[dev_idx])
    xt, yt = torch.from_numpy(xt), torch.from_numpy(yt)
    model = make_model(torch)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    f = torch.nn.functional
    history = []
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = torch.randperm(xtr.shape[0])
        total, steps = 0.0, 0
        for s in range(0, xtr.shape[0], a.batch):
            idx = order[s : s + a.batch]
            opt.zero_grad()
            loss = f.nll_loss(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        dev_loss, dev_acc = evaluate(torch, model, xdev, ydev)
        history.append({"epoch": epoch, "train_loss": total / steps, "dev_loss": dev_loss,
                        "dev_accuracy": dev_acc})
    test_loss, test_acc = evaluate(torch, model, xt, yt)
    emit(seconds=time.perf_counter() - PROCESS_START, lr=a.lr, epochs=history,
         test_accuracy=test_acc, threads=torch.get_num_threads())


def cmd_peak(a):
    """Best fp32 GFLOP/s of an n x n matmul over `reps` tries (2 n^3 FLOP each)."""
    n, reps = a.n, a.reps
    try:
        import torch

        torch.set_num_threads(a.threads)
        p = torch.rand(n, n)
        q = torch.rand(n, n)
        mm = lambda: torch.mm(p, q)  # noqa: E731
        lib = f"torch {torch.__version__} mm"
    except ImportError:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
        p = np.random.rand(n, n).astype(np.float32)
        q = np.random.rand(n, n).astype(np.float32)
        mm = lambda: p @ q  # noqa: E731
        lib = f"numpy {np.__version__} matmul (threads follow OPENBLAS_NUM_THREADS)"
    mm()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t)
    emit(gflops=2 * n**3 / best / 1e9, n=n, library=lib, threads=a.threads)


def cmd_info(_a):
    info = {"python": sys.version.split()[0], "numpy": np.__version__}
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except ImportError:
        info["torch"] = None
    emit(**info)


def emit(**fields):
    print(json.dumps(fields))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="training throughput")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--warmup", type=int, default=20)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--max-seconds", type=float, default=float("inf"),
                   help="stop the timed steps early after this long")
    e = sub.add_parser("eval", help="evaluation throughput (batches of 1000)")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--passes", type=int, default=5)
    r = sub.add_parser("run", help="one grid run, timed from process start")
    r.add_argument("--lr", type=float, required=True)
    r.add_argument("--epochs", type=int, default=2)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--train-limit", type=int, default=0)
    r.add_argument("--test-limit", type=int, default=0)
    r.add_argument("--dev-fraction", type=float, default=0.1)
    r.add_argument("--threads", type=int, default=0, help="0 = torch's default (all cores)")
    r.add_argument("--seed", type=int, default=7)
    k = sub.add_parser("peak", help="fp32 matmul GFLOP/s")
    k.add_argument("--threads", type=int, default=1)
    k.add_argument("--n", type=int, default=2048)
    k.add_argument("--reps", type=int, default=5)
    sub.add_parser("info", help="versions")
    a = p.parse_args()
    {"train": cmd_train, "eval": cmd_eval, "run": cmd_run, "peak": cmd_peak,
     "info": cmd_info}[a.cmd](a)


if __name__ == "__main__":
    main()
