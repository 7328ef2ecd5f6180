// Decoding and rescaling against PIL (fixtures and references written at test time by image_fixtures.py),
// DCT scaling choice, and a Status naming the file for every kind of bad input.
#include <gtest/gtest.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "data_service/image.h"

namespace alexnet {
namespace {

namespace fs = std::filesystem;

// libjpeg-turbo's IDCT and upsampling are deterministic, but a PIL built against another libjpeg (or with
// different SIMD) may round differently; a JPEG may differ from PIL's by at most this much per value.
constexpr int kJpegMaxDiff = 2;

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const uint8_t* data, size_t n) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
}

struct Check {
  std::string kind, file, ref;
  int w = 0, h = 0, param = 0;
};

class ImageFixtures : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/alexnet_test_image_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    write_ycck(dir_ / "ycck.jpg");
    const std::string script = std::string(ALEXNET_SOURCE_DIR) + "/tests/data/image_fixtures.py";
    const std::string cmd = "/usr/bin/python3 " + script + " " + dir_.string() + " " + (dir_ / "ycck.jpg").string();
    ASSERT_EQ(std::system(cmd.c_str()), 0) << "fixture script failed: " << cmd;
    std::ifstream m(dir_ / "manifest.txt");
    std::string line;
    while (std::getline(m, line)) {
      std::istringstream is(line);
      Check c;
      is >> c.kind >> c.file >> c.ref;
      if (c.kind == "decode") is >> c.w >> c.h >> c.param;
      else is >> c.param;
      checks_.push_back(c);
    }
    ASSERT_GT(checks_.size(), 20u);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A CMYK picture compressed by TurboJPEG: libjpeg turns CMYK input into a YCCK JPEG (Adobe transform 2).
  static void write_ycck(const fs::path& p) {
    const int w = 96, h = 72;
    std::vector<uint8_t> cmyk(w * h * 4);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        uint8_t* px = &cmyk[(y * w + x) * 4];
        px[0] = static_cast<uint8_t>(x * 255 / w);
        px[1] = static_cast<uint8_t>(y * 255 / h);
        px[2] = static_cast<uint8_t>(((x / 12 + y / 12) % 2) ? 220 : 40);
        px[3] = static_cast<uint8_t>(128 + 100 * std::sin(x * 0.1));
      }
    tjhandle tj = tjInitCompress();
    unsigned char* jpeg = nullptr;
    unsigned long size = 0;
    ASSERT_EQ(tjCompress2(tj, cmyk.data(), w, 0, h, TJPF_CMYK, &jpeg, &size, TJSAMP_444, 95, 0), 0)
        << tjGetErrorStr2(tj);
    write_bytes(p, jpeg, size);
    tjFree(jpeg);
    tjDestroy(tj);
  }

  static const Check& find(const std::string& kind, const std::string& file, int param) {
    for (const Check& c : checks_)
      if (c.kind == kind && c.file == file && c.param == param) return c;
    ADD_FAILURE() << "no fixture " << kind << " " << file << " " << param;
    return checks_.front();
  }

  struct Diff {
    int max = 0;
    double mean = 0;
  };
  static Diff diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    Diff d;
    EXPECT_EQ(a.size(), b.size());
    const size_t n = std::min(a.size(), b.size());
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
      const int v = std::abs(int(a[i]) - int(b[i]));
      d.max = std::max(d.max, v);
      sum += v;
    }
    d.mean = n ? sum / n : 0;
    return d;
  }

  static inline fs::path dir_;
  static inline std::vector<Check> checks_;
};

TEST_F(ImageFixtures, DecodeMatchesPil) {
  int decoded = 0;
  for (const Check& c : checks_) {
    if (c.kind != "decode") continue;
    SCOPED_TRACE(c.file + " min_short_side " + std::to_string(c.param));
    StatusOr<Image> im = decode_image_file((dir_ / c.file).string(), c.param);
    ASSERT_TRUE(im.ok()) << im.status().message();
    EXPECT_EQ(im.value().width, c.w);
    EXPECT_EQ(im.value().height, c.h);
    const Diff d = diff(im.value().rgb, read_bytes(dir_ / c.ref));
    const bool png = sniff_image(read_bytes(dir_ / c.file).data(), 8) == ImageKind::kPng;
    EXPECT_LE(d.max, png ? 0 : kJpegMaxDiff) << "mean abs diff " << d.mean;
    EXPECT_LE(d.mean, png ? 0.0 : 0.05);
    ++decoded;
  }
  EXPECT_GE(decoded, 19);
}

