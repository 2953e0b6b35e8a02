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
  torch_ref.py train-seq2seq --batch 64 --steps 50 --threads 1 [--attention]
  torch_ref.py run-seq2seq --epochs 10 [--attention] [--strategy beam]

The seq2seq subcommands are the homework Q3 translator (BiLSTM encoder, LSTM decoder, Luong
"general" attention, tied output projection, teacher forcing, greedy and beam decoding, error
rate = Levenshtein / len(gold)) with the defaults of experiments/q3_attention.toml, on
data/spa-eng-mini by default.

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


# ---------------------------------------------------------------------------------------
# Seq2seq (homework Q3), written the way a student's PyTorch script would be: nn.Embedding,
# a bidirectional nn.LSTM over packed sequences, an nn.LSTM decoder run over the whole
# teacher-forced target at once, attention as batched matrix products over all target steps
# (Luong attention is computed on the decoder's output and not fed back, so this is exact).

PAD, SOS, EOS, UNK = 0, 1, 2, 3
N_SPECIAL = 4
SPA_ENG = os.path.join(REPO, "data", "spa-eng-mini")


def read_pairs(path, source_column=1, target_column=0, max_len=20, limit=0):
    """TSV pairs, lower-cased and stripped, both sides shorter than `max_len` characters and
    the source not empty; the first `limit` kept (0 = all)."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            cols = line.split("\t")
            src, tgt = cols[source_column].strip().lower(), cols[target_column].strip().lower()
            if src and (max_len == 0 or (len(src) < max_len and len(tgt) < max_len)):
                pairs.append((src, tgt))
    return pairs[:limit] if limit else pairs


class Vocab:
    """Specials first, then every training character in code-point order."""

    def __init__(self, texts):
        self.chars = sorted(set("".join(texts)))
        self.index = {c: i + N_SPECIAL for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars) + N_SPECIAL

    def encode(self, s):
        return [self.index.get(c, UNK) for c in s]

    def decode(self, ids):
        out = []
        for i in ids:
            if i == EOS:
                break
            if i == UNK:
                out.append("\ufffd")
            elif i >= N_SPECIAL:
                out.append(self.chars[i - N_SPECIAL])
        return "".join(out)


def load_pairs(a):
    d = a.data_dir
    train = read_pairs(os.path.join(d, "train-eng-spa.txt"), max_len=a.max_len,
                       limit=a.train_limit)
    dev = read_pairs(os.path.join(d, "val-eng-spa.txt"), max_len=a.max_len, limit=a.test_limit)
    test = read_pairs(os.path.join(d, "test-eng-spa.txt"), max_len=a.max_len,
                      limit=a.test_limit)
    sv, tv = Vocab(p[0] for p in train), Vocab(p[1] for p in train)
    enc = lambda ps: [(sv.encode(s), tv.encode(t)) for s, t in ps]  # noqa: E731
    return enc(train), enc(dev), enc(test), sv, tv, dev, test


def make_batch(torch, examples):
    """Padded tensors: src [B, S], src lengths [B], tgt_in (SOS + chars) and tgt_out
    (chars + EOS) [B, T], PAD elsewhere."""
    b = len(examples)
    s = max(len(e[0]) for e in examples)
    t = max(len(e[1]) for e in examples) + 1
    src = torch.zeros(b, s, dtype=torch.long)
    tin = torch.zeros(b, t, dtype=torch.long)
    tout = torch.zeros(b, t, dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        src[i, : len(x)] = torch.tensor(x)
        tin[i, 0] = SOS
        tin[i, 1 : len(y) + 1] = torch.tensor(y, dtype=torch.long)
        tout[i, : len(y)] = torch.tensor(y, dtype=torch.long)
        tout[i, len(y)] = EOS
    lens = torch.tensor([len(e[0]) for e in examples])
    return src, lens, tin, tout


def make_seq2seq(torch, src_vocab, tgt_vocab, attention, emb=128, enc_hidden=64,
                 dec_hidden=128, dropout=0.0):
    nn = torch.nn
    f = torch.nn.functional

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.src_emb = nn.Embedding(src_vocab, emb, padding_idx=PAD)
            self.encoder = nn.LSTM(emb, enc_hidden, batch_first=True, bidirectional=True)
            self.tgt_emb = nn.Embedding(tgt_vocab, emb, padding_idx=PAD)
            self.decoder = nn.LSTM(emb, dec_hidden, batch_first=True)
            self.attention = attention
            if attention:
                self.linear_in = nn.Linear(dec_hidden, 2 * enc_hidden, bias=False)
                self.linear_out = nn.Linear(dec_hidden + 2 * enc_hidden, dec_hidden)
            self.generator = nn.Linear(dec_hidden, tgt_vocab)
            self.generator.weight = self.tgt_emb.weight  # tied (emb == dec_hidden)
            self.drop = nn.Dropout(dropout)

        def encode(self, src, lens):
            x = self.drop(self.src_emb(src))
            packed = nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True,
                                                       enforce_sorted=False)
            out, (h, c) = self.encoder(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                      total_length=src.shape[1])
            # Both directions' final states, concatenated: the decoder's first state.
            h = torch.cat([h[0], h[1]], 1).unsqueeze(0)
            c = torch.cat([c[0], c[1]], 1).unsqueeze(0)
            memory = None
            if self.attention:
                values = self.drop(out)
                bias = (src == PAD).float().unsqueeze(1) * -1e9  # [B, 1, S]
                memory = (values, bias)
            return (h, c), memory

        def attend(self, q, memory):
            """q [B, T, Hd] -> attentional output [B, T, Hd], weights [B, T, S]."""
            values, bias = memory
            scores = torch.bmm(self.linear_in(q), values.transpose(1, 2)) + bias
            w = f.softmax(scores, dim=-1)
            context = torch.bmm(w, values)
            return torch.tanh(self.linear_out(torch.cat([q, context], -1))), w

        def forward(self, src, lens, tgt_in):
            state, memory = self.encode(src, lens)
            out, _ = self.decoder(self.drop(self.tgt_emb(tgt_in)), state)
            if self.attention:
                out, _ = self.attend(out, memory)
            return self.generator(self.drop(out))

        def step(self, tokens, state, memory):
            """One decoding step: log-probabilities [N, V], new state, weights [N, S]."""
            out, state = self.decoder(self.tgt_emb(tokens).unsqueeze(1), state)
            w = None
            if self.attention:
                out, w = self.attend(out, memory)
                w = w.squeeze(1)
            return f.log_softmax(self.generator(out.squeeze(1)), -1), state, w

    return Seq2Seq()


def seq2seq_loss(torch, model, batch):
    """Teacher-forced cross-entropy, mean over the non-padding target tokens."""
    src, lens, tin, tout = batch
    logits = model(src, lens, tin)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             tout.reshape(-1), ignore_index=PAD)


def greedy(torch, model, src, lens, max_len):
    """Token lists and summed log-probabilities of the most probable next characters."""
    state, memory = model.encode(src, lens)
    n = src.shape[0]
    tokens = torch.full((n,), SOS, dtype=torch.long)
    finished = torch.zeros(n, dtype=torch.bool)
    logprob = torch.zeros(n, dtype=torch.float64)
    out = []
    for _ in range(max_len):
        logp, state, _ = model.step(tokens, state, memory)
        best, tokens = logp.max(-1)
        logprob += torch.where(finished, 0.0, best.double())
        out.append(torch.where(finished, PAD, tokens))
        finished |= tokens == EOS
        if bool(finished.all()):
            break
    seqs = torch.stack(out, 1).tolist()
    hyps = []
    for i, row in enumerate(seqs):
        toks, done = [], False
        for t in row:
            if t == EOS:
                done = True
                break
            toks.append(t)
        hyps.append((toks, float(logprob[i]), done))
    return hyps


def score(logprob, steps, alpha):
    return logprob if alpha == 0 else logprob / max(steps, 1) ** alpha


def beam_search(torch, model, src, lens, width, alpha, max_len):
    """Beam search over all sentences and beams at once: beams pruned by summed
    log-probability, the final pick by logprob / steps^alpha among finished and cut
    hypotheses, and never below the greedy output (as orchestrate's decoder)."""
    k = width
    n = src.shape[0]
    state, memory = model.encode(src, lens)
    rep = torch.arange(n).repeat_interleave(k)
    state = tuple(s[:, rep] for s in state)
    if memory is not None:
        memory = tuple(m[rep] for m in memory)
    neg = float("-inf")
    logprob = torch.full((n, k), neg, dtype=torch.float64)
    logprob[:, 0] = 0.0
    finished = torch.zeros(n, k, dtype=torch.bool)
    steps = torch.zeros(n, k, dtype=torch.long)
    seqs = torch.zeros(n, k, 0, dtype=torch.long)
    tokens = torch.full((n * k,), SOS, dtype=torch.long)
    for _ in range(max_len):
        alive = torch.isfinite(logprob) & ~finished
        if not bool(alive.any()):
            break
        logp, state, _ = model.step(tokens, state, memory)
        v = logp.shape[-1]
        logp = logp.double().view(n, k, v)
        # A finished hypothesis carries over once, unchanged, as its "EOS" candidate.
        carry = torch.full((v,), neg, dtype=torch.float64)
        carry[EOS] = 0.0
        logp = torch.where(finished.unsqueeze(-1), carry, logp)
        cand = (logprob.unsqueeze(-1) + logp).view(n, k * v)
        top, idx = cand.topk(k, dim=1)
        parent, tok = idx // v, idx % v
        was_finished = finished.gather(1, parent)
        seqs = torch.cat([seqs.gather(1, parent.unsqueeze(-1).expand(-1, -1, seqs.shape[2])),
                          torch.where(was_finished, PAD, tok).unsqueeze(-1)], 2)
        steps = steps.gather(1, parent) + (~was_finished).long()
        finished = was_finished | (tok == EOS)
        logprob = top
        rows = (torch.arange(n).unsqueeze(1) * k + parent).view(-1)
        state = tuple(s[:, rows] for s in state)
        tokens = torch.where(finished, EOS, tok).view(-1)
    seqs, logprob, steps, finished = seqs.tolist(), logprob.tolist(), steps.tolist(), \
        finished.tolist()
    best = []
    for i in range(n):
        cands = []
        for j in range(k):
            if logprob[i][j] == neg:
                continue
            toks = [t for t in seqs[i][j] if t not in (PAD, EOS)]
            cands.append((score(logprob[i][j], steps[i][j], alpha),
                          (toks, logprob[i][j], finished[i][j])))
        best.append(max(cands, key=lambda c: c[0]))
    if k > 1:
        for i, g in enumerate(greedy(torch, model, src, lens, max_len)):
            gs = score(g[1], len(g[0]) + int(g[2]), alpha)
            if gs > best[i][0]:
                best[i] = (gs, g)
    return [b[1] for b in best]


def levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a):
        cur = [i + 1]
        for j, cb in enumerate(b):
            cur.append(min(prev[j] + (ca != cb), prev[j + 1] + 1, cur[j] + 1))
        prev = cur
    return prev[-1]


