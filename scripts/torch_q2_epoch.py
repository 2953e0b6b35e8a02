#!/usr/bin/env python3
"""PyTorch twin of the homework Q2 CNN, timed per epoch on one GPU (used by device-check.sh).

Same network, data, dev split size, batch size and optimizer as experiments/q2_grid.toml
(conv 8@5x5 pad 2 -> ReLU -> pool 2 -> conv 16@3x3 -> ReLU -> pool 2 -> 576->600->120->10,
dropout 0.3, Adam) and the same shape of epoch as orchestrate's `time/epoch_seconds`: a shuffled
pass over the training split with the data already on the GPU, then a dev evaluation. Epoch 1
warms up (cuDNN autotuning, allocator); the script prints the later epochs' seconds as JSON.

usage: torch_q2_epoch.py DATA_DIR [--batch 8] [--epochs 3] [--lr 0.0005] [--device cuda:0]
"""
import argparse
import gzip
import json
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, raw[4 : 4 + 4 * dims])
    return torch.frombuffer(bytearray(raw[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 5, padding=2)
        self.c2 = nn.Conv2d(8, 16, 3)
        self.f1 = nn.Linear(16 * 6 * 6, 600)
        self.f2 = nn.Linear(600, 120)
        self.f3 = nn.Linear(120, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        x = F.dropout(F.relu(self.f1(x.flatten(1))), 0.3, self.training)
        x = F.relu(self.f2(x))
        return F.log_softmax(self.f3(x), dim=1)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.0005)
    ap.add_argument("--device", default="cuda:0")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(42)
    x = read_idx(f"{a.data_dir}/train-images-idx3-ubyte.gz").float().div(255).unsqueeze(1)
    y = read_idx(f"{a.data_dir}/train-labels-idx1-ubyte.gz").long()
    n_dev = round(len(x) * 0.1)
    perm = torch.randperm(len(x))
    x, y = x[perm].to(dev), y[perm].to(dev)
    xd, yd, xt, yt = x[:n_dev], y[:n_dev], x[n_dev:], y[n_dev:]
    model = Net().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    seconds = []
    for _ in range(a.epochs):
        sync(dev)
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(xt), device=dev)
        for i in range(0, len(xt), a.batch):
            idx = order[i : i + a.batch]
            opt.zero_grad(set_to_none=True)
            loss = F.nll_loss(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xd).argmax(1) == yd).float().mean().item()
        sync(dev)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "batch": a.batch,
        "train_images": len(xt),
        "epoch_seconds": seconds,
        "steady_epoch_seconds": min(seconds[1:]) if len(seconds) > 1 else seconds[0],
        "dev_accuracy": acc,
    }))


if __name__ == "__main__":
    main()
