"""The Deformable DETR detector: backbone, input projections, deformable transformer, class and box heads."""

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from deformable_detr.models.backbone import Joiner, downsample_mask
from deformable_detr.data.batching import pad_images
from deformable_detr.models.denoising import DenoisingQueries
from deformable_detr.models.transformer import DeformableTransformer, inverse_sigmoid


class MLP(nn.Module):
    """Linear layers with ReLU between them.

    torchvision.ops.MLP computes the same, but its parameters are named `0.weight`, `2.weight`, ...;
    the authors' checkpoints name them `layers.0.weight`, `layers.1.weight`, ...
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + hidden, hidden + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., input_dim] -> [..., output_dim]"""
        for index, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if index < self.num_layers - 1 else layer(x)
        return x


def _input_projections(backbone_channels: list[int], hidden_dim: int, num_feature_levels: int) -> nn.ModuleList:
    """1x1 convolutions of each backbone map to hidden_dim, then stride-2 3x3 convolutions for the extra,
    coarser levels (the first on the last backbone map, the next on the previous level); GroupNorm after each."""
    projections = []
    for channels in backbone_channels:
        projections.append(nn.Sequential(
            nn.Conv2d(channels, hidden_dim, kernel_size=1),
            nn.GroupNorm(32, hidden_dim),
        ))
    in_channels = backbone_channels[-1]
    for _ in range(num_feature_levels - len(backbone_channels)):
        projections.append(nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=3, stride=2, padding=1),
            nn.GroupNorm(32, hidden_dim),
        ))
        in_channels = hidden_dim
    return nn.ModuleList(projections)


def _init_head_and_projections(class_embed: nn.Linear, bbox_embed: MLP, input_proj: nn.ModuleList) -> None:
    """The authors' initialisation of the prediction heads and the input projections."""
    # focal-loss prior: every class starts at probability 0.01
    prior_prob = 0.01
    nn.init.constant_(class_embed.bias, -math.log((1 - prior_prob) / prior_prob))
    nn.init.zeros_(bbox_embed.layers[-1].weight)
    nn.init.zeros_(bbox_embed.layers[-1].bias)
    for projection in input_proj:
        nn.init.xavier_uniform_(projection[0].weight, gain=1)
        nn.init.zeros_(projection[0].bias)


