// `alexnet-tool synth`: renders each class as a shape, colours and a background texture of its own, with
// per-image position, scale, rotation, lighting and noise, and stores it the way ImageNet does (JPEG of
// varied sizes, some grayscale, one CMYK, one PNG named .JPEG).
#include "data_service/synth.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"
#include "data_service/image.h"
#include "data_service/jpeg_encode.h"

namespace alexnet {
namespace fs = std::filesystem;
namespace {

constexpr const char* kIncomplete = ".synth-incomplete";
constexpr const char* kComplete = ".synth-complete";

// Streams of kSynth draws: per-image parameters, per-pixel noise, the val class order, the special files,
// the class-id order of a flat val's ground truth.
enum Stream : uint32_t { kParams = 0, kNoise = 1, kValOrder = 2, kSpecial = 3, kSynsetOrder = 4 };

// Sizes around ImageNet's (most images are 500 wide; a few are small or large), with weights.
struct SizeChoice {
  int w, h, weight;
};
constexpr SizeChoice kSizes[] = {
    {500, 375, 30}, {375, 500, 14}, {500, 333, 14}, {333, 500, 6}, {500, 500, 8}, {500, 400, 5},
    {400, 300, 5},  {320, 240, 4},  {200, 150, 3},  {640, 480, 5}, {800, 600, 3}, {500, 281, 2}, {1024, 768, 1}};

enum class Kind { kRgb, kGray, kCmyk, kPng };

struct Job {
  std::string path;  // relative to the root
  int label;
  uint64_t what;     // the image's RNG address
  Kind kind;
};

struct Look {  // what makes class c recognisable
  int shape;
  std::array<float, 3> fg, bg;
  float stripe_angle, stripe_cycles, checker;
};

std::array<float, 3> hsv(float h, float s, float v) {
  const float i = std::floor(h * 6), f = h * 6 - i;
  const float p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  switch (static_cast<int>(i) % 6) {
    case 0: return {v, t, p};
    case 1: return {q, v, p};
    case 2: return {p, v, t};
    case 3: return {p, q, v};
    case 4: return {t, p, v};
    default: return {v, p, q};
  }
}

Look class_look(int c) {
  Look l;
  l.shape = c % 6;
  // Golden-ratio hue steps keep neighbouring classes far apart in colour.
  const float hue = std::fmod(0.1f + 0.6180339887f * static_cast<float>(c), 1.0f);
  l.fg = hsv(hue, 0.85f, 0.95f);
  l.bg = hsv(std::fmod(hue + 0.5f + 0.13f * static_cast<float>((c / 6) % 3), 1.0f), 0.35f, 0.55f);
  l.stripe_angle = static_cast<float>((c * 47) % 180) * 3.14159265f / 180.0f;
  l.stripe_cycles = 4.0f + static_cast<float>((c * 7) % 5) * 3.0f;
  l.checker = 2.0f + static_cast<float>((c / 3) % 4);
  return l;
}

bool inside(int shape, float px, float py) {
  switch (shape) {
    case 0: return px * px + py * py <= 1.0f;
    case 1: return std::max(std::fabs(px), std::fabs(py)) <= 0.8f;
    case 2: return py < 0.7f && py > 2.0f * std::fabs(px) - 1.0f;
    case 3: { const float r2 = px * px + py * py; return r2 <= 1.0f && r2 >= 0.36f; }
    case 4: return (std::fabs(px) < 0.3f && std::fabs(py) < 1.0f) || (std::fabs(py) < 0.3f && std::fabs(px) < 1.0f);
    default: return std::fabs(px) + std::fabs(py) <= 1.0f;
  }
}

// Renders one picture (interleaved RGB). Every random choice is a counter-based draw addressed by the image.
Image render(const Job& job, uint64_t seed) {
  const CounterRng r(make_key(seed, RngPurpose::kSynth, kParams), job.what);
  int total = 0;
  for (const SizeChoice& s : kSizes) total += s.weight;
  int pick = static_cast<int>(r.bits(0) % static_cast<uint32_t>(total)), si = 0;
  while (pick >= kSizes[si].weight) pick -= kSizes[si++].weight;
  Image im;
  im.width = kSizes[si].w;
  im.height = kSizes[si].h;
  im.rgb.resize(static_cast<size_t>(im.width) * im.height * 3);

  const Look look = class_look(job.label);
  const float shorter = static_cast<float>(std::min(im.width, im.height));
  const float cx = im.width * (0.35f + 0.3f * r.uniform(1)), cy = im.height * (0.35f + 0.3f * r.uniform(2));
  const float radius = shorter * (0.18f + 0.17f * r.uniform(3));
  const float rot = 6.2831853f * r.uniform(4);
  const float cr = std::cos(rot) / radius, sr = std::sin(rot) / radius;
  const float angle = look.stripe_angle + (r.uniform(5) - 0.5f) * 0.4f;
  const float freq = look.stripe_cycles * (0.85f + 0.3f * r.uniform(6)) / shorter;
  const float ca = std::cos(angle) * freq, sa = std::sin(angle) * freq, phase = r.uniform(7);
  const float gain = 0.8f + 0.35f * r.uniform(8);
  std::array<float, 3> tint;
  for (int c = 0; c < 3; ++c) tint[c] = 255.0f * gain * (0.9f + 0.2f * r.uniform(9 + c));
  const float noise = 6.0f + 8.0f * r.uniform(12);

  constexpr int kLut = 1024;  // sin() per pixel would dominate the rendering time
  static const std::array<float, kLut> sine = [] {
    std::array<float, kLut> t{};
    for (int i = 0; i < kLut; ++i) t[i] = std::sin(6.2831853f * static_cast<float>(i) / kLut);
    return t;
  }();
  const CounterRng nr(make_key(seed, RngPurpose::kSynth, kNoise), job.what);
  const float checker = look.checker;
  uint32_t words[4] = {0, 0, 0, 0};
  for (int y = 0; y < im.height; ++y) {
    for (int x = 0; x < im.width; ++x) {
      const uint64_t p = static_cast<uint64_t>(y) * im.width + x;
      if ((p & 3) == 0) {
        const Philox4 b = nr.block(p >> 2);
        for (int k = 0; k < 4; ++k) words[k] = b.v[k];
      }
      const uint32_t w = words[p & 3];
      const float dx = static_cast<float>(x) - cx, dy = static_cast<float>(y) - cy;
      const float px = dx * cr + dy * sr, py = -dx * sr + dy * cr;
      float base[3];
      if (inside(look.shape, px, py)) {
        const int cell = static_cast<int>(std::floor((px + 2.0f) * checker)) + static_cast<int>(std::floor((py + 2.0f) * checker));
        const float shade = (cell & 1) ? 1.0f : 0.78f;
        for (int c = 0; c < 3; ++c) base[c] = look.fg[c] * shade;
      } else {
        const float t = phase + static_cast<float>(x) * ca + static_cast<float>(y) * sa;
        const float s = sine[static_cast<uint32_t>(static_cast<int32_t>(std::floor(t * kLut))) & (kLut - 1)];
        for (int c = 0; c < 3; ++c) base[c] = look.bg[c] * (1.0f + 0.4f * s);
      }
      uint8_t* out = &im.rgb[p * 3];
      for (int c = 0; c < 3; ++c) {
        const float n = (static_cast<float>((w >> (8 * c)) & 0xFF) / 255.0f - 0.5f) * 2.0f * noise;
        out[c] = static_cast<uint8_t>(std::clamp(base[c] * tint[c] + n, 0.0f, 255.0f) + 0.5f);
      }
    }
  }
  return im;
}

std::vector<uint8_t> encode(const Job& job, const Image& im, uint64_t seed) {
  const CounterRng r(make_key(seed, RngPurpose::kSynth, kParams), job.what);
  const int quality = 85 + static_cast<int>(r.bits(13) % 11);
  const size_t pixels = static_cast<size_t>(im.width) * im.height;
  switch (job.kind) {
    case Kind::kPng: return encode_png(im);
    case Kind::kGray: {
      std::vector<uint8_t> gray(pixels);
      for (size_t i = 0; i < pixels; ++i)
        gray[i] = static_cast<uint8_t>((299 * im.rgb[3 * i] + 587 * im.rgb[3 * i + 1] + 114 * im.rgb[3 * i + 2] + 500) / 1000);
      return encode_jpeg_gray(gray.data(), im.width, im.height, quality);
    }
    case Kind::kCmyk: {
      // Adobe-inverted CMYK: stored = 255 - ink. With K' = max(R,G,B) (= 255 - K), the decoders' rule
      // R = K' * (1 - C/255) gives stored C' = 255 - C = 255 * R / K'.
      std::vector<uint8_t> cmyk(pixels * 4);
      for (size_t i = 0; i < pixels; ++i) {
        const int k = std::max({im.rgb[3 * i], im.rgb[3 * i + 1], im.rgb[3 * i + 2]});
        for (int c = 0; c < 3; ++c) cmyk[4 * i + c] = k == 0 ? 0 : static_cast<uint8_t>((255 * im.rgb[3 * i + c] + k / 2) / k);
        cmyk[4 * i + 3] = static_cast<uint8_t>(k);
      }
      return encode_jpeg_cmyk(cmyk.data(), im.width, im.height, quality);
    }
    case Kind::kRgb: break;
  }
  return encode_jpeg(im, quality, r.uniform(14) >= 0.1f);  // one in ten 4:4:4, as some cameras write
}

std::string options_text(const SynthOptions& o) {
  std::ostringstream s;
  s << "classes " << o.classes << "\ntrain_per_class " << o.train_per_class << "\nval_per_class "
    << o.val_per_class << "\nseed " << o.seed << "\nflat_val " << (o.flat_val ? 1 : 0) << "\n";
  // Flat-val outputs from before the ground truth held seeded-order ids are replaced on the next run.
  if (o.flat_val) s << "val_ground_truth ids+synsets\n";
  return s.str();
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::FILE* f = std::fopen(p.c_str(), "wb");
  ALEXNET_CHECK(f != nullptr, p.string(), ": cannot create file");
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  ALEXNET_CHECK(std::fclose(f) == 0 && ok, p.string(), ": write failed (disk full?)");
}

void write_text(const fs::path& p, const std::string& text) { write_bytes(p, std::vector<uint8_t>(text.begin(), text.end())); }

// Decides whether `out` may be (re)written: absent, empty, or a synth folder of ours.
bool prepare_folder(const fs::path& out, const std::string& want) {
  std::error_code ec;
  if (!fs::exists(out, ec)) {
    fs::create_directories(out, ec);
    ALEXNET_CHECK(!ec, out.string(), ": cannot create folder: ", ec.message());
    return false;
  }
  ALEXNET_CHECK(fs::is_directory(out, ec), out.string(), ": exists and is not a folder");
  const bool complete = fs::exists(out / kComplete), incomplete = fs::exists(out / kIncomplete);
  if (complete && !incomplete && read_text(out / kComplete) == want) return true;
  if (!complete && !incomplete) {
    ALEXNET_CHECK(fs::is_empty(out, ec), out.string(),
                  ": folder is not empty and is not a synthesized dataset; refusing to write into it");
    return false;
  }
  // An earlier synth output (interrupted, or made with other options): replace it, together with a
  // default prepared folder computed from it.
  for (const char* name : {"train", "val", ".prepared", kValGroundTruthName, kValSynsetsName, kComplete})
    fs::remove_all(out / name, ec);
  return false;
}

}  // namespace

std::string synth_wnid(int c) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "n%08d", 1000000 + 7919 * c);
  return buf;
}

