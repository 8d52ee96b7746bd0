"""Position encodings of the feature maps: fixed sine/cosine (the default) or learned row/column embeddings."""

import math

import torch
from torch import nn

from deformable_detr.config.model import ModelSettings


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine of the (normalised) pixel position inside the valid, unpadded part of each image.

    Args:
        num_pos_feats: features per axis; the output has 2 * num_pos_feats channels (y first, then x).
        temperature: wavelength base.
        normalize: scale cumulative positions to (0, scale] of the valid extent.
        scale: the normalised range (2 pi by default).
    """

    eps = 1e-6  # keeps the division finite for an all-padding row or column

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = False,
                 scale: float | None = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] (only its device is used), mask bool [B, H, W] True at padding -> [B, 2*F, H, W]."""
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            # Deformable DETR centres each position (the - 0.5) before dividing by the valid extent.
            y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        # interleave sin (even features) and cos (odd features)
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingLearned(nn.Module):
    """Learned embeddings of the column and the row index (at most 50 of each).

    Args:
        num_pos_feats: features per axis; the output has 2 * num_pos_feats channels (x first, then y).
    """

    max_positions = 50

    def __init__(self, num_pos_feats: int = 256):
        super().__init__()
        self.row_embed = nn.Embedding(self.max_positions, num_pos_feats)
        self.col_embed = nn.Embedding(self.max_positions, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W], mask [B, H, W] (unused: the embedding ignores padding) -> [B, 2*F, H, W]."""
        height, width = x.shape[-2:]
        if height > self.max_positions or width > self.max_positions:
            raise ValueError(
                f"PositionEmbeddingLearned: feature map {height}x{width} exceeds {self.max_positions} positions"
            )
        x_emb = self.col_embed(torch.arange(width, device=x.device))
        y_emb = self.row_embed(torch.arange(height, device=x.device))
        pos = torch.cat([x_emb.unsqueeze(0).repeat(height, 1, 1), y_emb.unsqueeze(1).repeat(1, width, 1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0).repeat(x.shape[0], 1, 1, 1)


def build_position_encoding(settings: ModelSettings) -> nn.Module:
    num_pos_feats = settings.hidden_dim // 2
    if settings.position_embedding in ("sine", "v2"):
        return PositionEmbeddingSine(num_pos_feats, normalize=True, scale=settings.position_embedding_scale)
    return PositionEmbeddingLearned(num_pos_feats)
