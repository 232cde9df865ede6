"""Image loading, datasets and transforms."""

from .io import (
    ImageLoadError,
    decode_image,
    list_images,
    load_image,
    pil_to_tensor,
    tensor_to_pil,
    tensor_to_uint8,
)

__all__ = [
    "ImageLoadError",
    "decode_image",
    "list_images",
    "load_image",
    "pil_to_tensor",
    "tensor_to_pil",
    "tensor_to_uint8",
]
