// alexnet-tool's dataset commands: `synth` (a generated dataset in ImageNet's layout) and `prepare`
// (index, training-set statistics and optional pre-resized shards; docs/data.md).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "core/cli.h"
#include "core/config.h"
#include "core/error.h"
#include "data_service/prepared.h"
#include "data_service/synth.h"
#include "tools/tool_command.h"

namespace alexnet {
namespace {

int cmd_synth(int argc, char** argv) {
  ArgParser args("alexnet-tool synth",
                 "--out DIR --classes C --train-per-class N --val-per-class M [--seed S] [--flat-val]: "
                 "a generated dataset in ImageNet's layout and formats");
  args.option("--out", "dataset folder to write (absent, empty, or an earlier synth output)");
  args.option("--classes", "number of classes (default 10, at most 1000)");
  args.option("--train-per-class", "training images per class (default 20)");
  args.option("--val-per-class", "validation images per class (default 5)");
  args.option("--seed", "seed of every random choice (default 1)");
  args.option("--threads", "threads (default: all cores)");
  args.flag("--flat-val",
            "a flat val/, ILSVRC2012_validation_ground_truth.txt (class ids) and val_synsets.txt, as in the devkit");
  if (!args.parse(argc, argv, 2)) return 0;
  SynthOptions o;
  o.out = args.get("--out");
  o.classes = static_cast<int>(args.get_int_or("--classes", o.classes));
  o.train_per_class = static_cast<int>(args.get_int_or("--train-per-class", o.train_per_class));
  o.val_per_class = static_cast<int>(args.get_int_or("--val-per-class", o.val_per_class));
  o.seed = static_cast<uint64_t>(args.get_int_or("--seed", static_cast<int64_t>(o.seed)));
  o.threads = static_cast<int>(args.get_int_or("--threads", 0));
  o.flat_val = args.has("--flat-val");
  const SynthSummary s = synthesize_dataset(o);
  if (s.up_to_date)
    std::cout << o.out << ": already holds this dataset (" << s.train << " train, " << s.val
              << " val images); nothing written\n";
  else
    std::printf("wrote %s: %d classes, %lld train + %lld val images (%lld grayscale, %lld CMYK, %lld PNG), "
                "%.1f MB in %.2f s (%.0f images/s)\n",
                o.out.c_str(), o.classes, static_cast<long long>(s.train), static_cast<long long>(s.val),
                static_cast<long long>(s.grayscale), static_cast<long long>(s.cmyk), static_cast<long long>(s.png),
                static_cast<double>(s.bytes) / 1e6, s.seconds, static_cast<double>(s.train + s.val) / s.seconds);
  if (o.flat_val)
    std::cout << "flat val/: set data.val_ground_truth=" << kValGroundTruthName
              << " and data.val_synsets=" << kValSynsetsName << " (found in the dataset root)\n";
  return 0;
}

int cmd_prepare(int argc, char** argv) {
  ArgParser args("alexnet-tool prepare",
                 "[--data DIR] [--out PREP] [--shards] [--threads T] [--stats-images K] [--strict]: the dataset "
                 "index, training-set mean image and RGB PCA, and optional pre-resized shards (resumable)");
  args.config_options();
  args.option("--data", "dataset root (default: data.root)");
  args.option("--out", "prepared folder (default: data.prepared, or <root>/.prepared when that is empty)");
  args.option("--val-ground-truth",
              "ground truth of a flat val/: wnids, or devkit class ids (default: data.val_ground_truth)");
  args.option("--val-synsets",
              "wnids in the devkit's class-id order, for a ground truth of ids (default: data.val_synsets)");
  args.flag("--shards", "also write shards of pre-resized 256x256 JPEGs (quality 95, 4:4:4)");
  args.option("--threads", "threads (default: data.threads; 0 = all cores)");
  args.option("--stats-images", "training images the statistics use, evenly spaced (default 0 = all)");
  args.option("--chunk-images", "images per resumable chunk and per shard (default 4096)");
  args.flag("--strict", "the first bad image file is fatal (default: data.strict)");
  args.flag("--progress", "draw the progress bar even when stderr is not a terminal");
  if (!args.parse(argc, argv, 2)) return 0;
  const Config cfg = args.load_config();
  PrepareOptions o;
  o.data_root = args.get_or("--data", cfg.data.root);
  ALEXNET_CHECK(!o.data_root.empty(), "alexnet-tool prepare: no dataset: give --data DIR or set data.root");
  o.out = args.get_or("--out", cfg.data.prepared);
  if (o.out.empty()) o.out = o.data_root + "/.prepared";
  o.val_ground_truth = args.get_or("--val-ground-truth", cfg.data.val_ground_truth);
  o.val_synsets = args.get_or("--val-synsets", cfg.data.val_synsets);
  o.shards = args.has("--shards");
  o.threads = static_cast<int>(args.get_int_or("--threads", cfg.data.threads));
  o.stats_images = args.get_int_or("--stats-images", 0);
  o.chunk_images = args.get_int_or("--chunk-images", o.chunk_images);
  o.strict = args.has("--strict") || cfg.data.strict;
  o.progress = args.has("--progress") || isatty(STDERR_FILENO) == 1;
  std::cout << prepare_dataset(o) << "\n";
  return 0;
}

const ToolCommand kDataCommands[] = {
    {"synth", "write a generated dataset in ImageNet's layout and formats (demo and tests)", cmd_synth},
    {"prepare", "index, training-set mean image and RGB PCA, optional pre-resized shards (resumable)", cmd_prepare},
};

}  // namespace
}  // namespace alexnet
