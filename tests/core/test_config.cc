// Config loading: defaults, overrides, errors that name the key and the line, round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "core/cli.h"
#include "core/config.h"
#include "core/error.h"
#include "tests/common/expect.h"

namespace alexnet {
namespace {

using testing::error_of;

TEST(Config, DefaultsAreThePapers) {
  Config c = default_config();
  EXPECT_EQ(c.model.num_classes, 1000);
  EXPECT_EQ(c.model.input_size, 227);
  EXPECT_EQ(c.model.activation, Activation::kRelu);
  EXPECT_EQ(c.model.norm, NormKind::kLrn);
  EXPECT_DOUBLE_EQ(c.model.lrn.k, 2.0);
  EXPECT_EQ(c.model.lrn.n, 5);
  EXPECT_DOUBLE_EQ(c.model.lrn.alpha, 1e-4);
  EXPECT_DOUBLE_EQ(c.model.lrn.beta, 0.75);
  EXPECT_EQ(c.model.pool.size, 3);
  EXPECT_EQ(c.model.pool.stride, 2);
  EXPECT_DOUBLE_EQ(c.model.dropout, 0.5);
  EXPECT_DOUBLE_EQ(c.train.momentum, 0.9);
  EXPECT_DOUBLE_EQ(c.train.weight_decay, 0.0005);
}

TEST(Config, ReadsValuesAndOverrides) {
  Config c = load_config_text("model:\n  num_classes: 10\n  norm: batchnorm\n  lrn: {n: 2}\n", "t.yaml",
                              {"model.activation=tanh", "data.root=/scratch/imagenet", "model.lrn={k: 1.5}"});
  EXPECT_EQ(c.model.num_classes, 10);
  EXPECT_EQ(c.model.norm, NormKind::kBatchNorm);
  EXPECT_EQ(c.model.lrn.n, 2);
  EXPECT_DOUBLE_EQ(c.model.lrn.k, 1.5);
  EXPECT_EQ(c.model.activation, Activation::kTanh);
  EXPECT_EQ(c.data.root, "/scratch/imagenet");
}

TEST(Config, UnknownKeyNamesKeyAndLine) {
  std::string msg = error_of([] { load_config_text("model:\n  num_classes: 10\n  nrom: lrn\n", "t.yaml"); });
  EXPECT_NE(msg.find("'model.nrom'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("t.yaml line 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key"), std::string::npos) << msg;
}

TEST(Config, WrongTypeNamesKeyAndLine) {
  std::string msg = error_of([] { load_config_text("train:\n  lr: fast\n", "t.yaml"); });
  EXPECT_NE(msg.find("'train.lr'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected a number"), std::string::npos) << msg;
  msg = error_of([] { load_config_text("model:\n  num_classes: 10.5\n", "t.yaml"); });
  EXPECT_NE(msg.find("expected an integer"), std::string::npos) << msg;
  msg = error_of([] { load_config_text("model:\n  norm: layernorm\n", "t.yaml"); });
  EXPECT_NE(msg.find("lrn | lrn2d | batchnorm | none"), std::string::npos) << msg;
  msg = error_of([] { load_config_text("model: 3\n", "t.yaml"); });
  EXPECT_NE(msg.find("expected a mapping"), std::string::npos) << msg;
  msg = error_of([] { load_config_text("train:\n  seed: -4\n", "t.yaml"); });
  EXPECT_NE(msg.find("non-negative"), std::string::npos) << msg;
}

TEST(Config, RangeErrorsNameTheSource) {
  std::string msg = error_of([] { load_config_text("model:\n  dropout: 1.5\n", "t.yaml"); });
  EXPECT_NE(msg.find("'model.dropout' (t.yaml line 2)"), std::string::npos) << msg;
  msg = error_of([] { default_config({"model.lrn.n=0"}); });
  EXPECT_NE(msg.find("--set model.lrn.n=0"), std::string::npos) << msg;
}

TEST(Config, BadOverrides) {
  EXPECT_NE(error_of([] { default_config({"model.nope=1"}); }).find("unknown key"), std::string::npos);
  EXPECT_NE(error_of([] { default_config({"model.num_classes.x=1"}); }).find("not a section"), std::string::npos);
  EXPECT_NE(error_of([] { default_config({"novalue"}); }).find("dotted.key=value"), std::string::npos);
  EXPECT_NE(error_of([] { default_config({"model.num_classes=[1"}); }).find("not valid YAML"), std::string::npos);
}

TEST(Config, InvalidYamlNamesLine) {
  std::string msg = error_of([] { load_config_text("model:\n  num_classes: [1, 2\n", "t.yaml"); });
  EXPECT_NE(msg.find("not valid YAML"), std::string::npos) << msg;
}

TEST(Config, RoundTripsThroughYaml) {
  Config c = default_config({"model.num_classes=17", "model.lrn.alpha=0.01", "model.norm=lrn2d",
                             "train.seed=18446744073709551615", "data.root=/a b/c"});
  std::string text = config_to_yaml(c);
  Config d = load_config_text(text, "round trip");
  EXPECT_EQ(config_to_yaml(d), text);
  EXPECT_EQ(d.model.num_classes, 17);
  EXPECT_DOUBLE_EQ(d.model.lrn.alpha, 0.01);
  EXPECT_EQ(d.train.seed, 18446744073709551615ull);
  EXPECT_EQ(d.data.root, "/a b/c");
}

TEST(Config, ModelOnlyConfigIsValid) {
  Config c = load_config_text("model:\n  num_classes: 10\n", "checkpoint /config");
  EXPECT_EQ(c.model.num_classes, 10);
  EXPECT_EQ(c.train.batch_size, default_config().train.batch_size);
}

TEST(Config, CommTimeout) {
  EXPECT_EQ(default_config().parallel.comm_timeout_s, 1800.0);
  // Above the data-service wait: a worker held up by its data service reports that before its peers time out.
  EXPECT_GT(default_config().parallel.comm_timeout_s, default_config().data.timeout_s);
  EXPECT_EQ(default_config({"parallel.comm_timeout_s=0"}).parallel.comm_timeout_s, 0.0);
  EXPECT_EQ(load_config_text("parallel:\n  comm_timeout_s: 2.5\n", "t.yaml").parallel.comm_timeout_s, 2.5);
  for (const char* bad : {"parallel.comm_timeout_s=-1", "parallel.comm_timeout_s=.nan", "parallel.comm_timeout_s=.inf",
                          "parallel.comm_timeout_s=-.inf", "parallel.comm_timeout_s=soon"}) {
    const std::string msg = error_of([&] { default_config({bad}); });
    EXPECT_NE(msg.find("'parallel.comm_timeout_s' (--set "), std::string::npos) << bad << ": " << msg;
  }
  // A config made in code is held to the same rule.
  for (double bad : {-0.5, static_cast<double>(NAN), static_cast<double>(INFINITY)}) {
    Config c = default_config();
    c.parallel.comm_timeout_s = bad;
    const std::string msg = error_of([&] { validate_config(c); });
    EXPECT_NE(msg.find("'parallel.comm_timeout_s' (default): must be finite and >= 0"), std::string::npos)
        << bad << ": " << msg;
  }
}

TEST(Config, ReferenceListsEveryKey) {
  std::string doc = config_reference_markdown();
  for (const char* key : {"model.num_classes", "model.lrn.alpha", "model.pool.stride", "data.root",
                          "train.weight_decay", "parallel.devices_per_rank", "parallel.comm_timeout_s"}) {
    EXPECT_NE(doc.find(std::string("`") + key + "`"), std::string::npos) << key;
  }
}

TEST(Cli, ParsesOptionsAndConfig) {
  ArgParser args("prog", "prog [options]");
  args.config_options();
  args.option("--out", "output");
  args.flag("--strict", "strict");
  const char* argv[] = {"prog", "--out", "o.h5", "--set", "model.num_classes=5", "--strict", "pos"};
  ASSERT_TRUE(args.parse(7, const_cast<char**>(argv)));
  EXPECT_EQ(args.get("--out"), "o.h5");
  EXPECT_TRUE(args.has("--strict"));
  ASSERT_EQ(args.positionals().size(), 1u);
  EXPECT_EQ(args.load_config().model.num_classes, 5);
  ArgParser bad("prog", "prog");
  const char* argv2[] = {"prog", "--bogus"};
  EXPECT_NE(error_of([&] { bad.parse(2, const_cast<char**>(argv2)); }).find("unknown option '--bogus'"),
            std::string::npos);
}

}  // namespace
}  // namespace alexnet