TEST_F(ImageFixtures, DecodeKindsCovered) {
  // The fixture set must keep every kind the service meets in ImageNet.
  for (const char* f : {"rgb420.jpg", "rgb444.jpg", "gray.jpg", "cmyk_adobe.jpg", "ycck.jpg", "png_rgb.JPEG",
                        "png_palette.JPEG", "png_gray.JPEG", "png_gray16.JPEG", "png_rgb16.JPEG", "png_rgba.JPEG"})
    find("decode", f, 0);
  int w, h, subsamp, cs;
  tjhandle tj = tjInitDecompress();
  std::map<std::string, int> expect = {{"cmyk_adobe.jpg", TJCS_CMYK}, {"ycck.jpg", TJCS_YCCK},
                                       {"gray.jpg", TJCS_GRAY}, {"rgb420.jpg", TJCS_YCbCr}};
  for (const auto& [f, want] : expect) {
    std::vector<uint8_t> b = read_bytes(dir_ / f);
    ASSERT_EQ(tjDecompressHeader3(tj, b.data(), b.size(), &w, &h, &subsamp, &cs), 0) << f;
    EXPECT_EQ(cs, want) << f;
  }
  tjDestroy(tj);
}

TEST_F(ImageFixtures, DctScalingPicksSmallestSufficientFactor) {
  struct Case {
    const char* file;
    int min_side, w, h;
  };
  // big.jpg is 1100x700, huge.jpg 2100x2100, typical.jpg 500x375; scaled sizes round up (TJSCALED).
  for (const Case& c : {Case{"big.jpg", 0, 1100, 700}, Case{"big.jpg", 256, 550, 350}, Case{"big.jpg", 350, 550, 350},
                        Case{"big.jpg", 351, 1100, 700}, Case{"big.jpg", 100, 275, 175}, Case{"big.jpg", 88, 138, 88},
                        Case{"big.jpg", 10, 138, 88}, Case{"huge.jpg", 256, 263, 263}, Case{"huge.jpg", 264, 525, 525},
                        Case{"typical.jpg", 256, 500, 375}, Case{"typical.jpg", 187, 250, 188}}) {
    StatusOr<Image> im = decode_image_file((dir_ / c.file).string(), c.min_side);
    ASSERT_TRUE(im.ok()) << im.status().message();
    EXPECT_EQ(im.value().width, c.w) << c.file << " min " << c.min_side;
    EXPECT_EQ(im.value().height, c.h) << c.file << " min " << c.min_side;
  }
}

TEST_F(ImageFixtures, RescaleMatchesPilBilinear) {
  // Same filter, weights and fixed-point rounding as PIL's resize(..., Image.BILINEAR): bit-exact.
  int n = 0;
  for (const Check& c : checks_) {
    if (c.kind != "resize") continue;
    SCOPED_TRACE(c.file);
    StatusOr<Image> im = decode_image_file((dir_ / c.file).string());
    ASSERT_TRUE(im.ok()) << im.status().message();
    Image out = resize_shorter_and_center_crop(im.value(), c.param);
    EXPECT_EQ(out.width, c.param);
    EXPECT_EQ(out.height, c.param);
    const Diff d = diff(out.rgb, read_bytes(dir_ / c.ref));
    EXPECT_EQ(d.max, 0) << "mean abs diff " << d.mean;
    ++n;
  }
  EXPECT_GE(n, 8);
}

TEST_F(ImageFixtures, ReusedBuffersGiveTheSameResults) {
  // The *_into forms keep a buffer across images of different sizes and kinds; results must not depend on
  // what the buffer held before.
  Image buf, small;
  for (const char* f : {"big.jpg", "rgb420.jpg", "png_rgb.JPEG", "cmyk_adobe.jpg", "typical.jpg", "gray.jpg"}) {
    const std::vector<uint8_t> b = read_bytes(dir_ / f);
    ASSERT_TRUE(decode_image_into(b.data(), b.size(), f, 256, buf).ok()) << f;
    StatusOr<Image> fresh = decode_image(b.data(), b.size(), f, 256);
    ASSERT_TRUE(fresh.ok()) << f;
    EXPECT_EQ(buf.width, fresh.value().width) << f;
    EXPECT_EQ(buf.height, fresh.value().height) << f;
    EXPECT_EQ(buf.rgb, fresh.value().rgb) << f;
    resize_shorter_and_center_crop_into(buf, 256, small);
    EXPECT_EQ(small.rgb, resize_shorter_and_center_crop(fresh.value(), 256).rgb) << f;
  }
}

TEST_F(ImageFixtures, JpegWithJunkBeforeEndMarkerIsAccepted) {
  // Data between the last scan and EOI only draws a libjpeg warning; the picture is complete.
  std::vector<uint8_t> b = read_bytes(dir_ / "rgb420.jpg");
  ASSERT_GE(b.size(), 4u);
  ASSERT_EQ(b[b.size() - 2], 0xFF);
  ASSERT_EQ(b[b.size() - 1], 0xD9);
  std::vector<uint8_t> junk(b.begin(), b.end() - 2);
  for (int i = 0; i < 240; ++i) junk.push_back(static_cast<uint8_t>(i % 7));
  junk.push_back(0xFF);
  junk.push_back(0xD9);
  StatusOr<Image> clean = decode_image(b.data(), b.size(), "clean.jpg");
  StatusOr<Image> dirty = decode_image(junk.data(), junk.size(), "junk.jpg");
  ASSERT_TRUE(clean.ok()) << clean.status().message();
  ASSERT_TRUE(dirty.ok()) << dirty.status().message();
  EXPECT_EQ(clean.value().rgb, dirty.value().rgb);
}

