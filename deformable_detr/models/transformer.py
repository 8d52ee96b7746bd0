"""The deformable transformer: encoder and decoder on multi-scale deformable attention, two-stage proposals.

Shapes: B batch, L levels, S = sum of h_l * w_l over levels, Q queries, C = d_model.
"""

import copy
import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ops import MSDeformAttn, kernel_available

from deformable_detr.config.model import ModelSettings
from deformable_detr.models.denoising import DenoisingQueries


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [0, 1] and both x and 1 - x kept >= eps, as the authors compute it."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _clones(module: nn.Module, count: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(count)])


def get_valid_ratio(mask: torch.Tensor) -> torch.Tensor:
    """mask bool [B, h, w] True at padding -> [B, 2] (valid width / w, valid height / h)."""
    _, height, width = mask.shape
    valid_h = torch.sum(~mask[:, :, 0], 1)
    valid_w = torch.sum(~mask[:, 0, :], 1)
    return torch.stack([valid_w.float() / width, valid_h.float() / height], -1)


class DeformableTransformerEncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then a feed-forward block (post-norm)."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, n_levels: int = 4,
                 n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                padding_mask: torch.Tensor) -> torch.Tensor:
        """src, pos [B, S, C]; reference_points [B, S, L, 2]; padding_mask [B, S] -> [B, S, C]."""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class DeformableTransformerEncoder(nn.Module):
    def __init__(self, encoder_layer: DeformableTransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(shapes: list[tuple[int, int]], valid_ratios: torch.Tensor,
                             device: torch.device) -> torch.Tensor:
        """Pixel centres of every level, normalised by the valid extent -> [B, S, L, 2] (x, y)."""
        per_level = []
        for level, (height, width) in enumerate(shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, height - 0.5, height, dtype=torch.float32, device=device),
                torch.linspace(0.5, width - 0.5, width, dtype=torch.float32, device=device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)
            per_level.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(per_level, 1)
        # each query samples every level at the same relative position of the valid area
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(self, src: torch.Tensor, shapes: list[tuple[int, int]], spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, valid_ratios: torch.Tensor, pos: torch.Tensor,
                padding_mask: torch.Tensor) -> torch.Tensor:
        """src, pos [B, S, C]; valid_ratios [B, L, 2]; padding_mask [B, S] -> memory [B, S, C]."""
        reference_points = self.get_reference_points(shapes, valid_ratios, src.device)
        output = src
        for layer in self.layers:
            output = layer(output, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return output


class DeformableTransformerDecoderLayer(nn.Module):
    """Self-attention among queries, deformable cross-attention into the memory, feed-forward (post-norm)."""

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, n_levels: int = 4,
                 n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        # sequence-first, as in the authors' code (same parameters; keeps the same kernel path)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, reference_points: torch.Tensor,
                src: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                src_padding_mask: torch.Tensor, self_attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tgt, query_pos [B, Q, C]; reference_points [B, Q, L, 2 or 4]; src [B, S, C] -> [B, Q, C].
        self_attn_mask: bool [Q, Q], True where a query may not attend to another (None: all attend)."""
        q = k = (tgt + query_pos).transpose(0, 1)
        attended = self.self_attn(q, k, tgt.transpose(0, 1), attn_mask=self_attn_mask)[0].transpose(0, 1)
        tgt = self.norm2(tgt + self.dropout2(attended))
        attended = self.cross_attn(tgt + query_pos, reference_points, src, spatial_shapes, level_start_index,
                                   src_padding_mask)
        tgt = self.norm1(tgt + self.dropout1(attended))
        ffn = self.linear2(self.dropout3(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))


class DeformableTransformerDecoder(nn.Module):
    """Decoder layers; with box refinement each layer's box head moves the next layer's reference boxes.

    `bbox_embed` and `class_embed` are set by the detector (they are its heads, registered here too so that
    the state_dict keys match the authors' checkpoints).
    """

    def __init__(self, decoder_layer: DeformableTransformerDecoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.bbox_embed: nn.ModuleList | None = None
        self.class_embed: nn.ModuleList | None = None

    def forward(self, tgt: torch.Tensor, reference_points: torch.Tensor, src: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, valid_ratios: torch.Tensor,
                query_pos: torch.Tensor, src_padding_mask: torch.Tensor,
                self_attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tgt, query_pos [B, Q, C]; reference_points [B, Q, 2 or 4] in [0, 1]; self_attn_mask as the layer's.

        Returns:
            hs [num_layers, B, Q, C] and the reference points after each layer [num_layers, B, Q, 2 or 4].
        """
        output = tgt
        intermediate = []
        intermediate_reference_points = []
        for index, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                box_ratios = torch.cat([valid_ratios, valid_ratios], -1)
                reference_points_input = reference_points[:, :, None] * box_ratios[:, None]
            else:
                reference_points_input = reference_points[:, :, None] * valid_ratios[:, None]
            output = layer(output, query_pos, reference_points_input, src, spatial_shapes, level_start_index,
                           src_padding_mask, self_attn_mask)
            if self.bbox_embed is not None:
                delta = self.bbox_embed[index](output)
                if reference_points.shape[-1] == 4:
                    new_reference_points = (delta + inverse_sigmoid(reference_points)).sigmoid()
                else:
                    # points become boxes: the centre is refined, the size is predicted outright
                    new_reference_points = torch.cat(
                        [delta[..., :2] + inverse_sigmoid(reference_points), delta[..., 2:]], -1
                    ).sigmoid()
                # each layer's refinement is trained on its own: no gradient through the reference boxes
                reference_points = new_reference_points.detach()
            intermediate.append(output)
            intermediate_reference_points.append(reference_points)
        return torch.stack(intermediate), torch.stack(intermediate_reference_points)


class DeformableTransformer(nn.Module):
    """Encoder + decoder; the queries come from `query_embed` or, in two-stage mode, from encoder proposals.

    Args:
        d_model: hidden size C. nhead: attention heads. num_encoder_layers / num_decoder_layers: depths.
        dim_feedforward: FFN width. dropout: dropout rate. num_feature_levels: L.
        dec_n_points / enc_n_points: sampling points per head and level.
        two_stage: select the top `two_stage_num_proposals` encoder proposals as the queries.
        one_to_many_proposals: in training, the next `one_to_many_proposals` proposals as a second query group
            that the first group cannot see (hybrid matching; two-stage only).
        denoising_classes: with query denoising (two-stage only), the classes whose labels are embedded as the
            denoising queries' content (plus one for the padding); 0: no denoising.
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 1024, dropout: float = 0.1,
                 num_feature_levels: int = 4, dec_n_points: int = 4, enc_n_points: int = 4,
                 two_stage: bool = False, two_stage_num_proposals: int = 300, one_to_many_proposals: int = 0,
                 denoising_classes: int = 0):
        super().__init__()
        if one_to_many_proposals and not two_stage:
            raise ValueError("DeformableTransformer: one_to_many_proposals are proposals: they need two_stage")
        if denoising_classes and not two_stage:
            raise ValueError("DeformableTransformer: denoising queries start from boxes: they need two_stage")
        self.one_to_many_proposals = one_to_many_proposals
        self.d_model = d_model
        self.nhead = nhead
        self.two_stage = two_stage
        self.two_stage_num_proposals = two_stage_num_proposals
        encoder_layer = DeformableTransformerEncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels,
                                                          nhead, enc_n_points)
        self.encoder = DeformableTransformerEncoder(encoder_layer, num_encoder_layers)
        decoder_layer = DeformableTransformerDecoderLayer(d_model, dim_feedforward, dropout, num_feature_levels,
                                                          nhead, dec_n_points)
        self.decoder = DeformableTransformerDecoder(decoder_layer, num_decoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        if two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
            self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
            self.pos_trans_norm = nn.LayerNorm(d_model * 2)
        else:
            self.reference_points = nn.Linear(d_model, 2)
        self._reset_parameters()
        if denoising_classes:
            # registered last: the authors' parameters keep their initial values
            self.label_embed = nn.Embedding(denoising_classes + 1, d_model)

    def _reset_parameters(self) -> None:
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.modules():
            if isinstance(module, MSDeformAttn):
                module._reset_parameters()
        if not self.two_stage:
            nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
            nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    def get_proposal_pos_embed(self, proposals: torch.Tensor) -> torch.Tensor:
        """Sine embedding of unnormalised proposal boxes [B, Q, 4] -> [B, Q, 2 * C].

        The authors hard-code 128 features per coordinate, which is d_model // 2 at their d_model of 256;
        d_model // 2 keeps the width equal to pos_trans's input for other hidden sizes.
        """
        num_pos_feats = self.d_model // 2
        temperature = 10000
        scale = 2 * math.pi
        dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=proposals.device)
        dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
        pos = proposals.sigmoid() * scale
        pos = pos[:, :, :, None] / dim_t  # [B, Q, 4, F]
        return torch.stack((pos[:, :, :, 0::2].sin(), pos[:, :, :, 1::2].cos()), dim=4).flatten(2)

    def gen_encoder_output_proposals(self, memory: torch.Tensor, memory_padding_mask: torch.Tensor,
                                     shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One proposal per encoder position: its pixel centre and a size of 0.05 * 2^level.

        Args:
            memory: [B, S, C]. memory_padding_mask: bool [B, S]. shapes: (h, w) per level.

        Returns:
            output_memory [B, S, C] (zeroed at padding and invalid proposals, then Linear + LayerNorm) and
            output_proposals [B, S, 4] as logits (inverse sigmoid), +inf at padding and invalid proposals.
        """
        batch = memory.shape[0]
        base_scale = 0.05
        proposals = []
        start = 0
        for level, (height, width) in enumerate(shapes):
            mask_level = memory_padding_mask[:, start:start + height * width].view(batch, height, width, 1)
            valid_h = torch.sum(~mask_level[:, :, 0, 0], 1)
            valid_w = torch.sum(~mask_level[:, 0, :, 0], 1)
            grid_y, grid_x = torch.meshgrid(
                torch.linspace(0, height - 1, height, dtype=torch.float32, device=memory.device),
                torch.linspace(0, width - 1, width, dtype=torch.float32, device=memory.device),
                indexing="ij",
            )
            grid = torch.cat([grid_x.unsqueeze(-1), grid_y.unsqueeze(-1)], -1)
            scale = torch.cat([valid_w.unsqueeze(-1), valid_h.unsqueeze(-1)], 1).view(batch, 1, 1, 2)
            grid = (grid.unsqueeze(0).expand(batch, -1, -1, -1) + 0.5) / scale
            wh = torch.ones_like(grid) * base_scale * (2.0 ** level)
            proposals.append(torch.cat((grid, wh), -1).view(batch, -1, 4))
            start += height * width
        output_proposals = torch.cat(proposals, 1)
        # proposals too close to the border (or outside the valid area) are disabled
        valid = ((output_proposals > 0.01) & (output_proposals < 0.99)).all(-1, keepdim=True)
        output_proposals = torch.log(output_proposals / (1 - output_proposals))
        output_proposals = output_proposals.masked_fill(memory_padding_mask.unsqueeze(-1), float("inf"))
        output_proposals = output_proposals.masked_fill(~valid, float("inf"))
        output_memory = memory.masked_fill(memory_padding_mask.unsqueeze(-1), 0.0)
        output_memory = output_memory.masked_fill(~valid, 0.0)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        return output_memory, output_proposals

    def forward(self, srcs: list[torch.Tensor], masks: list[torch.Tensor], pos_embeds: list[torch.Tensor],
                query_embed: torch.Tensor | None = None,
                denoising: DenoisingQueries | None = None) -> dict[str, torch.Tensor]:
        """
        Args:
            srcs: L maps [B, C, h_l, w_l]. masks: L bool [B, h_l, w_l]. pos_embeds: L [B, C, h_l, w_l].
            query_embed: [Q, 2C] (query position, query content); None in two-stage mode.
            denoising: the noised targets as N more queries (training with query denoising), after all others.

        Returns:
            dict with hs [num_dec, B, Q, C], init_reference [B, Q, 2 or 4], inter_references
            [num_dec, B, Q, 2 or 4], and in two-stage mode enc_outputs_class [B, S, num_classes] and
            enc_outputs_coord_unact [B, S, 4]. In training with one_to_many_proposals P, Q is
            two_stage_num_proposals + P: the one-to-one group first; the N denoising queries come last.
        """
        if not self.two_stage and query_embed is None:
            raise ValueError("DeformableTransformer: query_embed is required unless two_stage")
        levels = self._flatten_levels(srcs, masks, pos_embeds)
        memory = self.encoder(levels.src, levels.shapes, levels.spatial_shapes, levels.level_start_index,
                              levels.valid_ratios, levels.pos, levels.mask)
        if self.two_stage:
            queries = self._select_proposals(memory, levels)
        else:
            queries = self._embedded_queries(query_embed, memory.shape[0])
        group_sizes = [queries.tgt.shape[1] - self._extra_proposals(), self._extra_proposals()]
        if denoising is not None:
            queries = self._with_denoising(queries, denoising)
            group_sizes += [denoising.per_group] * denoising.groups
        hs, inter_references = self.decoder(queries.tgt, queries.reference_points, memory, levels.spatial_shapes,
                                            levels.level_start_index, levels.valid_ratios, queries.query_pos,
                                            levels.mask, _group_mask(group_sizes, memory.device))
        return {
            **queries.encoder_outputs,
            "hs": hs,
            "init_reference": queries.reference_points,
            "inter_references": inter_references,
        }

    def _with_denoising(self, queries: "DecoderQueries", denoising: DenoisingQueries) -> "DecoderQueries":
        """The queries with the denoising ones appended: reference boxes the noised boxes, position embedded from
        them as a proposal's, content the embedding of the noised label."""
        boxes = denoising.boxes.to(queries.reference_points.dtype)
        pos_trans_out = self.pos_trans_norm(self.pos_trans(self.get_proposal_pos_embed(inverse_sigmoid(boxes))))
        query_pos = pos_trans_out[..., :self.d_model]
        tgt = self.label_embed(denoising.labels).to(query_pos.dtype)
        return DecoderQueries(
            torch.cat([queries.query_pos, query_pos], 1),
            torch.cat([queries.tgt, tgt], 1),
            torch.cat([queries.reference_points, boxes], 1),
            queries.encoder_outputs,
        )

    def _extra_proposals(self) -> int:
        """The one-to-many group's size: only in training."""
        return self.one_to_many_proposals if self.training else 0

    def _flatten_levels(self, srcs: list[torch.Tensor], masks: list[torch.Tensor],
                        pos_embeds: list[torch.Tensor]) -> "FlatLevels":
        """The L maps as one sequence of S positions, each position embedding plus its level's embedding."""
        src_flatten = []
        mask_flatten = []
        lvl_pos_embed_flatten = []
        shapes: list[tuple[int, int]] = []
        for level, (src, mask, pos_embed) in enumerate(zip(srcs, masks, pos_embeds)):
            shapes.append((int(src.shape[2]), int(src.shape[3])))
            src_flatten.append(src.flatten(2).transpose(1, 2))
            mask_flatten.append(mask.flatten(1))
            lvl_pos_embed_flatten.append(pos_embed.flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
        src_flat = torch.cat(src_flatten, 1)
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flat.device)
        return FlatLevels(
            src=src_flat,
            mask=torch.cat(mask_flatten, 1),
            pos=torch.cat(lvl_pos_embed_flatten, 1),
            shapes=shapes,
            spatial_shapes=spatial_shapes,
            level_start_index=torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])),
            valid_ratios=torch.stack([get_valid_ratio(m) for m in masks], 1),
        )

    def _embedded_queries(self, query_embed: torch.Tensor, batch: int) -> "DecoderQueries":
        """Single stage: learned queries [Q, 2C] split into position and content; reference points from
        the position."""
        query_pos, tgt = torch.split(query_embed, self.d_model, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(batch, -1, -1)
        tgt = tgt.unsqueeze(0).expand(batch, -1, -1)
        return DecoderQueries(query_pos, tgt, self.reference_points(query_pos).sigmoid(), {})

    def _select_proposals(self, memory: torch.Tensor, levels: "FlatLevels") -> "DecoderQueries":
        """Two stage: score every encoder proposal, keep the top `two_stage_num_proposals` as the queries."""
        if self.decoder.class_embed is None or self.decoder.bbox_embed is None:
            raise RuntimeError("two-stage: the detector must give the decoder its per-layer heads (box refinement)")
        output_memory, output_proposals = self.gen_encoder_output_proposals(memory, levels.mask, levels.shapes)
        # the extra (last) heads score and regress the proposals
        enc_outputs_class = self.decoder.class_embed[self.decoder.num_layers](output_memory)
        enc_outputs_coord_unact = self.decoder.bbox_embed[self.decoder.num_layers](output_memory) + output_proposals
        topk = self.two_stage_num_proposals + self._extra_proposals()
        if topk > enc_outputs_class.shape[1]:
            raise ValueError(
                f"two-stage: {topk} proposals requested but the encoder has only {enc_outputs_class.shape[1]} "
                "positions; use larger images or fewer num_queries (and one_to_many_queries)"
            )
        # proposals are ranked by their first class's score (the binary "object" score in training)
        topk_proposals = torch.topk(enc_outputs_class[..., 0], topk, dim=1)[1]
        topk_coords_unact = torch.gather(enc_outputs_coord_unact, 1, topk_proposals.unsqueeze(-1).repeat(1, 1, 4))
        topk_coords_unact = topk_coords_unact.detach()
        reference_points = topk_coords_unact.sigmoid()
        pos_trans_out = self.pos_trans_norm(self.pos_trans(self.get_proposal_pos_embed(topk_coords_unact)))
        query_pos, tgt = torch.split(pos_trans_out, memory.shape[2], dim=2)
        encoder_outputs = {"enc_outputs_class": enc_outputs_class, "enc_outputs_coord_unact": enc_outputs_coord_unact}
        return DecoderQueries(query_pos, tgt, reference_points, encoder_outputs)


def _group_mask(sizes: list[int], device: torch.device) -> torch.Tensor | None:
    """bool [Q, Q] for query groups of `sizes` (Q their sum), True where a query may not attend to another: each
    group sees only itself (None: one group). The first group then computes what it would alone (up to float
    rounding)."""
    sizes = [size for size in sizes if size > 0]
    if len(sizes) <= 1:
        return None
    group = torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))
    return group[:, None] != group[None, :]


