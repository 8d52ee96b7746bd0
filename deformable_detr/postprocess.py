"""Model outputs to COCO-style detections: the best (query, class) pairs in absolute xyxy pixels."""

import torch
from torch import nn
from torchvision.ops import box_convert


class PostProcess(nn.Module):
    """Per image, the `num_detections` (query, class) pairs with the highest sigmoid scores (all pairs when a
    small model has fewer than that).

    A query may appear several times with different classes, as in the authors' evaluation.
    """

    def __init__(self, num_detections: int = 100):
        super().__init__()
        self.num_detections = num_detections

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """
        Args:
            outputs: pred_logits [B, Q, num_classes], pred_boxes [B, Q, 4] (cxcywh in [0, 1]).
            target_sizes: [B, 2] (height, width) to scale the boxes to, usually the original image size.

        Returns:
            B dicts: scores [N], labels int64 [N], boxes [N, 4] (x1, y1, x2, y2 in pixels),
            N = min(num_detections, Q * num_classes).
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if target_sizes.dim() != 2 or target_sizes.shape != (logits.shape[0], 2):
            raise ValueError(
                f"PostProcess: target_sizes must be [{logits.shape[0]}, 2] (h, w), got {list(target_sizes.shape)}"
            )
        num_classes = logits.shape[2]
        prob = logits.sigmoid()
        count = min(self.num_detections, prob.shape[1] * num_classes)
        scores, flat_indices = torch.topk(prob.view(logits.shape[0], -1), count, dim=1)
        query_indices = torch.div(flat_indices, num_classes, rounding_mode="floor")
        labels = flat_indices % num_classes
        boxes = box_convert(boxes, "cxcywh", "xyxy")
        boxes = torch.gather(boxes, 1, query_indices.unsqueeze(-1).repeat(1, 1, 4))
        img_h, img_w = target_sizes.unbind(1)
        scale = torch.stack([img_w, img_h, img_w, img_h], dim=1)
        boxes = boxes * scale[:, None, :]
        return [{"scores": s, "labels": c, "boxes": b} for s, c, b in zip(scores, labels, boxes)]