def evaluate_seq2seq(torch, model, examples, pairs, tv, a, batch=200):
    """Teacher-forced loss and the error rate of the decoded outputs, no gradients."""
    model.eval()
    loss_sum, count, preds = 0.0, 0, []
    with torch.no_grad():
        for s in range(0, len(examples), batch):
            chunk = examples[s : s + batch]
            b = make_batch(torch, chunk)
            tokens = int((b[3] != PAD).sum())
            loss_sum += seq2seq_loss(torch, model, b).item() * tokens
            count += tokens
            if a.strategy == "beam":
                hyps = beam_search(torch, model, b[0], b[1], a.beam_width, a.length_penalty,
                                   a.decode_max_len)
            else:
                hyps = greedy(torch, model, b[0], b[1], a.decode_max_len)
            preds.extend(tv.decode(h[0]) for h in hyps)
    model.train()
    errors = [levenshtein(p, g[1]) / max(len(g[1]), 1) for p, g in zip(preds, pairs)]
    n = max(len(errors), 1)
    return loss_sum / max(count, 1), sum(errors) / n, \
        sum(p == g[1] for p, g in zip(preds, pairs)) / n


def cmd_train_seq2seq(a):
    torch = setup(a.threads)
    train, _, _, sv, tv, _, _ = load_pairs(a)
    model = make_seq2seq(torch, len(sv), len(tv), a.attention, dropout=a.dropout)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    # Consecutive batches of one shuffled order, wrapping around, made up front.
    order = torch.randperm(len(train)).tolist()
    batches = [make_batch(torch, [train[order[(s + j) % len(train)]] for j in range(a.batch)])
               for s in range(0, len(train), a.batch)]

    def steps(count, max_seconds=float("inf")):
        started, done, loss = time.perf_counter(), 0, 0.0
        while done < count and time.perf_counter() - started < max_seconds:
            opt.zero_grad()
            out = seq2seq_loss(torch, model, batches[done % len(batches)])
            out.backward()
            opt.step()
            loss = out.item()
            done += 1
        return done, loss

    steps(a.warmup)
    t = time.perf_counter()
    done, loss = steps(a.steps, a.max_seconds)
    seconds = time.perf_counter() - t
    emit(steps_per_s=done / seconds, sentences_per_s=done * a.batch / seconds,
         seconds=seconds, steps=done, loss=loss, threads=torch.get_num_threads())


