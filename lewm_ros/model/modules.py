"""Building blocks of LeWM: ViT encoder, BatchNorm projector, action embedder, AdaLN predictor.

Written from scratch in plain PyTorch (no HuggingFace). Parameter layouts follow the released
LeWM code so that the ``paper`` preset has the published per-component counts (research notes
section 1.4).
"""

import torch
from torch import nn
import torch.nn.functional as F


class ViTBlock(nn.Module):
    """Pre-norm transformer block of the ViT encoder (bidirectional attention)."""

    def __init__(self, width: int, heads: int, mlp_dim: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(batch, tokens, width))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTEncoder(nn.Module):
    """Vision Transformer returning the CLS token of the final LayerNorm'd hidden state."""

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int,
                 mlp_dim: int, eps: float = 1e-12):
        super().__init__()
        self.image_size = image_size
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, width))
        self.blocks = nn.ModuleList(ViTBlock(width, heads, mlp_dim, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=eps)
        self._init_weights()

    def _init_weights(self) -> None:
        # ViT initialisation (truncated normal, std 0.02), as HuggingFace's ViTModel.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f'encoder expects {self.image_size}x{self.image_size} images, got '
                             f'{tuple(pixels.shape)}; use LeWM.preprocess')
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        # The final LayerNorm is per token, so normalising only the CLS token is identical.
        return self.norm(x[:, 0])


class Projector(nn.Module):
    """Linear -> BatchNorm1d -> GELU -> Linear, applied to the last dimension of any shape."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = self.fc1(x.reshape(-1, x.shape[-1]))
        x = self.fc2(F.gelu(self.bn(x)))
        return x.reshape(*lead, x.shape[-1])


class ActionEmbedder(nn.Module):
    """Action blocks ``(..., frameskip*A)`` -> conditioning vectors ``(..., latent_dim)``.

    A per-timestep linear map to a small width (the 1x1 Conv1d of the released code), then an
    MLP with SiLU to the model width.
    """

    def __init__(self, block_dim: int, smoothed_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.smooth = nn.Linear(block_dim, smoothed_dim)
        self.fc1 = nn.Linear(smoothed_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(self.smooth(blocks))))


class CausalAttention(nn.Module):
    """Affine LayerNorm, bias-free QKV, causal scaled-dot-product attention, output Linear."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim)
        self.out_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).view(batch, tokens, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=tokens > 1, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, tokens, self.heads * self.head_dim)
        return self.out_drop(self.to_out(out))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(self.norm(x))))))


class AdaLNBlock(nn.Module):
    """Transformer block with AdaLN-zero conditioning (DiT).

    ``SiLU -> Linear(dim, 6*dim)`` maps the per-token condition to shift, scale and gate for
    the attention and MLP sub-blocks. The Linear is zero-initialised, so at initialisation
    every gate is 0 and the block is the identity: action influence grows during training.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = CausalAttention(dim, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_dim, dropout)
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        (shift_a, scale_a, gate_a,
         shift_m, scale_m, gate_m) = self.modulation(F.silu(cond)).chunk(6, dim=-1)
        x = x + gate_a * self.attn(self.norm1(x) * (1 + scale_a) + shift_a)
        return x + gate_m * self.mlp(self.norm2(x) * (1 + scale_m) + shift_m)


class Predictor(nn.Module):
    """Causal transformer over ``T <= history`` latents, conditioned per token on actions."""

    def __init__(self, dim: int, history: int, depth: int, heads: int, head_dim: int,
                 mlp_dim: int, dropout: float, emb_dropout: float):
        super().__init__()
        self.history = history
        self.pos_embed = nn.Parameter(torch.zeros(1, history, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.emb_drop = nn.Dropout(emb_dropout)
        self.blocks = nn.ModuleList(
            AdaLNBlock(dim, heads, head_dim, mlp_dim, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        tokens = latents.shape[1]
        if tokens > self.history:
            raise ValueError(f'predictor takes at most history={self.history} latents, got '
                             f'{tokens}')
        x = self.emb_drop(latents + self.pos_embed[:, :tokens])
        for block in self.blocks:
            x = block(x, cond)
        return self.norm(x)
