// Image decoding (TurboJPEG for JPEG, libpng for PNG) to RGB, and the paper's shorter-side-to-256 rescale
// with centre crop (PIL's antialiased BILINEAR resampling, computed only where the crop keeps it).
#include "data_service/image.h"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "data_service/cpu_features.h"

namespace alexnet {
namespace {

// Larger images are refused rather than risking a multi-gigabyte allocation from a corrupt header.
constexpr int64_t kMaxPixels = int64_t{1} << 28;

Status bad(const std::string& name, const std::string& what) { return Status::error(str_cat(name, ": ", what)); }

// ---------------------------------------------------------------------------------------------- JPEG

struct TjDeleter {
  void operator()(void* h) const { tjDestroy(h); }
};

// One decompressor per thread: creating one costs allocations, and the service decodes one image per thread.
std::unique_ptr<void, TjDeleter>& thread_decompressor_slot() {
  thread_local std::unique_ptr<void, TjDeleter> handle(tjInitDecompress());
  return handle;
}
tjhandle thread_decompressor() { return thread_decompressor_slot().get(); }
// A decompressor that failed keeps libjpeg state that makes its next header read fail too (libjpeg-turbo
// 2.1 reports the next file as "0x0"), so a failure replaces it.
Status discard_decompressor(Status status) {
  thread_decompressor_slot().reset(tjInitDecompress());
  return status;
}

// PIL's CMYK -> RGB (Convert.c cmyk2rgb): out = (255-K) - round((255-K) * C / 255), with its rounding
// (a*b + 128 + ((a*b + 128) >> 8)) >> 8. PIL reads every 4-channel JPEG as Adobe-inverted ("CMYK;I"),
// so C = 255 - stored.
inline uint8_t muldiv255(int a, int b) {
  int t = a * b + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

void cmyk_inverted_to_rgb(const uint8_t* cmyk, size_t pixels, uint8_t* rgb) {
  for (size_t i = 0; i < pixels; ++i) {
    int nk = cmyk[4 * i + 3];  // stored inverted: 255 - K
    for (int c = 0; c < 3; ++c) rgb[3 * i + c] = static_cast<uint8_t>(nk - muldiv255(255 - cmyk[4 * i + c], nk));
  }
}

// The one libjpeg warning that leaves the image complete: junk between the last scan and the end marker
// (seen in real ImageNet files). Every other warning (premature end of data, corrupt entropy data, resync)
// means part of the picture was filled in by the decoder, so the file is reported as bad.
bool harmless_jpeg_warning(const char* message) {
  return std::strstr(message, "extraneous bytes before marker 0xd9") != nullptr;
}

Status decode_jpeg(const uint8_t* data, size_t size, const std::string& name, int min_short_side, Image& out) {
  tjhandle tj = thread_decompressor();
  if (tj == nullptr) return bad(name, str_cat("cannot create a TurboJPEG decompressor: ", tjGetErrorStr2(nullptr)));
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, data, static_cast<unsigned long>(size), &width, &height, &subsamp, &colorspace) != 0)
    return discard_decompressor(bad(name, str_cat("bad JPEG header (", tjGetErrorStr2(tj), ")")));
  if (width <= 0 || height <= 0 || int64_t{width} * height > kMaxPixels)
    return discard_decompressor(bad(name, str_cat("JPEG size ", width, "x", height, " is empty or too large")));

