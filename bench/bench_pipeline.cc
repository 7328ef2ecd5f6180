// bench_pipeline: single-core img/s of the input pipeline on ImageNet-like JPEGs: TurboJPEG decode alone,
// and the full training transform (decode, rescale/centre crop to 256, random 227 crop, flip, lighting,
// normalise to float), also on prepared 256x256 shard images. bench/pil_pipeline.py is the PIL anchor.
//
// usage: bench_pipeline --generate DIR        write the image sets (jpeg420/, jpeg444/, prepared/) to DIR
//        bench_pipeline --dir DIR [--seconds S] time them; prints "RESULT <set> <mode> <img/s>" lines
#include <turbojpeg.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "data_service/augment.h"
#include "data_service/image.h"

namespace {

using namespace alexnet;
namespace fs = std::filesystem;

constexpr int kImagesPerSet = 48;
constexpr int kSide = 256;
constexpr int kCrop = 227;
// With it, 500x375 q90 4:2:0 files come out near 60 KB (2.5 bits per pixel, usual for photographs at that
// quality) and q96 4:4:4 ones near 190 KB; ImageNet's mean file (~110 KB) lies between the two sets.
constexpr double kTextureAmplitude = 14.0;

// Photograph-like content: smooth colour gradients, a few flat shapes with hard edges, sensor-like noise.
// JPEG sizes then land where ImageNet's do (about 100-200 KB at q90 for 500x375) rather than at the
// extremes of pure noise or flat colour.
std::vector<uint8_t> natural_image(int w, int h, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::normal_distribution<double> noise(0.0, 6.0);
  double fx[3], fy[3], ph[3];
  for (int c = 0; c < 3; ++c) {
    fx[c] = 0.5 + 2.5 * u(gen);
    fy[c] = 0.5 + 2.5 * u(gen);
    ph[c] = 6.28 * u(gen);
  }
  std::vector<double> img(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img[(static_cast<size_t>(y) * w + x) * 3 + c] =
            128 + 90 * std::sin(fx[c] * 6.28 * x / w + ph[c]) * std::cos(fy[c] * 6.28 * y / h);
  for (int s = 0; s < 12; ++s) {
    const double cx = u(gen) * w, cy = u(gen) * h, r = 5 + u(gen) * std::min(w, h) / 4.0;
    const double col[3] = {255 * u(gen), 255 * u(gen), 255 * u(gen)};
    const bool disc = s % 2 == 0;
    for (int y = std::max(0, int(cy - r)); y < std::min(h, int(cy + r)); ++y)
      for (int x = std::max(0, int(cx - r)); x < std::min(w, int(cx + r)); ++x) {
        if (disc && (x - cx) * (x - cx) + (y - cy) * (y - cy) > r * r) continue;
        for (int c = 0; c < 3; ++c) img[(static_cast<size_t>(y) * w + x) * 3 + c] = col[c] + 20 * std::sin(0.05 * (x + y));
      }
  }
  // Texture at a 4-pixel scale (foliage, fur, fabric), bilinearly interpolated from a random grid.
  const int gw = w / 4 + 2, gh = h / 4 + 2;
  std::vector<double> grid(static_cast<size_t>(gw) * gh * 3);
  std::normal_distribution<double> tex(0.0, kTextureAmplitude);
  for (double& g : grid) g = tex(gen);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double fx = x / 4.0, fy = y / 4.0;
      const int ix = static_cast<int>(fx), iy = static_cast<int>(fy);
      const double ax = fx - ix, ay = fy - iy;
      for (int c = 0; c < 3; ++c) {
        auto g = [&](int gx, int gy) { return grid[(static_cast<size_t>(gy) * gw + gx) * 3 + c]; };
        img[(static_cast<size_t>(y) * w + x) * 3 + c] += (1 - ay) * ((1 - ax) * g(ix, iy) + ax * g(ix + 1, iy)) +
                                                         ay * ((1 - ax) * g(ix, iy + 1) + ax * g(ix + 1, iy + 1));
      }
    }
  std::vector<uint8_t> out(img.size());
  for (size_t i = 0; i < img.size(); ++i) out[i] = static_cast<uint8_t>(std::clamp(img[i] + noise(gen), 0.0, 255.0));
  return out;
}

std::vector<uint8_t> compress(const std::vector<uint8_t>& rgb, int w, int h, int quality, int subsamp) {
  tjhandle tj = tjInitCompress();
  ALEXNET_CHECK(tj != nullptr, "tjInitCompress failed");
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &jpeg, &size, subsamp, quality, 0);
  ALEXNET_CHECK(rc == 0, "tjCompress2: ", tjGetErrorStr2(tj));
  std::vector<uint8_t> out(jpeg, jpeg + size);
  tjFree(jpeg);
  tjDestroy(tj);
  return out;
}

