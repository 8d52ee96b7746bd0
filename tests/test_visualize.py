"""The plotting and drawing code on small inputs."""

import pytest
import torch
from torchvision.io import decode_png, read_file

from deformable_detr.inference.visualize import denormalize, draw_boxes, plot_curves, save_side_by_side


def test_draw_boxes_marks_the_box_outline_only():
    image = torch.zeros(3, 40, 50, dtype=torch.uint8)
    drawn = draw_boxes(image, torch.tensor([[5.0, 6.0, 30.0, 25.0]]), [2], {2: "ellipse"}, [0.9])
    assert drawn.shape == image.shape and drawn.dtype == torch.uint8
    assert drawn[:, 6, 10].sum() > 0  # top edge
    assert drawn[:, 15, 17].sum() == 0  # inside stays untouched
    assert torch.equal(draw_boxes(image, torch.zeros(0, 4), [], {}), image)


def test_side_by_side_grid_holds_every_pair(tmp_path):
    pairs = [(torch.full((3, 20, 30), 10, dtype=torch.uint8), torch.full((3, 18, 30), 200, dtype=torch.uint8))] * 3
    save_side_by_side(pairs, str(tmp_path / "grid.png"), columns=2)
    grid = decode_png(read_file(str(tmp_path / "grid.png")))
    assert grid.shape[0] == 3 and grid.shape[2] >= 2 * 2 * 30 and grid.shape[1] >= 2 * 20
    with pytest.raises(ValueError):
        save_side_by_side([], str(tmp_path / "none.png"))


def test_denormalize_inverts_imagenet_normalisation():
    pixels = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert torch.equal(denormalize((pixels / 255 - mean) / std), pixels)


def test_plot_curves_writes_a_png(tmp_path):
    records = [{"kind": "train", "batch": b, "loss": 5.0 / b, "loss_ce": 1.0 / b} for b in range(1, 6)]
    records += [{"kind": "validation", "batch": 5, "mAP": 0.3, "mAP_50": 0.5, "loss": 1.2}]
    plot_curves(records, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        plot_curves([], str(tmp_path / "empty.png"))
