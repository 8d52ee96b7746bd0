"""Decoding image files: the one decoder of the package (datasets, prediction, pictures)."""

import torch
from torchvision.io import ImageReadMode, decode_image


class ImageDecodeError(ValueError):
    """An image file that is empty, corrupt, truncated or not an image; the message names it."""


def decode(data: bytes, location: str) -> torch.Tensor:
    """JPEG/PNG/... bytes -> uint8 RGB [3, H, W] (libjpeg-turbo through torchvision; grey images become RGB).

    Args:
        location: how errors name the file, e.g. its path, or 'image id 7 (gs://bucket/val2017/x.jpg)'.
    """
    if not data:
        raise ImageDecodeError(f"cannot decode {location}: the file is empty")
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except RuntimeError as error:  # torchvision reports undecodable data as RuntimeError
        raise ImageDecodeError(f"cannot decode {location}: {error}") from error


def read_image(path: str) -> torch.Tensor:
    """The image file at `path` as uint8 RGB [3, H, W]; ImageDecodeError names the file when it is not one."""
    with open(path, "rb") as f:
        return decode(f.read(), path)