SynthSummary synthesize_dataset(const SynthOptions& o) {
  ALEXNET_CHECK(o.classes >= 1 && o.classes <= 1000, "synth: --classes must be in 1..1000, got ", o.classes);
  ALEXNET_CHECK(o.train_per_class >= 1, "synth: --train-per-class must be >= 1, got ", o.train_per_class);
  ALEXNET_CHECK(o.val_per_class >= 0, "synth: --val-per-class must be >= 0, got ", o.val_per_class);
  ALEXNET_CHECK(!o.out.empty(), "synth: --out is required");
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path out(o.out);
  const std::string want = options_text(o);
  SynthSummary sum;
  if (prepare_folder(out, want)) {
    sum.up_to_date = true;
    sum.train = int64_t{o.classes} * o.train_per_class;
    sum.val = int64_t{o.classes} * o.val_per_class;
    return sum;
  }
  write_text(out / kIncomplete, want);

  // The job list: train images class by class, then validation images in a seeded class order
  // (ImageNet's val numbering interleaves classes).
  std::vector<Job> jobs;
  std::vector<std::string> wnids(o.classes);
  for (int c = 0; c < o.classes; ++c) {
    wnids[c] = synth_wnid(c);
    fs::create_directories(out / "train" / wnids[c]);
    for (int k = 1; k <= o.train_per_class; ++k)
      jobs.push_back({str_cat("train/", wnids[c], "/", wnids[c], "_", k, ".JPEG"), c,
                      (uint64_t{static_cast<uint32_t>(c)} << 24) | static_cast<uint32_t>(k), Kind::kRgb});
  }
  const int64_t n_train = static_cast<int64_t>(jobs.size());
  const int64_t n_val = int64_t{o.classes} * o.val_per_class;
  std::vector<int> val_class(n_val);
  for (int64_t j = 0; j < n_val; ++j) val_class[j] = static_cast<int>(j / o.val_per_class);
  const CounterRng order(make_key(o.seed, RngPurpose::kSynth, kValOrder), 0);
  for (int64_t j = n_val - 1; j > 0; --j) std::swap(val_class[j], val_class[order.bits(j) % static_cast<uint64_t>(j + 1)]);
  fs::create_directories(out / "val");
  if (!o.flat_val)
    for (int c = 0; c < o.classes && o.val_per_class > 0; ++c) fs::create_directories(out / "val" / wnids[c]);
  // Class ids as the devkit has them: 1-based positions in a synset order that is not the sorted one (the
  // devkit's follows meta.mat), so that reading them as sorted positions gives wrong labels.
  std::vector<int> synset_order(o.classes), class_id(o.classes);
  for (int c = 0; c < o.classes; ++c) synset_order[c] = c;
  const CounterRng shuffle(make_key(o.seed, RngPurpose::kSynth, kSynsetOrder), 0);
  for (int k = o.classes - 1; k > 0; --k)
    std::swap(synset_order[k], synset_order[shuffle.bits(k) % static_cast<uint32_t>(k + 1)]);
  if (o.classes >= 2 && std::is_sorted(synset_order.begin(), synset_order.end()))
    std::swap(synset_order[0], synset_order[1]);
  std::string synsets;
  for (int k = 0; k < o.classes; ++k) {
    class_id[synset_order[k]] = k + 1;
    synsets += wnids[synset_order[k]] + "\n";
  }
  std::string ground_truth;
  for (int64_t j = 0; j < n_val; ++j) {
    char name[40];
    std::snprintf(name, sizeof(name), "ILSVRC2012_val_%08lld.JPEG", static_cast<long long>(j + 1));
    const int c = val_class[j];
    jobs.push_back({o.flat_val ? str_cat("val/", name) : str_cat("val/", wnids[c], "/", name), c,
                    (uint64_t{1} << 62) | static_cast<uint64_t>(j), Kind::kRgb});
    ground_truth += str_cat(class_id[c], "\n");
  }

  // ImageNet's oddities, in the training set as there: one CMYK JPEG, one PNG, and grayscale pictures
  // (one guaranteed, the rest about 3% of all images).
  const CounterRng special(make_key(o.seed, RngPurpose::kSynth, kSpecial), 0);
  const int64_t cmyk = static_cast<int64_t>(special.bits(0) % static_cast<uint64_t>(n_train));
  jobs[cmyk].kind = Kind::kCmyk;
  if (n_train >= 2) {
    const int64_t png = (cmyk + 1 + static_cast<int64_t>(special.bits(1) % static_cast<uint64_t>(n_train - 1))) % n_train;
    jobs[png].kind = Kind::kPng;
  }
  if (n_train >= 3) {
    int64_t gray = static_cast<int64_t>(special.bits(2) % static_cast<uint64_t>(n_train));
    while (jobs[gray].kind != Kind::kRgb) gray = (gray + 1) % n_train;
    jobs[gray].kind = Kind::kGray;
  }
  for (Job& j : jobs) {
    const CounterRng r(make_key(o.seed, RngPurpose::kSynth, kParams), j.what);
    if (j.kind == Kind::kRgb && r.uniform(15) < 0.03f) j.kind = Kind::kGray;
  }

  std::vector<int64_t> sizes(jobs.size(), 0);
  std::vector<std::string> errors(jobs.size());
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < static_cast<int64_t>(jobs.size()); ++i) {
    try {
      const std::vector<uint8_t> bytes = encode(jobs[i], render(jobs[i], o.seed), o.seed);
      write_bytes(out / jobs[i].path, bytes);
      sizes[i] = static_cast<int64_t>(bytes.size());
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
  }
  for (const std::string& e : errors) ALEXNET_CHECK(e.empty(), e);
  if (o.flat_val) {
    write_text(out / kValGroundTruthName, ground_truth);
    write_text(out / kValSynsetsName, synsets);
  }

  for (size_t i = 0; i < jobs.size(); ++i) {
    sum.bytes += sizes[i];
    sum.grayscale += jobs[i].kind == Kind::kGray;
    sum.cmyk += jobs[i].kind == Kind::kCmyk;
    sum.png += jobs[i].kind == Kind::kPng;
  }
  sum.train = n_train;
  sum.val = n_val;
  // The completion record goes last, then the in-progress marker is removed: an interruption anywhere
  // before leaves .synth-incomplete behind.
  write_text(out / kComplete, want);
  fs::remove(out / kIncomplete);
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace alexnet
