"""The robustness suite's problems: small, seeded, each a different way a step-size rule can fail.

Each problem has a model, a training loss for step k (a minibatch, or the full batch), an evaluation loss,
and a step count. Every one is a pure function of its seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as Fn
from torch import nn


class Prob:
    """A problem: ``model``, ``batch_loss(k)`` (with a graph), ``eval_loss()`` (a float), ``steps``."""

    steps = 500

    def batch_loss(self, k):
        raise NotImplementedError

    def eval_loss(self):
        raise NotImplementedError


class NoisyLSQ(Prob):
    steps = 500

    def __init__(s, seed, d=20, noise=0.5, bs=16):
        g = torch.Generator().manual_seed(1000 + seed)
        s.g = g
        s.w_star = torch.randn(d, generator=g)
        s.noise, s.bs, s.d = noise, bs, d
        torch.manual_seed(seed)
        s.model = nn.Linear(d, 1)
        s.Xe = torch.randn(2000, d, generator=g)
        s.ye = s.Xe @ s.w_star + noise * torch.randn(2000, generator=g)

    def batch_loss(s, k):
        X = torch.randn(s.bs, s.d, generator=s.g)
        y = X @ s.w_star + s.noise * torch.randn(s.bs, generator=s.g)
        return 0.5 * ((s.model(X).squeeze(-1) - y) ** 2).mean()

    def eval_loss(s):
        return 0.5 * ((s.model(s.Xe).squeeze(-1) - s.ye) ** 2).mean().item()


class DetLSQ(Prob):
    steps = 300

    def __init__(s, seed, n=64, d=5, m=4):
        g = torch.Generator().manual_seed(2000 + seed)
        s.X = torch.randn(n, d, generator=g)
        W = torch.randn(m, d, generator=g)
        s.Y = s.X @ W.T
        torch.manual_seed(seed)
        s.model = nn.Linear(d, m, bias=False)

    def batch_loss(s, k):
        return ((s.model(s.X) - s.Y) ** 2).mean()

    def eval_loss(s):
        return ((s.model(s.X) - s.Y) ** 2).mean().item()


class LogReg(Prob):
    steps = 500

    def __init__(s, seed, d=20, bs=32, offset=0.0):
        g = torch.Generator().manual_seed(3000 + seed)
        s.g = g
        s.d, s.bs, s.offset = d, bs, offset
        s.w = torch.randn(d, generator=g) * 0.7
        torch.manual_seed(seed)
        s.model = nn.Linear(d, 1)
        s.Xe, s.ye = s._data(4000)

    def _data(s, n):
        X = torch.randn(n, s.d, generator=s.g)
        p = torch.sigmoid(X @ s.w)
        return X, torch.bernoulli(p, generator=s.g)

    def _loss(s, X, y):
        return Fn.binary_cross_entropy_with_logits(s.model(X).squeeze(-1), y) + s.offset

    def batch_loss(s, k):
        return s._loss(*s._data(s.bs))

    def eval_loss(s):
        return s._loss(s.Xe, s.ye).item()


class Digits(Prob):
    steps = 600

    def __init__(s, seed, smoothing=0.0, offset=0.0, bs=32):
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = torch.tensor(X, dtype=torch.float32) / 16.0
        y = torch.tensor(y)
        g = torch.Generator().manual_seed(4000)
        perm = torch.randperm(len(y), generator=g)
        s.Xt, s.yt = X[perm[:1400]], y[perm[:1400]]
        s.Xe, s.ye = X[perm[1400:]], y[perm[1400:]]
        s.g = torch.Generator().manual_seed(seed)
        s.bs = bs
        s.sm, s.offset = smoothing, offset
        torch.manual_seed(seed)
        s.model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def _loss(s, X, y):
        return Fn.cross_entropy(s.model(X), y, label_smoothing=s.sm) + s.offset

    def batch_loss(s, k):
        i = torch.randint(0, len(s.yt), (s.bs,), generator=s.g)
        return s._loss(s.Xt[i], s.yt[i])

    def eval_loss(s):
        return s._loss(s.Xe, s.ye).item()


class TeacherMLP(Prob):
    steps = 400

    def __init__(s, seed, n=128, d=8):
        g = torch.Generator().manual_seed(5000 + seed)
        s.X = torch.randn(n, d, generator=g)
        t = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 1))
        with torch.no_grad():
            for p in t.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            s.Y = t(s.X)
        torch.manual_seed(seed)
        s.model = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 1))

    def batch_loss(s, k):
        return ((s.model(s.X) - s.Y) ** 2).mean()

    def eval_loss(s):
        return ((s.model(s.X) - s.Y) ** 2).mean().item()


class DeepLinearPlateau(Prob):
    steps = 800

    def __init__(s, seed, d=16, depth=4, bs=32):
        g = torch.Generator().manual_seed(6000 + seed)
        s.g = g
        s.d, s.bs = d, bs
        s.A = torch.randn(d, d, generator=g) / math.sqrt(d)
        torch.manual_seed(seed)
        layers = [nn.Linear(d, d, bias=False) for _ in range(depth)]
        for l in layers:
            nn.init.normal_(l.weight, std=0.05)
        s.model = nn.Sequential(*layers)
        s.Xe = torch.randn(1000, d, generator=g)

    def batch_loss(s, k):
        X = torch.randn(s.bs, s.d, generator=s.g)
        return ((s.model(X) - X @ s.A.T) ** 2).sum(-1).mean()

    def eval_loss(s):
        return ((s.model(s.Xe) - s.Xe @ s.A.T) ** 2).sum(-1).mean().item()


class LlamaToken(Prob):
    steps = 300
    V = 128

    def __init__(s, seed, bs=8, T=32):
        import transformers

        cfg = transformers.LlamaConfig(
            vocab_size=s.V,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=T,
        )
        torch.manual_seed(seed)
        s.model = transformers.LlamaForCausalLM(cfg)
        gp = torch.Generator().manual_seed(7000)
        s.perm = torch.randperm(s.V, generator=gp)
        s.g = torch.Generator().manual_seed(seed + 10)
        s.bs, s.T = bs, T
        ge = torch.Generator().manual_seed(7001)
        s.eval_ids = s._data(64, ge)

    def _data(s, n, g):
        ids = torch.empty(n, s.T, dtype=torch.long)
        ids[:, 0] = torch.randint(0, s.V, (n,), generator=g)
        for t in range(1, s.T):
            ids[:, t] = (s.perm[ids[:, t - 1]] + torch.randint(0, 3, (n,), generator=g)) % s.V
        return ids

    def _loss(s, ids):
        return s.model(input_ids=ids, labels=ids).loss

    def batch_loss(s, k):
        return s._loss(s._data(s.bs, s.g))

    def eval_loss(s):
        return s._loss(s.eval_ids).item()


#: name -> (constructor of a seed, what it tests)
PROBLEMS = {
    "noisy_lsq": NoisyLSQ,
    "det_lsq": DetLSQ,
    "logreg": LogReg,
    "logreg_offset10": lambda seed: LogReg(seed, offset=10.0),
    "digits_mlp": Digits,
    "digits_smooth": lambda seed: Digits(seed, smoothing=0.3),
    "teacher_mlp": TeacherMLP,
    "plateau": DeepLinearPlateau,
    "llama_token": LlamaToken,
}

_CORPUS = {}


class LabGPT(Prob):
    def __init__(s, seed, size="6k", data="debian", bs=32, T=64, steps=300, evalw=8):
        import numpy as np

        from sfplus_lab.bench.config import model_config
        from sfplus_lab.data import get_batch, load_corpus
        from sfplus_lab.model import GPT

        if data not in _CORPUS:
            _CORPUS[data] = load_corpus(None if data == "builtin" else [data])
        c = _CORPUS[data]
        s.c = c
        s.get_batch = get_batch
        torch.manual_seed(seed)
        s.model = GPT(model_config(size, c.vocab_size, T))
        s.seed, s.bs, s.T, s.steps = seed, bs, T, steps
        ev = []
        for toks in c.val.values():
            n = (len(toks) - 1) // T
            idx = np.linspace(0, n - 1, evalw).astype(int)
            for i in idx:
                ev.append(toks[i * T : (i * T) + T + 1])
        ev = torch.tensor(np.stack(ev).astype(np.int64))
        s.ex, s.ey = ev[:, :-1], ev[:, 1:]

    def _loss(s, x, y):
        return s.model(x, y)[1]

    def batch_loss(s, k):
        x, y = s.get_batch(s.c.train, batch_size=s.bs, seq_len=s.T, seed=s.seed, step=k)
        return s._loss(x, y)

    def eval_loss(s):
        return s._loss(s.ex, s.ey).item()


PROBLEMS["gpt6k_builtin"] = lambda seed: LabGPT(seed, "6k", data="builtin", steps=600)
