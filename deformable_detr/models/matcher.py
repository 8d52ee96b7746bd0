"""Hungarian matching of predictions to targets, with the focal-loss classification cost."""

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from deformable_detr.config.model import ModelSettings

Indices = list[tuple[torch.Tensor, torch.Tensor]]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of targets to queries minimising a weighted cost; unmatched queries are background.

    Args:
        cost_class: weight of the classification cost (focal-loss style, alpha 0.25, gamma 2).
        cost_bbox: weight of the L1 distance between cxcywh boxes.
        cost_giou: weight of the negative generalized IoU.
    """

    # The authors' matcher fixes these (it does not follow the loss's focal_alpha).
    alpha = 0.25
    gamma = 2.0

    def __init__(self, cost_class: float = 1, cost_bbox: float = 1, cost_giou: float = 1):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: the class, box and GIoU costs cannot all be 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def cost_matrices(self, outputs: dict, targets: list[dict]) -> list[torch.Tensor]:
        """The matching cost of every (query, target) pair: B tensors [Q, K_i], on the CPU.

        Args:
            outputs: pred_logits [B, Q, num_classes], pred_boxes [B, Q, 4] (cxcywh in [0, 1]).
            targets: B dicts with labels int64 [K_i] and boxes [K_i, 4] (cxcywh in [0, 1]).
        """
        batch, num_queries = outputs["pred_logits"].shape[:2]
        out_prob = outputs["pred_logits"].flatten(0, 1).sigmoid()  # [B*Q, num_classes]
        out_bbox = outputs["pred_boxes"].flatten(0, 1)  # [B*Q, 4]
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_bbox = torch.cat([t["boxes"] for t in targets]).to(out_bbox.dtype)

        neg_cost_class = (1 - self.alpha) * (out_prob ** self.gamma) * (-(1 - out_prob + 1e-8).log())
        pos_cost_class = self.alpha * ((1 - out_prob) ** self.gamma) * (-(out_prob + 1e-8).log())
        cost_class = pos_cost_class[:, tgt_ids] - neg_cost_class[:, tgt_ids]
        cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        cost_giou = -generalized_box_iou(box_convert(out_bbox, "cxcywh", "xyxy"),
                                         box_convert(tgt_bbox, "cxcywh", "xyxy"))

        # computed for all pairs of the batch at once, then split per image
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(batch, num_queries, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        return [c[i] for i, c in enumerate(cost.split(sizes, -1))]

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> Indices:
        """
        Args:
            outputs, targets: as in `cost_matrices`.

        Returns:
            B pairs (query indices, target indices), int64 [min(Q, K_i)] each, sorted by query.
        """
        indices = [linear_sum_assignment(cost) for cost in self.cost_matrices(outputs, targets)]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]


def build_matcher(settings: ModelSettings) -> HungarianMatcher:
    return HungarianMatcher(cost_class=settings.set_cost_class, cost_bbox=settings.set_cost_bbox,
                            cost_giou=settings.set_cost_giou)