  // DCT-domain scaling: the IDCT at 1/2, 1/4 or 1/8 costs a fraction of the full one and acts as an area
  // filter, so the later rescale loses nothing as long as the shorter side stays >= min_short_side.
  tjscalingfactor scale{1, 1};
  if (min_short_side > 0) {
    int count = 0;
    const tjscalingfactor* factors = tjGetScalingFactors(&count);
    for (int i = 0; factors != nullptr && i < count; ++i) {
      const tjscalingfactor f = factors[i];
      if (f.num != 1 || (f.denom != 2 && f.denom != 4 && f.denom != 8)) continue;
      if (std::min(TJSCALED(width, f), TJSCALED(height, f)) < min_short_side) continue;
      if (f.denom > scale.denom) scale = f;
    }
  }
  out.width = TJSCALED(width, scale);
  out.height = TJSCALED(height, scale);
  const size_t pixels = static_cast<size_t>(out.width) * out.height;
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  thread_local std::vector<uint8_t> cmyk_buf;  // rare (22 ImageNet files), but no reason to reallocate
  uint8_t* dst;
  if (cmyk) {
    cmyk_buf.resize(pixels * 4);
    dst = cmyk_buf.data();
  } else {
    out.rgb.resize(pixels * 3);
    dst = out.rgb.data();
  }
  // TJFLAG_LIMITSCANS: a progressive file with thousands of scans is a known way to make decoders spin.
  const int rc = tjDecompress2(tj, data, static_cast<unsigned long>(size), dst, out.width, 0, out.height,
                               cmyk ? TJPF_CMYK : TJPF_RGB, TJFLAG_LIMITSCANS);
  if (rc != 0) {
    const char* message = tjGetErrorStr2(tj);
    if (tjGetErrorCode(tj) != TJERR_WARNING)
      return discard_decompressor(bad(name, str_cat("corrupt JPEG data (", message, ")")));
    if (!harmless_jpeg_warning(message))
      return discard_decompressor(
          bad(name, str_cat("truncated or damaged JPEG data (libjpeg-turbo warning: ", message, ")")));
  }
  if (cmyk) {
    out.rgb.resize(pixels * 3);
    cmyk_inverted_to_rgb(cmyk_buf.data(), pixels, out.rgb.data());
  }
  return Status();
}

// ----------------------------------------------------------------------------------------------- PNG

struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t pos;
};

struct PngErrorState {
  std::jmp_buf jump;
  char message[256];
};

void png_read_memory(png_structp png, png_bytep out, png_size_t count) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (count > src->size - src->pos) png_error(png, "unexpected end of data (file truncated)");
  std::memcpy(out, src->data + src->pos, count);
  src->pos += count;
}

void png_on_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngErrorState*>(png_get_error_ptr(png));
  std::snprintf(state->message, sizeof(state->message), "%s", message);
  std::longjmp(state->jump, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // ancillary-chunk trouble does not affect pixels

// libpng reports errors by longjmp. Everything between setjmp and the calls that may jump is plain C state
// owned by this frame's caller (no destructors are skipped); `rows` and `state` outlive the jump.
bool png_decode_rgb(const uint8_t* data, size_t size, Image& out, std::vector<png_bytep>& rows,
                    PngErrorState& state) {
  PngSource src{data, size, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, png_on_error, png_on_warning);
  if (png == nullptr) {
    std::snprintf(state.message, sizeof(state.message), "out of memory");
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (info == nullptr || setjmp(state.jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &src, png_read_memory);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  if (width == 0 || height == 0 || int64_t{width} * height > kMaxPixels)
    png_error(png, "image size is empty or too large");
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  // The same conversions as PIL's convert("RGB"): palette expanded, gray replicated, 1/2/4-bit gray scaled
  // to 0..255, 16-bit reduced to its high byte, alpha and tRNS dropped without compositing.
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_rowbytes(png, info) != width * 3) png_error(png, "unsupported PNG pixel layout");
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.rgb.resize(static_cast<size_t>(width) * height * 3);
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = out.rgb.data() + static_cast<size_t>(y) * width * 3;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

Status decode_png(const uint8_t* data, size_t size, const std::string& name, Image& out) {
  std::vector<png_bytep> rows;
  PngErrorState state{};
  if (!png_decode_rgb(data, size, out, rows, state)) return bad(name, str_cat("bad PNG data (", state.message, ")"));
  return Status();
}

}  // namespace

ImageKind sniff_image(const uint8_t* data, size_t size) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageKind::kJpeg;
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageKind::kPng;
  return ImageKind::kUnknown;
}

StatusOr<Image> decode_image(const uint8_t* data, size_t size, const std::string& name, int min_short_side) {
  Image out;
  Status st = decode_image_into(data, size, name, min_short_side, out);
  if (!st.ok()) return st;
  return out;
}

Status decode_image_into(const uint8_t* data, size_t size, const std::string& name, int min_short_side, Image& out) {
  if (size == 0) return bad(name, "empty file (0 bytes)");
  switch (sniff_image(data, size)) {
    case ImageKind::kJpeg:
      return decode_jpeg(data, size, name, min_short_side, out);
    case ImageKind::kPng:
      return decode_png(data, size, name, out);
    case ImageKind::kUnknown:
      break;
  }
  char head[32];
  const size_t n = std::min<size_t>(size, 4);
  int len = 0;
  for (size_t i = 0; i < n; ++i) len += std::snprintf(head + len, sizeof(head) - len, "%s%02x", i ? " " : "", data[i]);
  return bad(name, str_cat("not a JPEG or PNG image (", size, " bytes, starting ", head, ")"));
}

StatusOr<Image> decode_image_file(const std::string& path, int min_short_side) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return bad(path, str_cat("cannot open: ", std::strerror(errno)));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f)) > 0) bytes.insert(bytes.end(), chunk, chunk + n);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) return bad(path, str_cat("read error: ", std::strerror(err)));
  return decode_image(bytes.data(), bytes.size(), path, min_short_side);
}