def cmd_run_seq2seq(a):
    """One Q3 grid run as a homework script does it: train `epochs` epochs over shuffled
    batches, dev loss and error rate after each, test error rate after the last. Reports its
    wall time from process start and the seconds spent in the training steps alone."""
    torch = setup(a.threads, a.seed)
    train, dev, test, sv, tv, dev_pairs, test_pairs = load_pairs(a)
    model = make_seq2seq(torch, len(sv), len(tv), a.attention, dropout=a.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    history = []
    train_seconds = 0.0
    for epoch in range(1, a.epochs + 1):
        model.train()
        began = time.perf_counter()
        order = torch.randperm(len(train)).tolist()
        total, tokens = 0.0, 0
        for s in range(0, len(train), a.batch):
            b = make_batch(torch, [train[i] for i in order[s : s + a.batch]])
            opt.zero_grad()
            loss = seq2seq_loss(torch, model, b)
            loss.backward()
            opt.step()
            n = int((b[3] != PAD).sum())
            total += loss.item() * n
            tokens += n
        train_seconds += time.perf_counter() - began
        dev_loss, dev_err, _ = evaluate_seq2seq(torch, model, dev, dev_pairs, tv, a)
        history.append({"epoch": epoch, "train_loss": total / tokens, "dev_loss": dev_loss,
                        "dev_error_rate": dev_err})
    _, test_err, test_acc = evaluate_seq2seq(torch, model, test, test_pairs, tv, a)
    emit(seconds=time.perf_counter() - PROCESS_START, train_seconds=train_seconds,
         attention=a.attention,
         strategy=a.strategy, epochs=history, test_error_rate=test_err,
         test_accuracy=test_acc, threads=torch.get_num_threads())


def seq2seq_args(p):
    """Options shared by the seq2seq subcommands; defaults of experiments/q3_attention.toml."""
    p.add_argument("--attention", action="store_true", help="Luong general attention")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--data-dir", default=SPA_ENG)
    p.add_argument("--max-len", type=int, default=30, help="data.max_len")
    p.add_argument("--train-limit", type=int, default=0)
    p.add_argument("--test-limit", type=int, default=0)


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
    ts = sub.add_parser("train-seq2seq", help="seq2seq training throughput")
    seq2seq_args(ts)
    ts.add_argument("--steps", type=int, default=50)
    ts.add_argument("--warmup", type=int, default=5)
    ts.add_argument("--threads", type=int, default=1)
    ts.add_argument("--max-seconds", type=float, default=float("inf"))
    rs = sub.add_parser("run-seq2seq", help="one Q3 grid run, timed from process start")
    seq2seq_args(rs)
    rs.add_argument("--epochs", type=int, default=10)
    rs.add_argument("--strategy", choices=["greedy", "beam"], default="greedy")
    rs.add_argument("--beam-width", type=int, default=5)
    rs.add_argument("--length-penalty", type=float, default=1.0)
    rs.add_argument("--decode-max-len", type=int, default=50)
    rs.add_argument("--threads", type=int, default=0, help="0 = torch's default (all cores)")
    rs.add_argument("--seed", type=int, default=42)
    sub.add_parser("info", help="versions")
    a = p.parse_args()
    {"train": cmd_train, "eval": cmd_eval, "run": cmd_run, "peak": cmd_peak,
     "info": cmd_info, "train-seq2seq": cmd_train_seq2seq,
     "run-seq2seq": cmd_run_seq2seq}[a.cmd](a)


if __name__ == "__main__":
    main()
