"""Zero-copy access to a Pillow image's pixel memory through the Arrow C data interface.

Pillow stores an RGB image as 4 bytes per pixel (R, G, B, padding). ``np.asarray(image)`` and
``image.tobytes()`` pack that storage into 3-byte pixels, one copy of the whole image through
Pillow's per-pixel unpacker: it is the largest cost of getting a decoded image into torch (see
``tools/measure_preprocess.py``). Pillow >= 11.2 exports the storage itself, without a copy,
through the Arrow C data interface (``Image.__arrow_c_array__``: a fixed-size list of 4 uint8 per
pixel). :func:`rgbx_view` wraps that buffer as a uint8 (H, W, 4) tensor: channels 0..2 are R, G,
B, channel 3 is Pillow's padding. torch's uint8 antialiased resize reads 4-byte pixels natively
(its AVX kernel packs 3-channel input to 4 bytes per pixel first), so the view can be resized as
a 4-channel channels-last image with no conversion at all.

The capsules (and so the export, which holds a reference to Pillow's memory block) are kept
alive by the Python buffer object that the tensor references: the view stays valid as long as
the tensor lives, even if the image is closed. It must never be written to.

Images whose rows are not one contiguous block (Pillow allocates large images in several blocks),
modes other than RGB/RGBA/RGBX, and Pillow versions without the export give ``None``; callers
fall back to ``np.asarray``. Only the interface's C structs are used (no pyarrow).
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from PIL import Image

__all__ = ["FOUR_BYTE_MODES", "arrow_export_available", "rgbx_view"]

FOUR_BYTE_MODES = ("RGB", "RGBA", "RGBX")  # Pillow modes stored as 4 bytes per pixel


class _ArrowSchema(ctypes.Structure):
    """``struct ArrowSchema`` of the Arrow C data interface."""


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    ("dictionary", ctypes.POINTER(_ArrowSchema)), ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class _ArrowArray(ctypes.Structure):
    """``struct ArrowArray`` of the Arrow C data interface."""


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.POINTER(_ArrowArray)), ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def arrow_export_available() -> bool:
    """Whether this Pillow exports images through the Arrow C data interface (>= 11.2)."""
    return hasattr(Image.Image, "__arrow_c_array__")


def rgbx_view(image: Image.Image) -> torch.Tensor | None:
    """uint8 (H, W, 4) tensor over the 4-byte pixels of `image` (RGB/RGBA/RGBX), or None.

    No pixel is copied. Channels 0..2 are R, G, B; channel 3 is padding (RGB, RGBX) or alpha.
    None when the export is unavailable or the storage is not one contiguous block of
    ``4 * W * H`` bytes. The tensor must not be written to (it is Pillow's memory).
    """
    if image.mode not in FOUR_BYTE_MODES or not arrow_export_available():
        return None
    try:
        schema_capsule, array_capsule = image.__arrow_c_array__()
    except (ValueError, OSError, TypeError):  # e.g. "Image rows are not contiguous in memory"
        return None
    schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    width, height = image.size
    nbytes = 4 * width * height
    if schema.format != b"+w:4" or schema.n_children != 1 \
            or schema.children[0].contents.format != b"C" or array.n_children != 1 \
            or array.offset != 0 or array.length != width * height:
        return None
    child = array.children[0].contents
    if child.offset != 0 or child.length != nbytes or child.n_buffers < 2 \
            or not child.buffers[1]:
        return None
    buffer: Any = (ctypes.c_uint8 * nbytes).from_address(child.buffers[1])
    buffer.keep_alive = (schema_capsule, array_capsule)  # released with the last tensor
    return torch.frombuffer(buffer, dtype=torch.uint8).view(height, width, 4)