// -------------------------------------------------------------------------------------------- resize

namespace {

// Fixed-point weights as PIL's 8-bit resampler uses them: 22 fractional bits leave room for 255 * sum.
constexpr int kWeightBits = 22;

// Weights of one separable pass: output i reads inputs [first[i], first[i] + taps) with weights
// w[i * taps + k] (zero-padded to a common `taps`, which keeps the inner loops branch-free).
struct Pass {
  int taps = 0;
  std::vector<int> first;
  std::vector<int32_t> w;
  std::vector<int16_t> spread;  // the AVX2 horizontal pass's layout of w (5-tap passes only)
};

// PIL's antialiased triangle filter (Image.BILINEAR): for output i, centre c = (i + 0.5) * in/out; when
// shrinking the support (1) is scaled by in/out, so every input pixel contributes (an area-like filter);
// when enlarging it is plain linear interpolation. Only outputs [out0, out0 + count) are built.
Pass make_pass(int in_size, int out_size, int out0, int count, int min_taps = 0) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double fscale = std::max(scale, 1.0);
  const double support = fscale;
  const double inv_fscale = 1.0 / fscale;  // PIL multiplies by the reciprocal; so do we, for equal rounding
  Pass p;
  p.taps = std::min(std::max(static_cast<int>(std::ceil(support)) * 2 + 1, min_taps), in_size);
  p.first.resize(count);
  p.w.assign(static_cast<size_t>(count) * p.taps, 0);
  std::vector<double> k(p.taps);
  for (int j = 0; j < count; ++j) {
    const double centre = (out0 + j + 0.5) * scale;
    const int lo = std::max(static_cast<int>(centre - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(centre + support + 0.5), in_size);
    double sum = 0;
    for (int x = lo; x < hi; ++x) {
      const double t = std::abs((x - centre + 0.5) * inv_fscale);
      k[x - lo] = t < 1.0 ? 1.0 - t : 0.0;
      sum += k[x - lo];
    }
    // Keep the window inside the image: shift it left near the right edge (the extra taps weigh zero).
    const int start = std::max(0, std::min(lo, in_size - p.taps));
    p.first[j] = start;
    for (int x = lo; x < hi; ++x) {
      const double v = sum != 0.0 ? k[x - lo] / sum : 0.0;
      p.w[static_cast<size_t>(j) * p.taps + (x - start)] =
          static_cast<int32_t>(v < 0 ? v * (1 << kWeightBits) - 0.5 : v * (1 << kWeightBits) + 0.5);
    }
  }
  return p;
}

int pass_taps(int in_size, int out_size) {
  return std::min(static_cast<int>(std::ceil(std::max(static_cast<double>(in_size) / out_size, 1.0))) * 2 + 1, in_size);
}

std::vector<int16_t> spread_weights5(const Pass& p, int out_w);

// Weights depend only on the sizes, and ImageNet repeats a few sizes (500x375, 375x500, 500x333, ...)
// over and over: a small per-thread cache saves recomputing them per image.
std::shared_ptr<const Pass> cached_pass(int in_size, int out_size, int out0, int count, int min_taps, bool spread) {
  struct Entry {
    int key[6];
    std::shared_ptr<const Pass> pass;
  };
  thread_local Entry cache[8] = {};
  thread_local int next = 0;
  const int key[6] = {in_size, out_size, out0, count, min_taps, spread};
  for (const Entry& e : cache)
    if (e.pass && std::equal(key, key + 6, e.key)) return e.pass;
  auto p = std::make_shared<Pass>(make_pass(in_size, out_size, out0, count, min_taps));
#if defined(__x86_64__)
  if (spread) p->spread = spread_weights5(*p, count);
#endif
  Entry& e = cache[next];
  next = (next + 1) % 8;
  std::copy(key, key + 6, e.key);
  e.pass = p;
  return p;
}

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kWeightBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over `rows` rows: out[r][j] = sum_k w[j][k] * in[r][first[j] + k], RGB interleaved.
// kTaps > 0 fixes the tap count at compile time (unrolled); kTaps = 0 reads it from the pass.
template <int kTaps>
void horizontal_fixed(const uint8_t* in, int in_stride, int rows, const Pass& p, uint8_t* out, int out_w) {
  const int taps = kTaps > 0 ? kTaps : p.taps;
  for (int r = 0; r < rows; ++r) {
    const uint8_t* src = in + static_cast<size_t>(r) * in_stride;
    uint8_t* dst = out + static_cast<size_t>(r) * out_w * 3;
    for (int j = 0; j < out_w; ++j) {
      const uint8_t* s = src + p.first[j] * 3;
      const int32_t* w = &p.w[static_cast<size_t>(j) * taps];
      int32_t a0 = 1 << (kWeightBits - 1), a1 = a0, a2 = a0;
      for (int k = 0; k < taps; ++k) {
        a0 += s[3 * k] * w[k];
        a1 += s[3 * k + 1] * w[k];
        a2 += s[3 * k + 2] * w[k];
      }
      dst[3 * j] = clip8(a0);
      dst[3 * j + 1] = clip8(a1);
      dst[3 * j + 2] = clip8(a2);
    }
  }
}

void horizontal(const uint8_t* in, int in_stride, int rows, const Pass& p, uint8_t* out, int out_w) {
  switch (p.taps) {  // compile-time tap counts for the common ratios (enlarging, up to 4x shrinking)
    case 3: return horizontal_fixed<3>(in, in_stride, rows, p, out, out_w);
    case 5: return horizontal_fixed<5>(in, in_stride, rows, p, out, out_w);
    case 7: return horizontal_fixed<7>(in, in_stride, rows, p, out, out_w);
    case 9: return horizontal_fixed<9>(in, in_stride, rows, p, out, out_w);
    default: return horizontal_fixed<0>(in, in_stride, rows, p, out, out_w);
  }
}

// Vertical pass for one output row: the loop over the row's bytes is contiguous and vectorises.
void vertical_row(const uint8_t* in, size_t in_stride, const int32_t* w, int taps, int n, int32_t* acc, uint8_t* out) {
  for (int x = 0; x < n; ++x) acc[x] = 1 << (kWeightBits - 1);
  for (int k = 0; k < taps; ++k) {
    const int32_t wk = w[k];
    if (wk == 0) continue;
    const uint8_t* s = in + k * in_stride;
    for (int x = 0; x < n; ++x) acc[x] += s[x] * wk;
  }
  for (int x = 0; x < n; ++x) out[x] = clip8(acc[x]);
}


#if defined(__x86_64__)

// Horizontal pass for 5-tap windows (every shrink ratio up to 2, which after DCT scaling is nearly every
// ImageNet image, and enlarging with zero-padded taps), exact in 32-bit integers like the scalar pass. Each
// 22-bit weight is split as w = wh * 2^11 + wl so that pmaddwd (16-bit products summed in pairs) applies:
// sum p*w = (sum p*wh) << 11 + sum p*wl. Two rows go through one 256-bit register (row r in the low lane,
// r+1 in the high one, same weights); shuffles turn a window's 15 bytes into int16 pairs (R0,R1)(G0,G1)(B0,B1),
// then (R2,R3).., then (R4,0)..; four outputs are packed and stored at once.
constexpr int kSpread = 48;  // int16 weights per output: pairs 01 (hi, lo), 23 (hi, lo), 4 (hi, lo), 8 each

std::vector<int16_t> spread_weights5(const Pass& p, int out_w) {
  std::vector<int16_t> wv(static_cast<size_t>(out_w) * kSpread, 0);
  for (int j = 0; j < out_w; ++j) {
    int16_t* o = &wv[static_cast<size_t>(j) * kSpread];
    const int32_t* w = &p.w[static_cast<size_t>(j) * 5];
    for (int part = 0; part < 2; ++part) {  // 0: the bits above 11, 1: the low 11 bits
      auto split = [&](int32_t v) { return static_cast<int16_t>(part == 0 ? v >> 11 : v & 2047); };
      for (int c = 0; c < 3; ++c) {
        o[part * 8 + 2 * c] = split(w[0]);
        o[part * 8 + 2 * c + 1] = split(w[1]);
        o[16 + part * 8 + 2 * c] = split(w[2]);
        o[16 + part * 8 + 2 * c + 1] = split(w[3]);
        o[32 + part * 8 + 2 * c] = split(w[4]);
      }
    }
  }
  return wv;
}

// One output pixel of rows r (low lane) and r+1 (high lane): 32-bit (R, G, B, 0) per lane, already shifted.
__attribute__((target("avx2"))) inline __m256i horizontal5_two_rows(const uint8_t* s0, const uint8_t* s1,
                                                                    const int16_t* w) {
  const __m256i pairs01 = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1,
                                           0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
  const __m256i pairs23 = _mm256_setr_epi8(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1,
                                           6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);
  const __m256i single4 = _mm256_setr_epi8(12, -1, -1, -1, 13, -1, -1, -1, 14, -1, -1, -1, -1, -1, -1, -1,
                                           12, -1, -1, -1, 13, -1, -1, -1, 14, -1, -1, -1, -1, -1, -1, -1);
#define ALEXNET_WEIGHTS(at) _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (at))))
  const __m256i px = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s0))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(s1)), 1);
  const __m256i a = _mm256_shuffle_epi8(px, pairs01);
  const __m256i b = _mm256_shuffle_epi8(px, pairs23);
  const __m256i c = _mm256_shuffle_epi8(px, single4);
  const __m256i hi = _mm256_add_epi32(
      _mm256_add_epi32(_mm256_madd_epi16(a, ALEXNET_WEIGHTS(0)), _mm256_madd_epi16(b, ALEXNET_WEIGHTS(16))),
      _mm256_madd_epi16(c, ALEXNET_WEIGHTS(32)));
  const __m256i lo = _mm256_add_epi32(
      _mm256_add_epi32(_mm256_madd_epi16(a, ALEXNET_WEIGHTS(8)), _mm256_madd_epi16(b, ALEXNET_WEIGHTS(24))),
      _mm256_madd_epi16(c, ALEXNET_WEIGHTS(40)));
