// alexnet-tool's dataset commands: `synth` (a generated dataset in ImageNet's layout) and `prepare`
// (index, training-set statistics and optional pre-resized shards; docs/data.md).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "core/cli.h"
#include "core/config.h"
#include "core/error.h"
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
  args.flag("--flat-val", "a flat val/ plus ILSVRC2012_validation_ground_truth.txt, as the devkit has it");
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
  if (s.up_to_date) {
    std::cout << o.out << ": already holds this dataset (" << s.train << " train, " << s.val
              << " val images); nothing written\n";
    return 0;
  }
  std::printf("wrote %s: %d classes, %lld train + %lld val images (%lld grayscale, %lld CMYK, %lld PNG), "
              "%.1f MB in %.2f s (%.0f images/s)\n",
              o.out.c_str(), o.classes, static_cast<long long>(s.train), static_cast<long long>(s.val),
              static_cast<long long>(s.grayscale), static_cast<long long>(s.cmyk), static_cast<long long>(s.png),
              static_cast<double>(s.bytes) / 1e6, s.seconds, static_cast<double>(s.train + s.val) / s.seconds);
  return 0;
}

const ToolCommand kDataCommands[] = {
    {"synth", "write a generated dataset in ImageNet's layout and formats (demo and tests)", cmd_synth},
};

}  // namespace
}  // namespace alexnet
