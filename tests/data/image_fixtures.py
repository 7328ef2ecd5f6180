#!/usr/bin/python3
"""Writes decode/rescale fixtures into DIR and PIL's RGB for each (the reference test_image compares against).

usage: image_fixtures.py DIR [EXTRA.jpg ...]
Writes DIR/manifest.txt, one line per check:
  decode FILE REF W H MIN_SHORT_SIDE    REF = raw RGB of PIL's Image.open(FILE).convert("RGB") (draft when scaled)
  resize FILE REF SIDE                  REF = PIL resize((w', h'), BILINEAR) then centre crop, SIDE x SIDE RGB
EXTRA files (written by the C++ test, e.g. a YCCK JPEG from TurboJPEG) get decode lines too.
"""
import math
import os
import sys

import numpy as np
from PIL import Image


def natural(w, h, seed):
    """Smooth gradients, a few shapes and noise: content whose JPEG behaves like a photograph's."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        img[..., c] = 128 + 90 * np.sin(fx * 2 * np.pi * x / w + ph) * np.cos(fy * 2 * np.pi * y / h)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, max(6, min(w, h) / 4))
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        img[mask] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def dump(d, name, arr, lines, line, tag=""):
    ref = name + tag + ".rgb"
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    arr.tofile(os.path.join(d, ref))
    lines.append(line.format(file=name, ref=ref, w=arr.shape[1], h=arr.shape[0]))


def decode_ref(d, name, lines, min_short_side=0, denom=1):
    im = Image.open(os.path.join(d, name))
    if denom > 1:
        w, h = im.size
        im.draft("RGB", (w // denom, h // denom))
    arr = np.asarray(im.convert("RGB"))
    dump(d, name, arr, lines, "decode {file} {ref} {w} {h} %d" % min_short_side, ".%d" % min_short_side)


def main():
    d = sys.argv[1]
    lines = []
    rgb = natural(320, 240, 1)

    # JPEGs as libjpeg-turbo (through PIL) writes them.
    Image.fromarray(rgb).save(os.path.join(d, "rgb420.jpg"), quality=90, subsampling=2)
    Image.fromarray(rgb).save(os.path.join(d, "rgb444.jpg"), quality=96, subsampling=0)
    Image.fromarray(rgb).save(os.path.join(d, "rgb422_progressive.jpg"), quality=85, subsampling=1,
                              progressive=True)
    Image.fromarray(rgb).convert("L").save(os.path.join(d, "gray.jpg"), quality=90)
    # PIL writes CMYK JPEGs with Adobe's inverted convention (as Photoshop does): the common real-world kind.
    cmyk = np.concatenate([255 - rgb, natural(320, 240, 2)[..., :1] // 3], axis=2)
    Image.fromarray(cmyk, "CMYK").save(os.path.join(d, "cmyk_adobe.jpg"), quality=92)
    for name in ["rgb420.jpg", "rgb444.jpg", "rgb422_progressive.jpg", "gray.jpg", "cmyk_adobe.jpg"]:
        decode_ref(d, name, lines)

    # DCT scaling: 1100x700 -> 1/2 for 256 (350 >= 256, 175 < 256); 2100x2100 -> 1/8 for 256;
    # 1100x700 with 100 -> 1/4 (175 >= 100, 87 < 100); 500x375 -> none for 256.
    big = natural(1100, 700, 3)
    Image.fromarray(big).save(os.path.join(d, "big.jpg"), quality=90)
    Image.fromarray(natural(2100, 2100, 4)).save(os.path.join(d, "huge.jpg"), quality=90, subsampling=0)
    Image.fromarray(natural(500, 375, 5)).save(os.path.join(d, "typical.jpg"), quality=90)
    decode_ref(d, "big.jpg", lines, 256, 2)
    decode_ref(d, "huge.jpg", lines, 256, 8)
    decode_ref(d, "big.jpg", lines, 100, 4)
    decode_ref(d, "typical.jpg", lines, 256, 1)

    # PNGs named .JPEG (ImageNet's n02105855_2933.JPEG is one): exact references.
    small = natural(97, 61, 6)
    Image.fromarray(small).save(os.path.join(d, "png_rgb.JPEG"), format="PNG")
    Image.fromarray(small).convert("P", palette=Image.ADAPTIVE, colors=50).save(
        os.path.join(d, "png_palette.JPEG"), format="PNG")
    Image.fromarray(small).convert("L").save(os.path.join(d, "png_gray.JPEG"), format="PNG")
    Image.fromarray(small).convert("1").save(os.path.join(d, "png_bilevel.JPEG"), format="PNG")
    rgba = np.concatenate([small, natural(97, 61, 7)[..., :1]], axis=2)
    Image.fromarray(rgba, "RGBA").save(os.path.join(d, "png_rgba.JPEG"), format="PNG")
    Image.fromarray(rgba[..., [0, 3]], "LA").save(os.path.join(d, "png_gray_alpha.JPEG"), format="PNG")
    Image.fromarray(small).save(os.path.join(d, "png_interlaced.JPEG"), format="PNG", interlace=1)
    for name in ["png_rgb.JPEG", "png_palette.JPEG", "png_gray.JPEG", "png_bilevel.JPEG", "png_rgba.JPEG",
                 "png_gray_alpha.JPEG", "png_interlaced.JPEG"]:
        decode_ref(d, name, lines)
    # 16-bit gray: PIL opens it as mode "I" and convert("RGB") saturates every value above 255 to white,
    # which no one wants; we keep the high byte (as PIL itself does for 16-bit RGB). The reference here is
    # PIL's 16-bit data >> 8.
    g16 = (natural(97, 61, 8)[..., 0].astype(np.uint16) * 257 + np.arange(97, dtype=np.uint16)).astype(np.uint16)
    Image.fromarray(g16, "I;16").save(os.path.join(d, "png_gray16.JPEG"), format="PNG")
    arr = np.asarray(Image.open(os.path.join(d, "png_gray16.JPEG")), dtype=np.int64) >> 8
    dump(d, "png_gray16.JPEG", np.repeat(arr[..., None], 3, axis=2), lines, "decode {file} {ref} {w} {h} 0")
    # 16-bit RGB (PIL cannot write it): a minimal PNG writer; PIL reads it to its high bytes.
    write_png16(os.path.join(d, "png_rgb16.JPEG"), (small.astype(np.uint16) * 257 + 77).astype(">u2"))
    decode_ref(d, "png_rgb16.JPEG", lines)

    # Rescale fixtures as PNG (exact pixels), shapes that exercise shrink, enlarge and skipped passes.
    for i, (w, h) in enumerate([(500, 375), (375, 500), (1024, 683), (100, 80), (256, 300), (300, 256),
                                (257, 1000), (40, 300), (256, 256), (2, 3)]):
        name = "resize_%dx%d.png" % (w, h)
        src = natural(w, h, 20 + i)
        Image.fromarray(src).save(os.path.join(d, name))
        side = 256
        if w <= h:
            nw, nh = side, max(side, int(math.floor(h * side / w + 0.5)))
        else:
            nw, nh = max(side, int(math.floor(w * side / h + 0.5))), side
        ox, oy = (nw - side) // 2, (nh - side) // 2
        out = Image.fromarray(src).resize((nw, nh), Image.BILINEAR).crop((ox, oy, ox + side, oy + side))
        dump(d, name, np.asarray(out), lines, "resize {file} {ref} %d" % side)

    for extra in sys.argv[2:]:
        decode_ref(d, os.path.basename(extra), lines)

    with open(os.path.join(d, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_png16(path, rgb16):
    import struct
    import zlib

    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


if __name__ == "__main__":
    main()
