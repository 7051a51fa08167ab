"""A small modern GPT for the lab: pre-norm, RMSNorm, rotary positions, SwiGLU, tied embeddings.

One file you can read top to bottom (nanoGPT's shape). The same code runs a 50k-parameter model on a
laptop CPU in fp32 and a 100M+ model on a GPU under bf16 autocast (``forward_context``) and, if asked,
``torch.compile`` (``maybe_compile``): the command line does not change when the hardware does.

Shape suffixes on tensor names (the legend):
    B: batch size          T: sequence length (tokens)        D: model width (d_model)
    H: attention heads     K: head width (D // H)             V: vocabulary size
    F: feed-forward width  N: B * T flattened
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

__all__ = ["GPT", "ModelConfig", "model_preset", "PRESETS", "forward_context", "maybe_compile"]


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """The architecture: everything a checkpoint needs to rebuild the model (and nothing about hardware)."""

    vocab_size: int = 256
    """Number of token ids (256 for the byte tokenizer)."""
    seq_len: int = 128
    """Longest context the model is trained on; sizes the rotary tables."""
    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide d_model, and d_model // n_head must be even (rotary pairs)."""
    d_model: int = 128
    """Residual stream width."""
    d_ff: int = 0
    """SwiGLU hidden width; 0 picks 8/3 * d_model rounded up to a multiple of 16 (the MLP then has ~8 D^2 params)."""
    rope_base: float = 10000.0
    """Rotary frequency base."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the normal init; residual output projections are further scaled by 1/sqrt(2 * n_layer)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"model {name} must be a positive integer, got {value!r}")
        if isinstance(self.d_ff, bool) or not isinstance(self.d_ff, int) or self.d_ff < 0:
            raise UserError(f"model d_ff must be a non-negative integer (0 = automatic), got {self.d_ff!r}")
        if self.d_model % self.n_head != 0:
            raise UserError(f"model d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if (self.d_model // self.n_head) % 2 != 0:
            raise UserError(f"model head width d_model/n_head={self.d_model // self.n_head} must be even for rotary")
        for name in ("rope_base", "norm_eps", "init_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"model {name} must be a positive finite number, got {value!r}")

    @property
    def ff_width(self) -> int:
        """The SwiGLU hidden width actually used."""
        return self.d_ff or 16 * math.ceil(8 * self.d_model / 3 / 16)

    def to_dict(self) -> dict:
        return asdict(self)


#: preset -> (n_layer, n_head, d_model): the one list of model sizes, read by ``sfplus train --model`` and
#: ``sfplus bench --sizes``. Counts below are num_params() with the byte vocabulary (256), embeddings
#: included; a larger vocabulary adds vocab_size * d_model. The four smallest are the benchmark's: small
#: enough for a full sweep up to 1000 tokens/parameter on two shared CPU cores.
PRESETS: dict[str, tuple[int, int, int]] = {
    "3k": (1, 2, 8),  # 3,096 params
    "6k": (2, 2, 12),  # 6,588
    "10k": (2, 2, 16),  # 10,832
    "20k": (2, 2, 24),  # 20,088
    "50k": (3, 2, 32),  # 48,352 params
    "100k": (3, 3, 48),  # 95,568
    "250k": (5, 4, 64),  # 267,968
    "1m": (5, 4, 128),  # 1,037,696
    "10m": (12, 8, 256),  # 9,558,272
    "100m": (14, 12, 768),  # 99,309,312
}


def model_preset(size: str, vocab_size: int = 256, seq_len: int = 128) -> ModelConfig:
    """The ModelConfig of a named size ("3k" ... "100m"); unknown names raise a UserError listing the choices."""
    key = str(size).lower()
    if key not in PRESETS:
        raise UserError(f"unknown model size {size!r}; choose one of {', '.join(PRESETS)}")
    n_layer, n_head, d_model = PRESETS[key]
    return ModelConfig(vocab_size=vocab_size, seq_len=seq_len, n_layer=n_layer, n_head=n_head, d_model=d_model)


def rotary_tables(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (T, K/2): position t rotates channel pair i by t * base^(-2i/K)."""
    inv_freq_K2 = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angle_TK2 = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq_K2[None, :]
    return angle_TK2.cos().float(), angle_TK2.sin().float()


