// JPEG encoding with TurboJPEG (tjCompress2): the synthesized dataset and the pre-resized shard images.
#include <turbojpeg.h>

#include <cstdlib>
#include <memory>

#include "core/error.h"
#include "data_service/image.h"
#include "data_service/jpeg_encode.h"

namespace alexnet {
namespace {

struct TjDeleter {
  void operator()(void* h) const { tjDestroy(h); }
};

// One compressor per thread: synth and prepare encode from many threads, and a handle is not thread-safe.
tjhandle thread_compressor() {
  thread_local std::unique_ptr<void, TjDeleter> handle(tjInitCompress());
  ALEXNET_ASSERT(handle != nullptr, "tjInitCompress failed: ", tjGetErrorStr2(nullptr));
  return handle.get();
}

std::vector<uint8_t> compress(const uint8_t* pixels, int width, int height, int pixel_format, int subsamp,
                              int quality) {
  ALEXNET_CHECK(width > 0 && height > 0, "encode_jpeg: empty image (", width, "x", height, ")");
  ALEXNET_CHECK(quality >= 1 && quality <= 100, "encode_jpeg: quality must be in 1..100, got ", quality);
  tjhandle tj = thread_compressor();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(tj, pixels, width, 0, height, pixel_format, &buf, &size, subsamp, quality,
                             TJFLAG_ACCURATEDCT);
  // Copy before freeing so the buffer is released on both paths.
  std::vector<uint8_t> out;
  if (rc == 0) out.assign(buf, buf + size);
  tjFree(buf);
  ALEXNET_CHECK(rc == 0, "encode_jpeg: tjCompress2 failed on a ", width, "x", height, " image: ",
                tjGetErrorStr2(tj));
  return out;
}

}  // namespace

std::vector<uint8_t> encode_jpeg(const Image& image, int quality, bool subsample_420) {
  ALEXNET_CHECK(image.rgb.size() == static_cast<size_t>(image.width) * image.height * 3,
                "encode_jpeg: ", image.width, "x", image.height, " image holds ", image.rgb.size(),
                " bytes, expected ", static_cast<size_t>(image.width) * image.height * 3);
  return compress(image.rgb.data(), image.width, image.height, TJPF_RGB, subsample_420 ? TJSAMP_420 : TJSAMP_444,
                  quality);
}

std::vector<uint8_t> encode_jpeg_gray(const uint8_t* gray, int width, int height, int quality) {
  return compress(gray, width, height, TJPF_GRAY, TJSAMP_GRAY, quality);
}

std::vector<uint8_t> encode_jpeg_cmyk(const uint8_t* cmyk, int width, int height, int quality) {
  return compress(cmyk, width, height, TJPF_CMYK, TJSAMP_444, quality);
}

}  // namespace alexnet
