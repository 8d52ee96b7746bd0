"""Model outputs to COCO-style detections: the best (query, class) pairs in absolute xyxy pixels."""

import torch
from torch import nn
from torchvision.ops import batched_nms, box_convert


class PostProcess(nn.Module):
    """Per image, the `num_detections` (query, class) pairs with the highest sigmoid scores (all pairs when a
    small model has fewer than that).

    A query may appear several times with different classes, as in the authors' evaluation.

    Args:
        num_detections: pairs kept per image before NMS.
        nms_iou_threshold: below 1, a per-class NMS then drops every detection overlapping a higher-scoring one
            of its class by more than this IoU. The authors use none (1.0): a fully trained model's one-to-one
            matching leaves few duplicates, but a briefly trained one still gives several boxes per object.
    """

    def __init__(self, num_detections: int = 100, nms_iou_threshold: float = 1.0):
        super().__init__()
        if not 0.0 < nms_iou_threshold <= 1.0:
            raise ValueError(f"PostProcess: nms_iou_threshold must be in (0, 1], got {nms_iou_threshold}")
        self.num_detections = num_detections
        self.nms_iou_threshold = nms_iou_threshold

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """
        Args:
            outputs: pred_logits [B, Q, num_classes], pred_boxes [B, Q, 4] (cxcywh in [0, 1]).
            target_sizes: [B, 2] (height, width) to scale the boxes to, usually the original image size.

        Returns:
            B dicts: scores [N], labels int64 [N], boxes [N, 4] (x1, y1, x2, y2 in pixels), by decreasing score;
            N = min(num_detections, Q * num_classes), fewer after NMS.
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
        results = [{"scores": s, "labels": c, "boxes": b} for s, c, b in zip(scores, labels, boxes)]
        if self.nms_iou_threshold < 1.0:
            for result in results:
                keep = batched_nms(result["boxes"].float(), result["scores"].float(), result["labels"],
                                   self.nms_iou_threshold)
                for key in result:
                    result[key] = result[key][keep]
        return results
