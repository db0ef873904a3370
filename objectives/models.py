"""The built-in tasks' models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(*, inputs: int = 64, hidden: int = 128, depth: int = 1, classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, classes))


class ImageConv3x3(nn.Module):
    """A 3x3 convolution (padding 1) of a one-channel image, as unfold + matmul.

    Same parameters and initialisation as ``nn.Conv2d(1, out, 3, padding=1)``. Written out
    because torch's grouped convolution (what a stack of convolutions becomes under vmap)
    computes a one-channel weight gradient slightly differently for K groups than for one;
    as a matmul, each trial's gradient is the same in a stack as alone.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        reference = nn.Conv2d(1, out_channels, 3, padding=1)
        assert reference.bias is not None
        self.weight = reference.weight
        self.bias = reference.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        columns = F.unfold(x, 3, padding=1)  # [batch, 9, height * width]
        out = torch.matmul(self.weight.flatten(1), columns) + self.bias[:, None]
        return out.view(batch, -1, height, width)


def cnn(*, channels: int = 16, classes: int = 10) -> nn.Module:
    """Two 3x3 convolutions over the 8x8 image, then a linear classifier."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        ImageConv3x3(channels),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * 4 * 4, classes),
    )


# The character-level transformer of `tiny_lm`. Its layers compute K copies at once from
# parameters with a leading K dimension (``stacked``), which is what a stack trains
# (`objectives.batched_model`); alone, a layer is its stack of one.


def stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K linear layers: ``x`` ``[K, ..., in]``, ``weight`` ``[K, out, in]``, ``bias``
    ``[K, out]``; one batched matrix product."""
    rows = x.flatten(1, -2)
    out = torch.baddbmm(bias.unsqueeze(1), rows, weight.transpose(1, 2))
    return out.view(*x.shape[:-1], -1)


def stacked_layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """K layer norms over the last dimension of ``x`` ``[K, ..., dim]``."""
    shape = (len(x),) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return F.layer_norm(x, x.shape[-1:], eps=eps) * weight.view(shape) + bias.view(shape)


class _Stackable(nn.Module):
    """A layer written once for K copies: ``stacked(params, x)`` with every parameter and
    ``x`` carrying a leading K dimension; ``forward`` is the stack of one."""

    def stacked(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = {name: p.unsqueeze(0) for name, p in self.named_parameters()}
        return self.stacked(params, x.unsqueeze(0)).squeeze(0)


class CharEmbedding(_Stackable):
    """Token plus learned position embeddings of ``[batch, context]`` character ids."""

    def __init__(self, vocab: int, dim: int, context: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(vocab, dim) * 0.02)
        self.position = nn.Parameter(torch.randn(context, dim) * 0.02)

    def stacked(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k, vocab = p["token"].shape[:2]
        # Copy k's ids index rows k * vocab ... of all copies' tables laid end to end.
        offsets = torch.arange(k, device=x.device).view(k, *(1,) * (x.dim() - 1)) * vocab
        tokens = F.embedding(x + offsets, p["token"].flatten(0, 1))
        return tokens + p["position"][:, None, : x.shape[-1]]


class TransformerBlock(_Stackable):
    """Pre-norm causal self-attention, then a GELU MLP, each with a residual (GPT-2's
    block) over ``[batch, context, dim]``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"objective_args.dim: must be a multiple of heads={heads}, got {dim}")
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def stacked(self, p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        k, b, t, d = x.shape
        h = stacked_layer_norm(x, p["ln1.weight"], p["ln1.bias"], self.ln1.eps)
        qkv = stacked_linear(h, p["qkv.weight"], p["qkv.bias"])
        q, key, v = qkv.view(k * b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, key, v, is_causal=True)
        att = att.transpose(1, 2).reshape(k, b, t, d)
        x = x + stacked_linear(att, p["proj.weight"], p["proj.bias"])
        h = stacked_layer_norm(x, p["ln2.weight"], p["ln2.bias"], self.ln2.eps)
        h = F.gelu(stacked_linear(h, p["fc.weight"], p["fc.bias"]))
        return x + stacked_linear(h, p["out.weight"], p["out.bias"])


def char_transformer(
    *, vocab: int, context: int, dim: int = 64, heads: int = 4, layers: int = 2
) -> nn.Module:
    """A causal character-level transformer: ids ``[batch, context]`` to next-character
    logits ``[batch, context, vocab]``."""
    return nn.Sequential(
        CharEmbedding(vocab, dim, context),
        *(TransformerBlock(dim, heads) for _ in range(layers)),
        nn.LayerNorm(dim),
        nn.Linear(dim, vocab),
    )