class FlatLevels(NamedTuple):
    """The feature levels flattened for attention: src, pos [B, S, C]; mask bool [B, S]; shapes (h, w) per
    level and spatial_shapes [L, 2] the same as a tensor; level_start_index [L]; valid_ratios [B, L, 2]."""

    src: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor
    shapes: list[tuple[int, int]]
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    valid_ratios: torch.Tensor


class DecoderQueries(NamedTuple):
    """What the decoder starts from: query_pos and tgt [B, Q, C], reference_points [B, Q, 2 or 4] in [0, 1],
    and (two-stage) the encoder's proposal outputs to return alongside."""

    query_pos: torch.Tensor
    tgt: torch.Tensor
    reference_points: torch.Tensor
    encoder_outputs: dict[str, torch.Tensor]


def build_deformable_transformer(settings: ModelSettings) -> DeformableTransformer:
    # Load (or build) the attention kernel here, not at the first forward, so that a model built before
    # torch.compile traces the compiled op.
    kernel_available()
    return DeformableTransformer(
        d_model=settings.hidden_dim,
        nhead=settings.nheads,
        num_encoder_layers=settings.enc_layers,
        num_decoder_layers=settings.dec_layers,
        dim_feedforward=settings.dim_feedforward,
        dropout=settings.dropout,
        num_feature_levels=settings.num_feature_levels,
        dec_n_points=settings.dec_n_points,
        enc_n_points=settings.enc_n_points,
        two_stage=settings.two_stage,
        two_stage_num_proposals=settings.num_queries,
        one_to_many_proposals=settings.one_to_many_queries,
        denoising_classes=settings.num_classes if settings.denoising_groups else 0,
    )