def apply_rotary(x_BHTK: torch.Tensor, cos_TK2: torch.Tensor, sin_TK2: torch.Tensor) -> torch.Tensor:
    """Rotate the (first half, second half) channel pairs of q or k by their position's angle."""
    half = x_BHTK.shape[-1] // 2
    x1_BHTK2, x2_BHTK2 = x_BHTK[..., :half], x_BHTK[..., half:]
    cos_TK2, sin_TK2 = cos_TK2.to(x_BHTK.dtype), sin_TK2.to(x_BHTK.dtype)
    rotated1 = x1_BHTK2 * cos_TK2 - x2_BHTK2 * sin_TK2
    rotated2 = x1_BHTK2 * sin_TK2 + x2_BHTK2 * cos_TK2
    return torch.cat([rotated1, rotated2], dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with rotary q/k; the kernel is torch's scaled_dot_product_attention."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x_BTD: torch.Tensor, cos_TK2: torch.Tensor, sin_TK2: torch.Tensor) -> torch.Tensor:
        B, T, D = x_BTD.shape
        q_BTD, k_BTD, v_BTD = self.qkv(x_BTD).split(D, dim=-1)
        heads = (B, T, self.n_head, D // self.n_head)
        q_BHTK, k_BHTK, v_BHTK = (t.view(heads).transpose(1, 2) for t in (q_BTD, k_BTD, v_BTD))
        q_BHTK = apply_rotary(q_BHTK, cos_TK2, sin_TK2)
        k_BHTK = apply_rotary(k_BHTK, cos_TK2, sin_TK2)
        y_BHTK = F.scaled_dot_product_attention(q_BHTK, k_BHTK, v_BHTK, is_causal=True)
        return self.proj(y_BHTK.transpose(1, 2).reshape(B, T, D))


class SwiGLU(nn.Module):
    """The gated MLP of modern LLMs: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ff_width, bias=False)
        self.down = nn.Linear(cfg.ff_width, cfg.d_model, bias=False)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        gate_BTF, up_BTF = self.gate_up(x_BTD).chunk(2, dim=-1)
        return self.down(F.silu(gate_BTF) * up_BTF)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x_BTD: torch.Tensor, cos_TK2: torch.Tensor, sin_TK2: torch.Tensor) -> torch.Tensor:
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), cos_TK2, sin_TK2)
        return x_BTD + self.mlp(self.mlp_norm(x_BTD))


class GPT(nn.Module):
    """Token embedding -> n_layer blocks -> RMSNorm -> logits through the (tied) embedding matrix."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.final_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        # Not saved in state_dict: they are a function of the config, rebuilt on load.
        cos_TK2, sin_TK2 = rotary_tables(cfg.seq_len, cfg.d_model // cfg.n_head, cfg.rope_base)
        self.register_buffer("rope_cos", cos_TK2, persistent=False)
        self.register_buffer("rope_sin", sin_TK2, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights; residual output projections shrunk so the stream's variance stays O(1)."""
        std = self.cfg.init_std
        nn.init.normal_(self.embed.weight, std=std)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=std)
            nn.init.normal_(block.mlp.gate_up.weight, std=std)
            for out in (block.attn.proj.weight, block.mlp.down.weight):
                nn.init.normal_(out, std=std / math.sqrt(2 * self.cfg.n_layer))
            for norm in (block.attn_norm, block.mlp_norm):
                nn.init.ones_(norm.weight)
        nn.init.ones_(self.final_norm.weight)

    def num_params(self) -> int:
        """Trainable parameters, the tied embedding counted once (what tokens-per-parameter budgets use)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, idx_BT: torch.Tensor, targets_BT: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and, when targets are given, the mean cross-entropy computed in fp32."""
        T = idx_BT.shape[1]
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than the model's seq_len={self.cfg.seq_len}")
        cos_TK2, sin_TK2 = self.rope_cos[:T], self.rope_sin[:T]
        x_BTD = self.embed(idx_BT)
        for block in self.blocks:
            x_BTD = block(x_BTD, cos_TK2, sin_TK2)
        logits_BTV = F.linear(self.final_norm(x_BTD), self.embed.weight)
        if targets_BT is None:
            return logits_BTV, None
        logits_NV = logits_BTV.float().view(-1, logits_BTV.shape[-1])
        loss = F.cross_entropy(logits_NV, targets_BT.reshape(-1))
        return logits_BTV, loss

    def no_decay_names(self) -> set[str]:
        """Parameter names that weight decay should skip: norm gains (1-D). Matrices, embedding included, decay."""
        return {name for name, p in self.named_parameters() if p.ndim < 2}


@contextlib.contextmanager
def forward_context(device: torch.device | str) -> Iterator[None]:
    """bf16 autocast on CUDA (fp32 master weights and loss); plain fp32 elsewhere, so CPU runs are exact."""
    device = torch.device(device)
    if device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def maybe_compile(model: GPT, enabled: bool) -> nn.Module:
    """torch.compile the model when asked (a GPU speed-up); the uncompiled module keeps the parameters."""
    return torch.compile(model) if enabled else model