class DeformableDETR(nn.Module):
    """Deformable DETR (Zhu et al., ICLR 2021) with optional box refinement and two-stage proposals.

    Args:
        backbone: Joiner of the ResNet and the position encoding.
        transformer: the deformable transformer (its d_model is the hidden size C).
        num_classes: outputs of the sigmoid (focal loss) classifier; there is no "no object" class.
        num_queries: object queries Q.
        num_feature_levels: levels L fed to the transformer (backbone maps plus strided convolutions).
        aux_loss: also return the predictions of every earlier decoder layer.
        with_box_refine: one head per decoder layer, each refining the previous layer's boxes.
        two_stage: queries from the encoder's top-scoring proposals (requires the extra heads built here).
    """

    def __init__(self, backbone: Joiner, transformer: DeformableTransformer, num_classes: int, num_queries: int,
                 num_feature_levels: int, aux_loss: bool = True, with_box_refine: bool = False,
                 two_stage: bool = False):
        super().__init__()
        self.num_queries = num_queries
        self.transformer = transformer
        hidden_dim = transformer.d_model
        class_embed = nn.Linear(hidden_dim, num_classes)
        bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        # registered now so that the state_dict order is the authors' (heads, queries, projections, backbone)
        self.class_embed = nn.ModuleList()
        self.bbox_embed = nn.ModuleList()
        self.num_feature_levels = num_feature_levels
        if not two_stage:
            self.query_embed = nn.Embedding(num_queries, hidden_dim * 2)
        self.input_proj = _input_projections(backbone.num_channels, hidden_dim, num_feature_levels)
        self.backbone = backbone
        self.aux_loss = aux_loss
        self.with_box_refine = with_box_refine
        self.two_stage = two_stage
        _init_head_and_projections(class_embed, bbox_embed, self.input_proj)
        self._attach_prediction_heads(class_embed, bbox_embed)

    def _attach_prediction_heads(self, class_embed: nn.Linear, bbox_embed: "MLP") -> None:
        """One (class, box) head pair per decoder layer, plus one for the proposals in two-stage mode:
        copies with box refinement (and given to the decoder, which refines with them), else one shared pair."""
        # two-stage adds one more pair of heads, for the encoder proposals
        num_pred = self.transformer.decoder.num_layers + (1 if self.two_stage else 0)
        if self.with_box_refine:
            self.class_embed.extend(copy.deepcopy(class_embed) for _ in range(num_pred))
            self.bbox_embed.extend(copy.deepcopy(bbox_embed) for _ in range(num_pred))
            # only the first layer predicts sizes outright (small boxes at first); later layers refine them
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
            self.transformer.decoder.bbox_embed = self.bbox_embed
        else:
            nn.init.constant_(bbox_embed.layers[-1].bias[2:], -2.0)
            # one head shared by every decoder layer
            self.class_embed.extend(class_embed for _ in range(num_pred))
            self.bbox_embed.extend(bbox_embed for _ in range(num_pred))
            self.transformer.decoder.bbox_embed = None
        if self.two_stage:
            self.transformer.decoder.class_embed = self.class_embed
            for head in self.bbox_embed:
                # proposals already carry a size (0.05 * 2^level): predict a correction from 0
                nn.init.zeros_(head.layers[-1].bias[2:])

    def forward(self, samples: list[torch.Tensor] | torch.Tensor,
                mask: torch.Tensor | None = None, denoising: DenoisingQueries | None = None) -> dict:
        """
        Args:
            samples: a list of B normalised images [3, H_i, W_i] (padded bottom/right here), or a padded
                batch [B, 3, H, W].
            mask: bool [B, H, W], True at padding, for a padded batch (None: no padding).
            denoising: noised targets to decode as extra queries (training with query denoising).

        Returns:
            pred_logits [B, Q, num_classes], pred_boxes [B, Q, 4] (cx, cy, w, h in [0, 1] of the image);
            aux_outputs: list of num_dec - 1 dicts with the same keys, when aux_loss;
            enc_outputs: {pred_logits [B, S, num_classes], pred_boxes [B, S, 4]} in two-stage mode;
            one_to_many: pred_logits, pred_boxes [B, P, ...] and aux_outputs of the one-to-many group, in
            training with one_to_many_queries P;
            denoising: pred_logits, pred_boxes [B, N, ...] and aux_outputs of the N denoising queries, with their
            layout (groups, per_group), when `denoising` is given.
        """
        images, mask = self._batch(samples, mask)
        features, positions = self.backbone(images, mask)
        srcs = []
        masks = []
        for level, (feature, feature_mask) in enumerate(features):
            srcs.append(self.input_proj[level](feature))
            masks.append(feature_mask)
        for level in range(len(features), self.num_feature_levels):
            src = self.input_proj[level](features[-1][0] if level == len(features) else srcs[-1])
            level_mask = downsample_mask(mask, src.shape[-2:])
            srcs.append(src)
            masks.append(level_mask)
            positions.append(self.backbone[1](src, level_mask).to(src.dtype))

        query_embed = None if self.two_stage else self.query_embed.weight
        result = self.transformer(srcs, masks, positions, query_embed, denoising)
        hs = result["hs"]

        outputs_classes = []
        outputs_coords = []
        for level in range(hs.shape[0]):
            reference = result["init_reference"] if level == 0 else result["inter_references"][level - 1]
            reference = inverse_sigmoid(reference)
            outputs_classes.append(self.class_embed[level](hs[level]))
            delta = self.bbox_embed[level](hs[level])
            if reference.shape[-1] == 4:
                coord = delta + reference
            else:
                coord = torch.cat([delta[..., :2] + reference, delta[..., 2:]], -1)
            outputs_coords.append(coord.sigmoid())

        out = self._layer_outputs(outputs_classes, outputs_coords, slice(0, self.num_queries))
        matching = hs.shape[2] - (0 if denoising is None else denoising.labels.shape[1])
        if matching > self.num_queries:  # training with hybrid matching: the one-to-many group
            out["one_to_many"] = self._layer_outputs(outputs_classes, outputs_coords,
                                                     slice(self.num_queries, matching))
        if denoising is not None:
            out["denoising"] = {
                **self._layer_outputs(outputs_classes, outputs_coords, slice(matching, None)),
                "groups": denoising.groups,
                "per_group": denoising.per_group,
            }
        if self.two_stage:
            out["enc_outputs"] = {
                "pred_logits": result["enc_outputs_class"],
                "pred_boxes": result["enc_outputs_coord_unact"].sigmoid(),
            }
        return out

    def _layer_outputs(self, classes: list[torch.Tensor], coords: list[torch.Tensor], queries: slice) -> dict:
        """The last layer's logits and boxes of the `queries` (and every earlier layer's as aux_outputs)."""
        out = {"pred_logits": classes[-1][:, queries], "pred_boxes": coords[-1][:, queries]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": logits[:, queries], "pred_boxes": boxes[:, queries]}
                for logits, boxes in zip(classes[:-1], coords[:-1])
            ]
        return out

    @staticmethod
    def _batch(samples: list[torch.Tensor] | torch.Tensor,
               mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(samples, (list, tuple)):
            if mask is not None:
                raise ValueError("DeformableDETR: pass a mask only with a padded batch, not with a list of images")
            return pad_images(list(samples))
        if not isinstance(samples, torch.Tensor) or samples.dim() != 4:
            shape = list(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
            raise ValueError(
                f"DeformableDETR: samples must be a list of CHW images or a [B, 3, H, W] batch, got {shape}"
            )
        if mask is None:
            mask = torch.zeros((samples.shape[0], *samples.shape[2:]), dtype=torch.bool, device=samples.device)
        elif mask.shape != (samples.shape[0], *samples.shape[2:]) or mask.dtype != torch.bool:
            raise ValueError(
                f"DeformableDETR: mask must be bool [B, H, W] = {[samples.shape[0], *samples.shape[2:]]}, "
                f"got {mask.dtype} {list(mask.shape)}"
            )
        return samples, mask