void write_file(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  ALEXNET_CHECK(f.good(), "cannot write ", p.string());
}

void generate(const fs::path& dir) {
  // "About 500x375": ImageNet's typical landscape, portrait and near-square shapes.
  const int shapes[][2] = {{500, 375}, {375, 500}, {500, 333}, {500, 400}, {450, 338}, {500, 375}};
  for (const char* sub : {"jpeg420", "jpeg444", "prepared"}) fs::create_directories(dir / sub);
  size_t bytes420 = 0, bytes444 = 0, bytes_prep = 0;
  for (int i = 0; i < kImagesPerSet; ++i) {
    const int w = shapes[i % 6][0], h = shapes[i % 6][1];
    const std::vector<uint8_t> rgb = natural_image(w, h, 1000 + i);
    char name[32];
    std::snprintf(name, sizeof(name), "img_%03d.JPEG", i);
    const auto a = compress(rgb, w, h, 90, TJSAMP_420);
    const auto b = compress(rgb, w, h, 96, TJSAMP_444);
    write_file(dir / "jpeg420" / name, a);
    write_file(dir / "jpeg444" / name, b);
    // A prepared shard image: the rescaled, centre-cropped 256x256 picture stored at q95 4:4:4.
    Image im{w, h, rgb};
    const Image small = resize_shorter_and_center_crop(im, kSide);
    const auto c = compress(small.rgb, kSide, kSide, 95, TJSAMP_444);
    write_file(dir / "prepared" / name, c);
    bytes420 += a.size();
    bytes444 += b.size();
    bytes_prep += c.size();
  }
  std::printf("wrote %d images per set to %s: mean sizes q90 4:2:0 %.0f KB, q96 4:4:4 %.0f KB, "
              "prepared 256x256 q95 4:4:4 %.0f KB\n",
              kImagesPerSet, dir.c_str(), bytes420 / 1024.0 / kImagesPerSet, bytes444 / 1024.0 / kImagesPerSet,
              bytes_prep / 1024.0 / kImagesPerSet);
}

std::vector<std::vector<uint8_t>> load_set(const fs::path& dir) {
  std::vector<fs::path> paths;
  for (const auto& e : fs::directory_iterator(dir)) paths.push_back(e.path());
  std::sort(paths.begin(), paths.end());
  ALEXNET_CHECK(!paths.empty(), "no images in ", dir.string(), " (run with --generate first)");
  std::vector<std::vector<uint8_t>> files;
  for (const auto& p : paths) {
    std::ifstream f(p, std::ios::binary);
    files.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return files;
}

// Plausible dataset statistics: a smooth mean image and ImageNet's published RGB PCA (Krizhevsky et al.),
// eigenvalues rescaled to the 0..255 pixel scale.
ImageStats bench_stats() {
  ImageStats s;
  s.side = kSide;
  s.mean_image.resize(3 * kSide * kSide);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < kSide; ++y)
      for (int x = 0; x < kSide; ++x)
        s.mean_image[(c * kSide + y) * kSide + x] = static_cast<float>(110 + 10 * c + 8 * std::sin(0.02 * (x + y)));
  s.channel_mean = {123.7, 116.3, 103.5};
  s.eigenvalues = {0.2175 * 255, 0.0188 * 255, 0.0045 * 255};
  const double v[9] = {-0.5675, 0.7192, 0.4009, -0.5808, -0.0045, -0.8140, -0.5836, -0.6948, 0.4203};
  std::copy(v, v + 9, s.eigenvectors.begin());
  return s;
}