#undef ALEXNET_WEIGHTS
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi, 11), lo),
                                       _mm256_set1_epi32(1 << (kWeightBits - 1)));
  return _mm256_srai_epi32(sum, kWeightBits);
}

void horizontal5_scalar_row(const uint8_t* src, const Pass& p, int j0, uint8_t* dst, int out_w) {
  for (int j = j0; j < out_w; ++j) {
    const uint8_t* s = src + p.first[j] * 3;
    const int32_t* w = &p.w[static_cast<size_t>(j) * 5];
    int32_t a0 = 1 << (kWeightBits - 1), a1 = a0, a2 = a0;
    for (int k = 0; k < 5; ++k) {
      a0 += s[3 * k] * w[k];
      a1 += s[3 * k + 1] * w[k];
      a2 += s[3 * k + 2] * w[k];
    }
    dst[3 * j] = clip8(a0);
    dst[3 * j + 1] = clip8(a1);
    dst[3 * j + 2] = clip8(a2);
  }
}

__attribute__((target("avx2"))) void horizontal5_avx2(const uint8_t* in, int in_stride, int rows, const Pass& p,
                                                      const int16_t* wv, uint8_t* out, int out_w) {
  const __m256i compact = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
                                           0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
  const int vec_w = out_w / 4 * 4;
  int r = 0;
  // The 16-byte loads read one byte past a window: the last row stays scalar so no read leaves the buffer.
  for (; r + 2 < rows; r += 2) {
    const uint8_t* src0 = in + static_cast<size_t>(r) * in_stride;
    const uint8_t* src1 = src0 + in_stride;
    uint8_t* dst0 = out + static_cast<size_t>(r) * out_w * 3;
    uint8_t* dst1 = dst0 + static_cast<size_t>(out_w) * 3;
    for (int j = 0; j < vec_w; j += 4) {
      __m256i v[4];
      for (int q = 0; q < 4; ++q) {
        const int off = p.first[j + q] * 3;
        v[q] = horizontal5_two_rows(src0 + off, src1 + off, wv + static_cast<size_t>(j + q) * kSpread);
      }
      const __m256i bytes = _mm256_shuffle_epi8(
          _mm256_packus_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3])), compact);
      // 12 bytes each (8 + 4): a 16-byte store would spill into the next row, written in this same sweep.
      const __m128i b0 = _mm256_castsi256_si128(bytes), b1 = _mm256_extracti128_si256(bytes, 1);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst0 + 3 * j), b0);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst1 + 3 * j), b1);
      const uint32_t t0 = static_cast<uint32_t>(_mm_extract_epi32(b0, 2));
      const uint32_t t1 = static_cast<uint32_t>(_mm_extract_epi32(b1, 2));
      std::memcpy(dst0 + 3 * j + 8, &t0, 4);
      std::memcpy(dst1 + 3 * j + 8, &t1, 4);
    }
    horizontal5_scalar_row(src0, p, vec_w, dst0, out_w);
    horizontal5_scalar_row(src1, p, vec_w, dst1, out_w);
  }
  for (; r < rows; ++r)
    horizontal5_scalar_row(in + static_cast<size_t>(r) * in_stride, p, 0, out + static_cast<size_t>(r) * out_w * 3, out_w);
}

