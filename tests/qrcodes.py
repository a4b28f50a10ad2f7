"""Read a QR code back out of a PNG, as a phone camera would (test helper).

The PNG is decoded here with the standard library only (zlib + the PNG filters), then the
pixels go to zxing-cpp, an independent QR decoder: a test passing through this helper proves
the picture itself carries the payload, not just that we called the encoder.
"""

from __future__ import annotations

import struct
import zlib


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_grayscale(png: bytes) -> tuple[int, int, bytes]:
    """``(width, height, one byte per pixel)`` of a non-interlaced grayscale PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None, "PNG without IHDR"
    width, height, depth, color, _, _, interlace = header
    assert color == 0 and interlace == 0 and depth in (1, 2, 4, 8), header
    raw = zlib.decompress(idat)
    stride = (width * depth + 7) // 8
    bpp = max(1, depth // 8)
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            line[i] = (
                line[i] + (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]  # filter types 0-4
            ) & 0xFF
        rows.append(line)
        prev = line
    top = (1 << depth) - 1
    pixels = bytearray()
    for line in rows:
        for x in range(width):
            bit = x * depth
            value = (line[bit // 8] >> (8 - depth - bit % 8)) & top
            pixels.append(value * 255 // top)
    return width, height, bytes(pixels)


def read_qr_png(png: bytes) -> str:
    """The text of the one QR code in ``png`` (AssertionError when none or several)."""
    import zxingcpp

    width, height, pixels = png_grayscale(png)
    found = zxingcpp.read_barcodes(memoryview(pixels).cast("B", (height, width)))
    assert len(found) == 1, f"expected one QR code, found {len(found)}"
    return found[0].text