// Runs `one(i)` over the set repeatedly for at least `seconds`; returns images per second.
template <class F>
double rate(size_t n, double seconds, F&& one) {
  using clock = std::chrono::steady_clock;
  for (size_t i = 0; i < n; ++i) one(i);  // warm-up: page in, allocator, decoder state
  const auto start = clock::now();
  size_t done = 0;
  double elapsed = 0;
  do {
    for (size_t i = 0; i < n; ++i) one(i);
    done += n;
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
  } while (elapsed < seconds);
  return done / elapsed;
}

volatile float g_sink;  // keeps the normalised output observable so nothing is optimised away

void run(const fs::path& dir, double seconds) {
  const ImageStats stats = bench_stats();
  std::vector<uint8_t> crop(3 * kCrop * kCrop);
  std::vector<float> input(3 * kCrop * kCrop);
  Image decoded_buf, resized;  // one per stage, reused, as a service worker thread holds them
  int64_t sample = 0;
  for (const char* set : {"jpeg420", "jpeg444", "prepared"}) {
    const auto files = load_set(dir / set);
    const bool prepared = std::string(set) == "prepared";
    const double decode = rate(files.size(), seconds, [&](size_t i) {
      const Status st = decode_image_into(files[i].data(), files[i].size(), set, 0, decoded_buf);
      ALEXNET_CHECK(st.ok(), st.message());
      g_sink = decoded_buf.rgb[0];
    });
    std::printf("RESULT %s decode %.1f\n", set, decode);
    const double full = rate(files.size(), seconds, [&](size_t i) {
      // What the service and worker do per training image.
      const Status st = decode_image_into(files[i].data(), files[i].size(), set, prepared ? 0 : kSide, decoded_buf);
      ALEXNET_CHECK(st.ok(), st.message());
      const Image* img = &decoded_buf;
      if (!prepared) {
        resize_shorter_and_center_crop_into(decoded_buf, kSide, resized);
        img = &resized;
      }
      const SampleAugment a = draw_train_augment(7, 0, sample++, kSide, kCrop, 0.1, stats);
      extract_crop(img->rgb.data(), kSide, a, kCrop, crop.data());
      normalize_crop(crop.data(), kCrop, a, stats, true, input.data());
      g_sink = input[i % input.size()];
    });
    std::printf("RESULT %s full %.1f\n", set, full);
    // Where the time goes: each stage alone, on images decoded beforehand.
    std::vector<Image> decoded;
    for (const auto& f : files) decoded.push_back(decode_image(f.data(), f.size(), set, prepared ? 0 : kSide).value());
    if (!prepared) {
      const double resize = rate(files.size(), seconds / 2, [&](size_t i) {
        resize_shorter_and_center_crop_into(decoded[i], kSide, resized);
        g_sink = resized.rgb[0];
      });
      std::printf("STAGE %s rescale %.1f\n", set, resize);
    }
    const Image square = resize_shorter_and_center_crop(decoded[0], kSide);
    const double augment = rate(files.size(), seconds / 2, [&](size_t i) {
      const SampleAugment a = draw_train_augment(7, 0, sample++, kSide, kCrop, 0.1, stats);
      extract_crop(square.rgb.data(), kSide, a, kCrop, crop.data());
      normalize_crop(crop.data(), kCrop, a, stats, true, input.data());
      g_sink = input[i % input.size()];
    });
    std::printf("STAGE %s crop_flip_lighting_normalise %.1f\n", set, augment);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string gen_dir, dir;
    double seconds = 2.0;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      ALEXNET_CHECK(i + 1 < argc, "option ", arg, " needs a value (usage: --generate DIR | --dir DIR [--seconds S])");
      if (arg == "--generate") gen_dir = argv[++i];
      else if (arg == "--dir") dir = argv[++i];
      else if (arg == "--seconds") seconds = std::atof(argv[++i]);
      else ALEXNET_FAIL("unknown option ", arg, " (usage: --generate DIR | --dir DIR [--seconds S])");
    }
    ALEXNET_CHECK(!gen_dir.empty() || !dir.empty(), "usage: bench_pipeline --generate DIR | --dir DIR [--seconds S]");
    if (!gen_dir.empty()) generate(gen_dir);
    if (!dir.empty()) run(dir, seconds);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_pipeline: %s\n", e.what());
    return 1;
  }
}
