"""Deterministic synthetic test images: a colour chart for "no hue the model cannot reproduce".

``colour_chart(size)`` lays out an 8 x 8 grid of cells (rows top to bottom):

0. saturated primaries and secondaries: red, green, blue, cyan, magenta, yellow, orange, violet
1. eight greys, black to white
2. skin-ish tones, light to dark
3. eight hues at half saturation (pastels)
4. eight hues at half value (dark saturated colours)
5-6. a continuous hue sweep (0-360 degrees, left to right) at full value, the saturation falling
   from 1 to 0.35 over the two rows
7. the same hue sweep at value 0.5

Nothing is random: the same ``size`` gives the same array, bit for bit.
"""

from __future__ import annotations

import numpy as np

# hue (degrees) of the 8 colours of rows 0, 3 and 4: R, G, B, C, M, Y, orange, violet
_HUES = np.array([0.0, 120.0, 240.0, 180.0, 300.0, 60.0, 30.0, 270.0])
# skin-ish tones (sRGB), light to dark (roughly the Fitzpatrick range of a colour checker)
_SKIN = np.array(
    [
        [255, 224, 196],
        [241, 194, 160],
        [224, 172, 135],
        [198, 134, 96],
        [194, 150, 130],
        [160, 105, 74],
        [115, 74, 52],
        [72, 46, 33],
    ],
    dtype=np.float64,
)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV to RGB in [0, 1] (the standard hexcone model).

    Args:
        h: hue in degrees, any shape; s, v: saturation and value in [0, 1], broadcastable to ``h``.
    Returns:
        array of shape ``broadcast(h, s, v).shape + (3,)``, float64 in [0, 1].
    """
    h, s, v = np.broadcast_arrays(np.asarray(h, np.float64) % 360.0, np.asarray(s, np.float64), v)
    c = v * s
    hp = h / 60.0
    x = c * (1 - np.abs(hp % 2 - 1))
    z = np.zeros_like(c)
    sector = np.floor(hp).astype(int) % 6
    rgb = np.select(
        [sector[..., None] == k for k in range(6)],
        [np.stack(t, -1) for t in ((c, x, z), (x, c, z), (z, c, x), (z, x, c), (x, z, c), (c, z, x))],
    )
    return rgb + (v - c)[..., None]


def colour_chart(size: int = 256) -> np.ndarray:
    """The colour chart (see the module docstring) as an 8-bit RGB image.

    Args:
        size: side of the square chart in pixels, >= 8 (a multiple of 8 gives equal cells).
    Returns:
        (size, size, 3) uint8 array.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    idx = np.arange(size)
    row, col = (idx * 8 // size)[:, None], (idx * 8 // size)[None, :]  # (size, 1), (1, size) cell index
    rows = np.broadcast_to(row, (size, size))
    cols = np.broadcast_to(col, (size, size))
    img = np.zeros((size, size, 3))
    cells = {
        0: hsv_to_rgb(_HUES, 1.0, 1.0),
        1: np.repeat((np.arange(8) / 7.0)[:, None], 3, 1),
        2: _SKIN / 255.0,
        3: hsv_to_rgb(_HUES, 0.5, 1.0),
        4: hsv_to_rgb(_HUES, 1.0, 0.5),
    }
    for r, colours in cells.items():
        m = rows == r
        img[m] = colours[cols[m]]
    # rows 5-7: a hue sweep, continuous along x; saturation (rows 5-6) or value (row 7) along y
    hue = np.broadcast_to((idx + 0.5) / size * 360.0, (size, size))
    y = (idx[:, None] + 0.5) / size  # (size, 1) in (0, 1)
    sat = np.broadcast_to(1.0 - 0.65 * np.clip((y - 5 / 8) / (2 / 8), 0, 1), (size, size))
    m = (rows >= 5) & (rows <= 6)
    img[m] = hsv_to_rgb(hue[m], sat[m], 1.0)
    m = rows == 7
    img[m] = hsv_to_rgb(hue[m], 1.0, 0.5)
    return np.round(img * 255.0).clip(0, 255).astype(np.uint8)