TEST_F(ImageFixtures, BadInputsAreStatusesNamingTheFile) {
  std::mt19937 gen(7);
  std::vector<uint8_t> random(4096);
  for (auto& v : random) v = static_cast<uint8_t>(gen());
  random[0] = 0x12;
  const std::vector<uint8_t> jpeg = read_bytes(dir_ / "rgb420.jpg");
  const std::vector<uint8_t> png = read_bytes(dir_ / "png_rgb.JPEG");
  std::vector<uint8_t> soi_random = random;
  soi_random[0] = 0xFF; soi_random[1] = 0xD8; soi_random[2] = 0xFF; soi_random[3] = 0xE0;
  std::vector<uint8_t> png_bad_crc = png;
  png_bad_crc[png.size() / 2] ^= 0x5A;  // inside IDAT: the chunk CRC no longer matches
  const std::string text = "n01440764/n01440764_10026.JPEG 0\nthis is a text file, not an image\n";

  struct Case {
    std::string file;
    std::vector<uint8_t> bytes;
    std::string expect;  // a phrase the message must contain
  };
  std::vector<Case> cases = {
      {"empty.JPEG", {}, "empty"},
      {"truncated.JPEG", std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + jpeg.size() * 6 / 10), "truncated"},
      {"header_only.JPEG", std::vector<uint8_t>(jpeg.begin(), jpeg.begin() + 200), "JPEG"},
      {"truncated_png.JPEG", std::vector<uint8_t>(png.begin(), png.begin() + png.size() * 6 / 10), "PNG"},
      {"png_bad_crc.JPEG", png_bad_crc, "PNG"},
      {"random.JPEG", random, "not a JPEG or PNG"},
      {"soi_then_random.JPEG", soi_random, "JPEG"},
      {"text.JPEG", std::vector<uint8_t>(text.begin(), text.end()), "not a JPEG or PNG"},
  };
  for (const Case& c : cases) {
    const fs::path p = dir_ / c.file;
    write_bytes(p, c.bytes.data(), c.bytes.size());
    StatusOr<Image> im = decode_image_file(p.string(), 256);
    ASSERT_FALSE(im.ok()) << c.file;
    EXPECT_NE(im.status().message().find(p.string()), std::string::npos) << im.status().message();
    EXPECT_NE(im.status().message().find(c.expect), std::string::npos) << im.status().message();
    // The in-memory entry point names what it was given.
    StatusOr<Image> mem = decode_image(c.bytes.data(), c.bytes.size(), "shard-7/record-12");
    ASSERT_FALSE(mem.ok()) << c.file;
    EXPECT_NE(mem.status().message().find("shard-7/record-12"), std::string::npos) << mem.status().message();
    // A failure must not poison this thread's decoder: the next good file decodes.
    StatusOr<Image> good = decode_image(jpeg.data(), jpeg.size(), "good-after-" + c.file, 256);
    EXPECT_TRUE(good.ok()) << "after " << c.file << ": " << good.status().message();
  }
  const std::string missing = (dir_ / "no_such_file.JPEG").string();
  StatusOr<Image> im = decode_image_file(missing);
  ASSERT_FALSE(im.ok());
  EXPECT_NE(im.status().message().find(missing), std::string::npos);
  EXPECT_NE(im.status().message().find("No such file"), std::string::npos) << im.status().message();
  StatusOr<Image> d = decode_image_file(dir_.string());  // a folder: opens, but cannot be read
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find(dir_.string()), std::string::npos) << d.status().message();
}

TEST(Image, SniffUsesMagicBytesOnly) {
  const uint8_t jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0};
  const uint8_t png[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a'};
  EXPECT_EQ(sniff_image(jpeg, sizeof(jpeg)), ImageKind::kJpeg);
  EXPECT_EQ(sniff_image(png, sizeof(png)), ImageKind::kPng);
  EXPECT_EQ(sniff_image(png, 7), ImageKind::kUnknown);
  EXPECT_EQ(sniff_image(gif, sizeof(gif)), ImageKind::kUnknown);
  EXPECT_EQ(sniff_image(jpeg, 2), ImageKind::kUnknown);
}

TEST(Image, RescaleOfConstantImageIsConstant) {
  // A flat image stays flat at any ratio: the weights of every output sum to one.
  for (auto [w, h] : {std::pair{500, 375}, std::pair{64, 900}, std::pair{3000, 257}, std::pair{1, 1}}) {
    Image in;
    in.width = w;
    in.height = h;
    in.rgb.resize(static_cast<size_t>(w) * h * 3);
    for (size_t i = 0; i < in.rgb.size(); ++i) in.rgb[i] = static_cast<uint8_t>(i % 3 == 0 ? 7 : (i % 3 == 1 ? 128 : 251));
    Image out = resize_shorter_and_center_crop(in, 256);
    ASSERT_EQ(out.rgb.size(), 256u * 256 * 3);
    for (size_t i = 0; i < out.rgb.size(); ++i)
      ASSERT_EQ(out.rgb[i], in.rgb[i % 3]) << w << "x" << h << " at " << i;
  }
}

}  // namespace
}  // namespace alexnet
