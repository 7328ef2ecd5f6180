// JPEG encoding with TurboJPEG (tjCompress2) and PNG encoding with libpng: the synthesized dataset, the
// pre-resized shard images and contact sheets.
#include <png.h>
#include <turbojpeg.h>

#include <csetjmp>
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

// libpng reports errors by longjmp; `out` and `rows` belong to the caller so no destructor is skipped.
struct PngWriteState {
  std::jmp_buf jump;
  std::vector<uint8_t>* out;
};

void png_write_memory(png_structp png, png_bytep data, png_size_t n) {
  auto* s = static_cast<PngWriteState*>(png_get_io_ptr(png));
  s->out->insert(s->out->end(), data, data + n);
}
void png_flush_nothing(png_structp) {}
void png_write_error(png_structp png, png_const_charp) {
  std::longjmp(static_cast<PngWriteState*>(png_get_error_ptr(png))->jump, 1);
}

bool encode_png_into(const Image& im, std::vector<png_bytep>& rows, PngWriteState& state) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, png_write_error, nullptr);
  if (png == nullptr) return false;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(state.jump)) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, &state, png_write_memory, png_flush_nothing);
  png_set_IHDR(png, info, im.width, im.height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 3);  // fast: the file's size does not matter
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
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

std::vector<uint8_t> encode_png(const Image& im) {
  std::vector<uint8_t> out;
  std::vector<png_bytep> rows(im.height);
  for (int y = 0; y < im.height; ++y)
    rows[y] = const_cast<png_bytep>(im.rgb.data() + static_cast<size_t>(y) * im.width * 3);
  PngWriteState state{};
  state.out = &out;
  ALEXNET_CHECK(encode_png_into(im, rows, state), "libpng failed to encode a ", im.width, "x", im.height,
                " image");
  return out;
}

}  // namespace alexnet
