// Image decoding (TurboJPEG, libpng) and the geometric steps of the paper's input pipeline (§2):
// RGB uint8 images, shorter side to 256, centre crop, crops and flips.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace alexnet {

// Interleaved RGB, row-major: pixel (x, y) channel c is rgb[(y * width + x) * 3 + c].
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;
};

// What the bytes are, from their magic numbers (never from the file name: ImageNet has a PNG named .JPEG).
enum class ImageKind { kJpeg, kPng, kUnknown };
ImageKind sniff_image(const uint8_t* data, size_t size);

// Decodes a JPEG (grayscale, YCbCr, CMYK or YCCK; Adobe-inverted CMYK handled) or a PNG (any bit depth,
// palette, gray, alpha dropped) to RGB. When min_short_side > 0 and the image is a JPEG much larger than
// needed, decodes at the smallest DCT scale (1/2, 1/4, 1/8) whose shorter side is still >= min_short_side.
// Failures (truncated, empty, not an image, corrupt) are a Status naming the problem; `name` (the file)
// is put into the message. The RGB equals PIL's Image.open(f).convert("RGB") (draft() for DCT scaling),
// with one deliberate exception: 16-bit grayscale PNGs keep their high byte where PIL saturates to 255.
// A JPEG that libjpeg-turbo decodes only with a warning (premature end of data, corrupt entropy data) is
// reported as bad, so that such files are skipped and counted; the one harmless warning, extraneous bytes
// before the end-of-image marker (the picture is complete), is accepted.
StatusOr<Image> decode_image(const uint8_t* data, size_t size, const std::string& name, int min_short_side = 0);
// The same, decoding into `out` and reusing its buffer (a worker thread keeps one Image per stage, so the
// steady state allocates nothing). On failure `out` holds no valid image.
Status decode_image_into(const uint8_t* data, size_t size, const std::string& name, int min_short_side, Image& out);
// Reads and decodes a file (a missing or unreadable file is a Status too).
StatusOr<Image> decode_image_file(const std::string& path, int min_short_side = 0);

// The paper's rescaling (§2): resize so the shorter side is `side` (area-weighted, antialiased when
// shrinking), then take the central side x side square. Bit-identical to PIL's
// resize((w', h'), Image.BILINEAR) followed by crop(), with (w', h') the image size scaled so that the
// shorter side is `side` (the longer one rounded), the crop at floor((long' - side) / 2).
Image resize_shorter_and_center_crop(const Image& in, int side);
// The same into `out` (must not be `in`), reusing its buffer.
void resize_shorter_and_center_crop_into(const Image& in, int side, Image& out);

// Encodes RGB to JPEG (quality 1..100, 4:2:0 or 4:4:4) with TurboJPEG; for synthesized data and shards.
std::vector<uint8_t> encode_jpeg(const Image& image, int quality, bool subsample_420);

}  // namespace alexnet