__attribute__((target("avx2"))) void vertical_row_avx2(const uint8_t* in, size_t in_stride, const int32_t* w, int taps,
                                                       int n, uint8_t* out) {
  // A 5-tap window at ratio 1.5 spans 3 or 4 rows: skipping the zero weights saves a fifth to two fifths.
  // Windows wider than 64 (shrinking by more than 31) take the scalar loop below.
  int nz = 0;
  int nz_k[64];
  if (taps <= 64)
    for (int k = 0; k < taps; ++k)
      if (w[k] != 0) nz_k[nz++] = k;
  int x = 0;
  for (; nz > 0 && x + 32 <= n; x += 32) {
    __m256i a0 = _mm256_set1_epi32(1 << (kWeightBits - 1)), a1 = a0, a2 = a0, a3 = a0;
    for (int t = 0; t < nz; ++t) {
      const int k = nz_k[t];
      const __m256i wk = _mm256_set1_epi32(w[k]);
      const uint8_t* s = in + k * in_stride + x;
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
      a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(lo), wk));
      a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), wk));
      a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(hi), wk));
      a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), wk));
    }
    a0 = _mm256_srai_epi32(a0, kWeightBits);
    a1 = _mm256_srai_epi32(a1, kWeightBits);
    a2 = _mm256_srai_epi32(a2, kWeightBits);
    a3 = _mm256_srai_epi32(a3, kWeightBits);
    // packs/packus work within 128-bit lanes; the permute puts the 32 bytes back in order.
    const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(a0, a1), 0xD8);
    const __m256i w16b = _mm256_permute4x64_epi64(_mm256_packs_epi32(a2, a3), 0xD8);
    const __m256i b8 = _mm256_permute4x64_epi64(_mm256_packus_epi16(w16, w16b), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + x), b8);
  }
  for (; x < n; ++x) {
    int32_t acc = 1 << (kWeightBits - 1);
    for (int k = 0; k < taps; ++k) acc += in[k * in_stride + x] * w[k];
    out[x] = clip8(acc);
  }
}
#endif

}  // namespace

