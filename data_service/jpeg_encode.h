// Encoders beyond encode_jpeg (image.h): grayscale and Adobe-style CMYK JPEG, the two unusual kinds of
// JPEG that ImageNet holds and the synthesized dataset reproduces, and PNG (libpng).
#pragma once

#include <cstdint>
#include <vector>

namespace alexnet {

struct Image;

// gray: [height, width] uint8; a one-component JPEG.
std::vector<uint8_t> encode_jpeg_gray(const uint8_t* gray, int width, int height, int quality);
// cmyk: [height, width, 4] uint8 as Adobe applications store it (inverted: 255 - C, 255 - M, 255 - Y,
// 255 - K), written through TurboJPEG's TJPF_CMYK (a YCCK JPEG with an Adobe marker).
std::vector<uint8_t> encode_jpeg_cmyk(const uint8_t* cmyk, int width, int height, int quality);

// RGB 8-bit PNG of `image` (fast compression).
std::vector<uint8_t> encode_png(const Image& image);

}  // namespace alexnet
