"""The set-prediction losses: focal classification, L1 and GIoU box losses, on every decoder layer."""

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from deformable_detr.training.distributed import average_num_boxes
from deformable_detr.config.model import ModelSettings
from deformable_detr.models.denoising import denoising_indices
from deformable_detr.models.matcher import HungarianMatcher, Indices, build_matcher

LOSSES = ("labels", "boxes", "cardinality")


@torch.no_grad()
def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Percentage of rows of logits [N, C] whose best class is labels [N]; 0 when N is 0."""
    if labels.numel() == 0:
        return torch.zeros([], device=logits.device)
    predicted = logits.topk(1, 1, True, True)[1].t()
    correct = predicted.eq(labels.view(1, -1).expand_as(predicted))
    return correct[:1].reshape(-1).float().sum(0) * (100.0 / labels.shape[0])


class SetCriterion(nn.Module):
    """Matches predictions to targets, then computes the losses of the matched pairs.

    Args:
        num_classes: classifier outputs (sigmoid per class; unmatched queries have all-zero targets).
        matcher: the Hungarian matcher.
        weight_dict: loss name -> weight of that term in the total loss.
        losses: which of "labels", "boxes", "cardinality" to compute.
        focal_alpha: alpha of the focal loss (gamma is 2).
        one_to_many_repeats: how many times each target is repeated for the one-to-many query group (outputs'
            "one_to_many", hybrid matching).
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float],
                 losses: tuple[str, ...] = LOSSES, focal_alpha: float = 0.25, one_to_many_repeats: int = 1):
        super().__init__()
        unknown = [name for name in losses if name not in LOSSES]
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {unknown}; choose from {list(LOSSES)}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.losses = tuple(losses)
        self.focal_alpha = focal_alpha
        self.one_to_many_repeats = one_to_many_repeats

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar to minimise: the sum of the weighted terms of `losses` (logging-only terms have no weight)."""
        return sum(losses[name] * weight for name, weight in self.weight_dict.items() if name in losses)

    def loss_labels(self, outputs: dict, targets: list[dict], indices: Indices, num_boxes: float,
                    log: bool = True) -> dict[str, torch.Tensor]:
        """Sigmoid focal loss over all queries and classes; class_error (%) of the matched queries if log."""
        src_logits = outputs["pred_logits"]
        idx = _src_permutation_idx(indices)
        target_classes_o = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        # index num_classes marks "no object": a one-hot column that is dropped below
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=src_logits.device)
        target_classes[idx] = target_classes_o
        onehot = torch.zeros([src_logits.shape[0], src_logits.shape[1], src_logits.shape[2] + 1],
                             dtype=src_logits.dtype, layout=src_logits.layout, device=src_logits.device)
        onehot.scatter_(2, target_classes.unsqueeze(-1), 1)
        onehot = onehot[:, :, :-1]
        focal = sigmoid_focal_loss(src_logits, onehot, alpha=self.focal_alpha, gamma=2, reduction="none")
        # the authors average over queries (dim 1), sum over classes and images, divide by the box count, then
        # multiply by the number of queries: a sum over every query and class, per box
        loss_ce = focal.mean(1).sum() / num_boxes * src_logits.shape[1]
        losses = {"loss_ce": loss_ce}
        if log:
            losses["class_error"] = 100 - top1_accuracy(src_logits[idx], target_classes_o)
        return losses

    @torch.no_grad()
    def loss_cardinality(self, outputs: dict, targets: list[dict], indices: Indices,
                         num_boxes: float) -> dict[str, torch.Tensor]:
        """Logging only: |number of queries whose best class is not the last one - number of targets|."""
        logits = outputs["pred_logits"]
        target_lengths = torch.as_tensor([len(t["labels"]) for t in targets], device=logits.device)
        # inherited from DETR's softmax head, whose last class is "no object"; kept for comparable logs
        card_pred = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1)
        return {"cardinality_error": F.l1_loss(card_pred.float(), target_lengths.float())}

    def loss_boxes(self, outputs: dict, targets: list[dict], indices: Indices,
                   num_boxes: float) -> dict[str, torch.Tensor]:
        """L1 of cxcywh boxes and 1 - GIoU of the matched pairs, each summed and divided by num_boxes."""
        idx = _src_permutation_idx(indices)
        src_boxes = outputs["pred_boxes"][idx]
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)], dim=0).to(src_boxes.dtype)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none")
        giou = generalized_box_iou(box_convert(src_boxes, "cxcywh", "xyxy"),
                                   box_convert(target_boxes, "cxcywh", "xyxy"))
        loss_giou = 1 - torch.diag(giou)
        return {"loss_bbox": loss_bbox.sum() / num_boxes, "loss_giou": loss_giou.sum() / num_boxes}

    def get_loss(self, loss: str, outputs: dict, targets: list[dict], indices: Indices, num_boxes: float,
                 **kwargs: bool) -> dict[str, torch.Tensor]:
        loss_map: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
            "labels": self.loss_labels,
            "cardinality": self.loss_cardinality,
            "boxes": self.loss_boxes,
        }
        return loss_map[loss](outputs, targets, indices, num_boxes, **kwargs)

    def forward(self, outputs: dict, targets: list[dict], across_workers: bool = True) -> dict[str, torch.Tensor]:
        """
        Args:
            outputs: the model's dict (pred_logits, pred_boxes, optional aux_outputs, enc_outputs, one_to_many).
            targets: B dicts with labels int64 [K_i] and boxes [K_i, 4] (cxcywh in [0, 1]); other keys ignored.
            across_workers: divide by the box count averaged over the workers (a collective every worker must
                join, as in training), or by this batch's own count (validation, where workers may hold
                different numbers of batches).

        Returns:
            every loss term: loss_ce, loss_bbox, loss_giou, class_error, cardinality_error, the same
            (without class_error) suffixed _0.._{num_dec-2} for earlier layers and _enc for the proposals;
            loss_ce, loss_bbox, loss_giou (and _0.. for earlier layers) suffixed _one2many for the one-to-many
            group, each divided by num_boxes x one_to_many_repeats; the same suffixed _dn for the denoising
            queries, divided by num_boxes x their groups.
        """
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(
                f"SetCriterion: {len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]} images"
            )
        for index, target in enumerate(targets):
            if "labels" not in target or "boxes" not in target:
                raise ValueError(f"SetCriterion: targets[{index}] needs 'labels' and 'boxes', has {sorted(target)}")
        final_outputs = {k: v for k, v in outputs.items()
                         if k not in ("aux_outputs", "enc_outputs", "one_to_many", "denoising")}
        indices = self.matcher(final_outputs, targets)
        num_boxes = float(sum(len(t["labels"]) for t in targets))
        if across_workers:
            num_boxes = average_num_boxes(num_boxes, outputs["pred_logits"].device)
        else:
            num_boxes = max(num_boxes, 1.0)

        losses: dict[str, torch.Tensor] = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs, targets, indices, num_boxes))
        for layer, aux_outputs in enumerate(outputs.get("aux_outputs", [])):
            losses.update(self._matched_losses(aux_outputs, targets, num_boxes, f"_{layer}", self.losses))
        if "enc_outputs" in outputs:
            # proposals are scored as object vs background: every target has class 0
            bin_targets = [{"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets]
            losses.update(self._matched_losses(outputs["enc_outputs"], bin_targets, num_boxes, "_enc", self.losses))
        if "one_to_many" in outputs:
            # every layer of the one-to-many group, matched to the targets repeated (no logging-only terms)
            group, repeats = outputs["one_to_many"], self.one_to_many_repeats
            repeated = [{"labels": t["labels"].repeat(repeats), "boxes": t["boxes"].repeat(repeats, 1)}
                        for t in targets]
            for suffix, layer_outputs in _every_layer(group):
                losses.update(self._matched_losses(layer_outputs, repeated, num_boxes * repeats,
                                                   f"{suffix}_one2many", ("labels", "boxes")))
        if "denoising" in outputs:
            # every layer of the denoising queries, against the targets they were made from (no matching)
            group = outputs["denoising"]
            indices = denoising_indices(targets, group["groups"], group["per_group"])
            for suffix, layer_outputs in _every_layer(group):
                losses.update(self._layer_losses(layer_outputs, targets, indices, num_boxes * group["groups"],
                                                 f"{suffix}_dn", ("labels", "boxes")))
        return losses

    def _matched_losses(self, outputs: dict, targets: list[dict], num_boxes: float, suffix: str,
                        losses: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The `losses` of one layer's outputs after matching them to `targets`, each name + `suffix`."""
        return self._layer_losses(outputs, targets, self.matcher(outputs, targets), num_boxes, suffix, losses)

    def _layer_losses(self, outputs: dict, targets: list[dict], indices: Indices, num_boxes: float, suffix: str,
                      losses: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The `losses` of one layer's outputs paired with `targets` by `indices`, each name + `suffix`
        (without class_error: only the final layer logs it)."""
        terms: dict[str, torch.Tensor] = {}
        for loss in losses:
            kwargs = {"log": False} if loss == "labels" else {}
            terms.update(self.get_loss(loss, outputs, targets, indices, num_boxes, **kwargs))
        return {f"{name}{suffix}": value for name, value in terms.items()}


def build_weight_dict(settings: ModelSettings) -> dict[str, float]:
    """Loss weights of the final layer, each earlier decoder layer (_i), the two-stage proposals (_enc), the
    one-to-many group (_one2many, x one_to_many_weight) and the denoising queries (_dn)."""
    base = {
        "loss_ce": settings.cls_loss_coef, "loss_bbox": settings.bbox_loss_coef, "loss_giou": settings.giou_loss_coef
    }
    weight_dict = dict(base)
    if settings.aux_loss:
        for layer in range(settings.dec_layers - 1):
            weight_dict.update({f"{name}_{layer}": value for name, value in base.items()})
    # the authors add the _enc weights only together with aux_loss; two-stage always needs them
    if settings.aux_loss or settings.two_stage:
        weight_dict.update({f"{name}_enc": value for name, value in base.items()})
    decoder = [name for name in weight_dict if not name.endswith("_enc")]
    if settings.one_to_many_queries:
        weight_dict.update({f"{name}_one2many": weight_dict[name] * settings.one_to_many_weight for name in decoder})
    if settings.denoising_groups:
        weight_dict.update({f"{name}_dn": weight_dict[name] for name in decoder})
    return weight_dict


def build_criterion(settings: ModelSettings) -> SetCriterion:
    return SetCriterion(settings.num_classes, build_matcher(settings), build_weight_dict(settings), LOSSES,
                        focal_alpha=settings.focal_alpha, one_to_many_repeats=settings.one_to_many_repeats)


def _every_layer(group: dict) -> list[tuple[str, dict]]:
    """(name suffix, outputs) of a query group's last layer ("") and of each earlier layer ("_0", "_1", ...)."""
    return [("", group)] + [(f"_{layer}", aux) for layer, aux in enumerate(group.get("aux_outputs", []))]


def _src_permutation_idx(indices: Indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, query index) of every matched prediction."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    return batch_idx, src_idx