Image resize_shorter_and_center_crop(const Image& in, int side) {
  Image out;
  resize_shorter_and_center_crop_into(in, side, out);
  return out;
}

void resize_shorter_and_center_crop_into(const Image& in, int side, Image& out) {
  ALEXNET_CHECK(side > 0, "rescale side must be positive, got ", side);
  ALEXNET_CHECK(in.width > 0 && in.height > 0 && in.rgb.size() == static_cast<size_t>(in.width) * in.height * 3,
                "rescale of an empty or inconsistent image (", in.width, "x", in.height, ", ", in.rgb.size(),
                " bytes)");
  // Shorter side -> side, the longer one scaled by the same factor (rounded), then the central square
  // at offset floor((long' - side) / 2): what PIL's resize((w', h'), BILINEAR) followed by crop() gives.
  int nw, nh;
  if (in.width <= in.height) {
    nw = side;
    nh = std::max(side, static_cast<int>(std::lround(static_cast<double>(in.height) * side / in.width)));
  } else {
    nh = side;
    nw = std::max(side, static_cast<int>(std::lround(static_cast<double>(in.width) * side / in.height)));
  }
  const int ox = (nw - side) / 2, oy = (nh - side) / 2;
  ALEXNET_CHECK(&in != &out, "rescale cannot work in place");
  out.width = side;
  out.height = side;
  out.rgb.resize(static_cast<size_t>(side) * side * 3);

  // Horizontal pass first (as PIL does, with a uint8 intermediate), over just the input rows that the
  // vertical pass of the kept output rows reads.
  const std::shared_ptr<const Pass> pv_ptr = cached_pass(in.height, nh, oy, side, 0, false);
  const Pass& pv = *pv_ptr;
  const int row0 = pv.first.front();
  const int row1 = pv.first.back() + pv.taps;
  const int rows = row1 - row0;
  thread_local std::vector<uint8_t> tmp;  // reused: fresh pages per image cost as much as the vertical pass
  const uint8_t* mid;
  size_t mid_stride;
  if (nw == in.width) {  // no horizontal resampling: PIL skips the pass, and so do we
    mid = in.rgb.data() + (static_cast<size_t>(row0) * in.width + ox) * 3;
    mid_stride = static_cast<size_t>(in.width) * 3;
  } else {
    tmp.resize(static_cast<size_t>(rows) * side * 3);
    const uint8_t* rows_in = in.rgb.data() + static_cast<size_t>(row0) * in.width * 3;
#if defined(__x86_64__)
    if (have_avx2() && in.width >= 5 && pass_taps(in.width, nw) <= 5) {
      const std::shared_ptr<const Pass> ph = cached_pass(in.width, nw, ox, side, 5, true);
      horizontal5_avx2(rows_in, in.width * 3, rows, *ph, ph->spread.data(), tmp.data(), side);
    } else
#endif
    {
      horizontal(rows_in, in.width * 3, rows, *cached_pass(in.width, nw, ox, side, 0, false), tmp.data(), side);
    }
    mid = tmp.data();
    mid_stride = static_cast<size_t>(side) * 3;
  }
  if (nh == in.height) {
    for (int y = 0; y < side; ++y)
      std::memcpy(&out.rgb[static_cast<size_t>(y) * side * 3], mid + (static_cast<size_t>(oy + y) - row0) * mid_stride,
                  static_cast<size_t>(side) * 3);
    return;
  }
#if defined(__x86_64__)
  if (have_avx2()) {
    for (int y = 0; y < side; ++y)
      vertical_row_avx2(mid + static_cast<size_t>(pv.first[y] - row0) * mid_stride, mid_stride,
                        &pv.w[static_cast<size_t>(y) * pv.taps], pv.taps, side * 3,
                        &out.rgb[static_cast<size_t>(y) * side * 3]);
    return;
  }
#endif
  std::vector<int32_t> acc(static_cast<size_t>(side) * 3);
  for (int y = 0; y < side; ++y)
    vertical_row(mid + static_cast<size_t>(pv.first[y] - row0) * mid_stride, mid_stride,
                 &pv.w[static_cast<size_t>(y) * pv.taps], pv.taps, side * 3, acc.data(),
                 &out.rgb[static_cast<size_t>(y) * side * 3]);
}

}  // namespace alexnet
