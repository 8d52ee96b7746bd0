"""Batching images of different sizes: pad bottom/right, with a mask marking the padding."""

import torch


def pad_images(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad CHW images of different sizes into one batch.

    Args:
        images: B tensors [C, H_i, W_i] of one dtype and device.

    Returns:
        batch [B, C, H, W] (zeros in the padding) and mask bool [B, H, W], True at padding,
        where H and W are the largest height and width.
    """
    if len(images) == 0:
        raise ValueError("pad_images: got no images")
    channels = images[0].shape[0]
    if any(image.dim() != 3 or image.shape[0] != channels for image in images):
        raise ValueError(
            f"pad_images: expected CHW images with {channels} channels, got shapes {[tuple(i.shape) for i in images]}"
        )
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = images[0].new_zeros((len(images), channels, height, width))
    mask = torch.ones((len(images), height, width), dtype=torch.bool, device=images[0].device)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]].copy_(image)
        mask[index, : image.shape[1], : image.shape[2]] = False
    return batch, mask


def collate_fn(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Batch dataset items of different sizes: images [B, 3, H, W] zero-padded bottom/right, mask bool [B, H, W]
    (True at padding) and the list of B targets."""
    images, targets = zip(*batch)
    padded, mask = pad_images(list(images))
    return padded, mask, list(targets)
