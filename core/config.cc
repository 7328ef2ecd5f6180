// Config loading (yaml-cpp), --set overrides, validation, YAML output and the key reference.
#include "core/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <type_traits>

#include "core/error.h"

namespace alexnet {
namespace {

// Sections (structs with visit()) are recognised by this list.
template <class T>
constexpr bool is_section_v =
    std::is_same_v<T, LrnConfig> || std::is_same_v<T, PoolConfig> || std::is_same_v<T, ModelConfig> ||
    std::is_same_v<T, DataConfig> || std::is_same_v<T, TrainConfig> ||
    std::is_same_v<T, ParallelConfig> || std::is_same_v<T, CheckpointConfig> ||
    std::is_same_v<T, RunConfig> || std::is_same_v<T, LogConfig> || std::is_same_v<T, Config>;

template <class T, class = void>
struct IsEnum : std::false_type {};
template <class T>
struct IsEnum<T, std::void_t<decltype(EnumNames<T>::kNames)>> : std::true_type {};

template <class E>
std::string enum_choices() {
  std::string s;
  for (const char* name : EnumNames<E>::kNames) s += (s.empty() ? "" : " | ") + std::string(name);
  return s;
}

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// Shortest decimal text that reads back as the same double.
std::string format_double(double x) {
  char buf[64];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  std::string s = buf;
  // Keep it a float in YAML's eyes ("1" would read back as an int, which we accept anyway).
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

struct ReadContext {
  std::string source_name;
  ConfigSources* sources;
  std::string override_text;  // non-empty while applying one --set
};

std::string where(const ReadContext& ctx, const YAML::Node& node) {
  if (!ctx.override_text.empty()) return "--set " + ctx.override_text;
  if (node.Mark().line >= 0) return str_cat(ctx.source_name, " line ", node.Mark().line + 1);
  return ctx.source_name;
}

[[noreturn]] void key_error(const ReadContext& ctx, const YAML::Node& node, const std::string& key,
                            const std::string& problem) {
  ALEXNET_FAIL("config key '", key, "' (", where(ctx, node), "): ", problem);
}

std::string scalar_text(const ReadContext& ctx, const YAML::Node& node, const std::string& key,
                        const char* expected) {
  if (node.IsNull()) key_error(ctx, node, key, str_cat("has no value; expected ", expected));
  if (!node.IsScalar()) key_error(ctx, node, key, str_cat("expected ", expected, ", got a ",
                                                          node.IsMap() ? "mapping" : "sequence"));
  return node.Scalar();
}

template <class T>
void read_number(const ReadContext& ctx, const YAML::Node& node, const std::string& key, T& out,
                 const char* expected) {
  std::string text = scalar_text(ctx, node, key, expected);
  if (std::is_unsigned_v<T> && !text.empty() && text[0] == '-') {
    key_error(ctx, node, key, str_cat("expected ", expected, ", got '", text, "'"));
  }
  try {
    out = node.as<T>();
  } catch (const YAML::Exception&) {
    key_error(ctx, node, key, str_cat("expected ", expected, ", got '", text, "'"));
  }
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(out)) key_error(ctx, node, key, str_cat("must be a finite number, got '", text, "'"));
  }
}

class Reader;
template <class T>
void read_value(const ReadContext& ctx, const YAML::Node& node, const std::string& key, T& field);

class Reader {
 public:
  Reader(const ReadContext& ctx, const YAML::Node& node, std::string prefix)
      : ctx_(ctx), node_(node), prefix_(std::move(prefix)) {}

  template <class T>
  void operator()(const char* key, T& field, const char*) {
    known_.insert(key);
    const YAML::Node child = node_[key];
    if (!child.IsDefined()) return;
    read_value(ctx_, child, join_key(prefix_, key), field);
  }

  void reject_unknown() const {
    for (const auto& item : node_) {
      std::string key = item.first.as<std::string>();
      if (known_.count(key) == 0) {
        std::string valid;
        for (const std::string& k : known_) valid += (valid.empty() ? "" : ", ") + k;
        key_error(ctx_, item.first, join_key(prefix_, key),
                  str_cat("unknown key (valid here: ", valid, ")"));
      }
    }
  }

 private:
  const ReadContext& ctx_;
  const YAML::Node& node_;
  std::string prefix_;
  std::set<std::string> known_;
};

template <class T>
void read_value(const ReadContext& ctx, const YAML::Node& node, const std::string& key, T& field) {
  if (ctx.sources && ctx.override_text.empty()) (*ctx.sources)[key] = where(ctx, node);
  if (ctx.sources && !ctx.override_text.empty()) (*ctx.sources)[key] = "--set " + ctx.override_text;
  if constexpr (is_section_v<T>) {
    if (node.IsNull()) return;  // an empty section keeps its defaults
    if (!node.IsMap()) key_error(ctx, node, key, "expected a mapping of keys");
    Reader reader(ctx, node, key);
    field.visit(reader);
    reader.reject_unknown();
  } else if constexpr (IsEnum<T>::value) {
    std::string text = scalar_text(ctx, node, key, enum_choices<T>().c_str());
    int index = 0;
    for (const char* name : EnumNames<T>::kNames) {
      if (text == name) {
        field = static_cast<T>(index);
        return;
      }
      ++index;
    }
    key_error(ctx, node, key, str_cat("expected one of ", enum_choices<T>(), ", got '", text, "'"));
  } else if constexpr (std::is_same_v<T, bool>) {
    std::string text = scalar_text(ctx, node, key, "true or false");
    if (text == "true") field = true;
    else if (text == "false") field = false;
    else key_error(ctx, node, key, str_cat("expected true or false, got '", text, "'"));
  } else if constexpr (std::is_integral_v<T>) {
    read_number(ctx, node, key, field, std::is_unsigned_v<T> ? "a non-negative integer" : "an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    read_number(ctx, node, key, field, "a number");
  } else if constexpr (std::is_same_v<T, std::string>) {
    field = scalar_text(ctx, node, key, "a string");
  } else if constexpr (std::is_same_v<T, std::vector<int>>) {
    if (node.IsNull()) {
      field.clear();
      return;
    }
    if (!node.IsSequence()) key_error(ctx, node, key, "expected a list of integers, e.g. [30, 60]");
    field.clear();
    for (size_t i = 0; i < node.size(); ++i) {
      int v = 0;
      read_number(ctx, node[i], str_cat(key, "[", i, "]"), v, "an integer");
      field.push_back(v);
    }
  } else {
    static_assert(sizeof(T) == 0, "config field type not supported");
  }
}

// Applies one --set to the field at a dotted path.
class PathSetter {
 public:
  PathSetter(const ReadContext& ctx, const YAML::Node& value, std::vector<std::string> path,
             size_t depth, std::string prefix)
      : ctx_(ctx), value_(value), path_(std::move(path)), depth_(depth), prefix_(std::move(prefix)) {}

  template <class T>
  void operator()(const char* key, T& field, const char*) {
    known_.insert(key);
    if (path_[depth_] != key) return;
    found_ = true;
    std::string dotted = join_key(prefix_, key);
    if (depth_ + 1 == path_.size()) {
      read_value(ctx_, value_, dotted, field);
      return;
    }
    if constexpr (is_section_v<T>) {
      PathSetter inner(ctx_, value_, path_, depth_ + 1, dotted);
      field.visit(inner);
      inner.require_found();
    } else {
      ALEXNET_FAIL("config key '", dotted, "' (--set ", ctx_.override_text,
                   "): is a value, not a section");
    }
  }

  void require_found() const {
    if (found_) return;
    std::string valid;
    for (const std::string& k : known_) valid += (valid.empty() ? "" : ", ") + k;
    ALEXNET_FAIL("config key '", join_key(prefix_, path_[depth_]), "' (--set ", ctx_.override_text,
                 "): unknown key (valid here: ", valid, ")");
  }

 private:
  const ReadContext& ctx_;
  const YAML::Node& value_;
  std::vector<std::string> path_;
  size_t depth_;
  std::string prefix_;
  std::set<std::string> known_;
  bool found_ = false;
};

void apply_override(Config& config, const std::string& text, ConfigSources& sources) {
  size_t eq = text.find('=');
  ALEXNET_CHECK(eq != std::string::npos && eq > 0,
                "--set expects dotted.key=value (e.g. --set data.root=/scratch/imagenet), got '", text, "'");
  std::string dotted = text.substr(0, eq);
  std::string value_text = text.substr(eq + 1);
  std::vector<std::string> path;
  std::stringstream ss(dotted);
  for (std::string part; std::getline(ss, part, '.');) {
    ALEXNET_CHECK(!part.empty(), "--set ", text, ": empty key segment in '", dotted, "'");
    path.push_back(part);
  }
  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    ALEXNET_FAIL("--set ", text, ": the value is not valid YAML: ", e.msg);
  }
  ReadContext ctx{"--set", &sources, text};
  PathSetter setter(ctx, value, path, 0, "");
  config.visit(setter);
  setter.require_found();
}

// ---- output ----

class Writer {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}
  template <class T>
  void operator()(const char* key, T& field, const char*) {
    out_ << YAML::Key << key << YAML::Value;
    if constexpr (is_section_v<T>) {
      out_ << YAML::BeginMap;
      field.visit(*this);
      out_ << YAML::EndMap;
    } else if constexpr (IsEnum<T>::value) {
      out_ << enum_name(field);
    } else if constexpr (std::is_same_v<T, bool>) {
      out_ << (field ? "true" : "false");
    } else if constexpr (std::is_floating_point_v<T>) {
      out_ << format_double(field);
    } else if constexpr (std::is_same_v<T, std::vector<int>>) {
      out_ << YAML::Flow << YAML::BeginSeq;
      for (int v : field) out_ << v;
      out_ << YAML::EndSeq;
    } else {
      out_ << field;
    }
  }

 private:
  YAML::Emitter& out_;
};

class Flattener {
 public:
  Flattener(std::map<std::string, std::string>& out, std::string prefix = "") : out_(out), prefix_(std::move(prefix)) {}
  template <class T>
  void operator()(const char* key, T& field, const char*) {
    const std::string name = join_key(prefix_, key);
    if constexpr (is_section_v<T>) {
      Flattener inner(out_, name);
      field.visit(inner);
    } else if constexpr (IsEnum<T>::value) {
      out_[name] = enum_name(field);
    } else if constexpr (std::is_same_v<T, bool>) {
      out_[name] = field ? "true" : "false";
    } else if constexpr (std::is_floating_point_v<T>) {
      out_[name] = format_double(field);
    } else if constexpr (std::is_same_v<T, std::vector<int>>) {
      std::string s = "[";
      for (size_t i = 0; i < field.size(); ++i) s += (i ? ", " : "") + std::to_string(field[i]);
      out_[name] = s + "]";
    } else if constexpr (std::is_same_v<T, std::string>) {
      out_[name] = field;
    } else {
      out_[name] = std::to_string(field);
    }
  }

 private:
  std::map<std::string, std::string>& out_;
  std::string prefix_;
};

// A Markdown table cell: '|' would end the cell, even inside backticks.
std::string table_cell(const std::string& text) {
  std::string cell;
  for (char c : text) {
    if (c == '|') cell += '\\';
    cell += c;
  }
  return cell;
}

class DocWriter {
 public:
  explicit DocWriter(std::ostringstream& out, std::string prefix = "") : out_(out), prefix_(std::move(prefix)) {}
  template <class T>
  void operator()(const char* key, T& field, const char* doc) {
    std::string dotted = join_key(prefix_, key);
    if constexpr (is_section_v<T>) {
      if (prefix_.empty()) {
        out_ << "\n## `" << dotted << ":` — " << doc << "\n\n| key | default | meaning |\n|---|---|---|\n";
      } else {
        out_ << "| `" << dotted << "` | (section) | " << table_cell(doc) << " |\n";
      }
      DocWriter inner(out_, dotted);
      field.visit(inner);
    } else {
      std::string value;
      if constexpr (IsEnum<T>::value) {
        value = str_cat("`", enum_name(field), "` (", enum_choices<T>(), ")");
      } else if constexpr (std::is_same_v<T, bool>) {
        value = field ? "`true`" : "`false`";
      } else if constexpr (std::is_floating_point_v<T>) {
        value = "`" + format_double(field) + "`";
      } else if constexpr (std::is_same_v<T, std::string>) {
        value = field.empty() ? "`\"\"`" : "`" + field + "`";
      } else if constexpr (std::is_same_v<T, std::vector<int>>) {
        value = "`[";
        for (size_t i = 0; i < field.size(); ++i) value += (i ? ", " : "") + std::to_string(field[i]);
        value += "]`";
      } else {
        value = "`" + std::to_string(field) + "`";
      }
      out_ << "| `" << dotted << "` | " << table_cell(value) << " | " << table_cell(doc) << " |\n";
    }
  }

 private:
  std::ostringstream& out_;
  std::string prefix_;
};

Config load_from_node(const YAML::Node& root, const std::string& source_name,
                      const std::vector<std::string>& overrides) {
  Config config;
  ConfigSources sources;
  ReadContext ctx{source_name, &sources, ""};
  if (root.IsDefined() && !root.IsNull()) {
    if (!root.IsMap()) ALEXNET_FAIL("config ", source_name, ": expected a mapping of sections at the top");
    Reader reader(ctx, root, "");
    config.visit(reader);
    reader.reject_unknown();
  }
  for (const std::string& o : overrides) apply_override(config, o, sources);
  validate_config(config, sources);
  return config;
}

}  // namespace

Config load_config_text(const std::string& text, const std::string& source_name,
                        const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    // YAML::Load, not LoadAll: yaml-cpp 0.7's LoadAll can loop on some inputs.
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    ALEXNET_FAIL("config ", source_name, " line ", e.mark.line + 1, ": not valid YAML: ", e.msg);
  }
  return load_from_node(root, source_name, overrides);
}

Config load_config_file(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  ALEXNET_CHECK(in.good(), "cannot read config file '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return load_config_text(ss.str(), path, overrides);
}

Config default_config(const std::vector<std::string>& overrides) {
  return load_from_node(YAML::Node(), "defaults", overrides);
}

std::string config_to_yaml(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Writer writer(out);
  Config copy = config;
  copy.visit(writer);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string config_reference_markdown() {
  std::ostringstream out;
  out << "# Configuration reference\n\n"
         "Every key, its default and its meaning. Every executable takes `--config FILE` and any number of\n"
         "`--set dotted.key=value` overrides (the value parsed as YAML), applied before validation.\n"
         "Unknown keys and wrong types are errors that name the key and the line.\n"
         "This file is generated by `alexnet-tool config-reference`; a test keeps it current.\n";
  Config defaults;
  DocWriter writer(out);
  defaults.visit(writer);
  return out.str();
}

std::map<std::string, std::string> flatten_config(const Config& config) {
  std::map<std::string, std::string> out;
  Flattener flat(out);
  Config copy = config;
  copy.visit(flat);
  return out;
}

std::string checkpoint_dir(const Config& config) {
  return config.checkpoint.dir.empty() ? config.run.dir + "/checkpoints" : config.checkpoint.dir;
}

void validate_config(const Config& c, const ConfigSources& sources) {
  auto fail = [&](const std::string& key, const std::string& problem) {
    auto it = sources.find(key);
    std::string from = it != sources.end() ? " (" + it->second + ")" : " (default)";
    ALEXNET_FAIL("config key '", key, "'", from, ": ", problem);
  };
  const ModelConfig& m = c.model;
  if (m.num_classes < 2) fail("model.num_classes", str_cat("must be at least 2, got ", m.num_classes));
  if (m.input_size < 67 || m.input_size > 1024)
    fail("model.input_size", str_cat("must be in [67, 1024], got ", m.input_size));
  if (!(m.lrn.k >= 0)) fail("model.lrn.k", str_cat("must be >= 0, got ", m.lrn.k));
  if (m.lrn.n < 1) fail("model.lrn.n", str_cat("must be >= 1, got ", m.lrn.n));
  if (!(m.lrn.alpha >= 0)) fail("model.lrn.alpha", str_cat("must be >= 0, got ", m.lrn.alpha));
  if (!(m.lrn.beta >= 0)) fail("model.lrn.beta", str_cat("must be >= 0, got ", m.lrn.beta));
  if (m.lrn.k == 0 && m.lrn.beta > 0)
    fail("model.lrn.k", "k = 0 divides by zero on an all-zero window; use k > 0");
  if (m.pool.size < 1) fail("model.pool.size", str_cat("must be >= 1, got ", m.pool.size));
  if (m.pool.stride < 1) fail("model.pool.stride", str_cat("must be >= 1, got ", m.pool.stride));
  if (!(m.dropout >= 0 && m.dropout < 1)) fail("model.dropout", str_cat("must be in [0, 1), got ", m.dropout));
  // The feature map must survive conv1 (11/4), three poolings and the 3x3 convs.
  auto pooled = [&](int s) { return (s - m.pool.size) / m.pool.stride + 1; };
  int s1 = (m.input_size - 11) / 4 + 1;
  int s2 = s1 >= m.pool.size ? pooled(s1) : 0;
  int s3 = s2 >= m.pool.size ? pooled(s2) : 0;
  int s5 = s3 >= m.pool.size ? pooled(s3) : 0;
  if (s5 < 1)
    fail("model.input_size", str_cat("input ", m.input_size, " with pooling ", m.pool.size, "/",
                                     m.pool.stride, " leaves no pixel after pool5"));

  if (!(c.data.lighting_std >= 0)) fail("data.lighting_std", "must be >= 0");
  if (c.data.threads < 0) fail("data.threads", "must be >= 0");
  if (c.data.prefetch < 1) fail("data.prefetch", "must be >= 1");
  if (c.data.eval_batch < 0) fail("data.eval_batch", str_cat("must be >= 0, got ", c.data.eval_batch));
  if (!(c.data.timeout_s >= 0)) fail("data.timeout_s", str_cat("must be >= 0, got ", c.data.timeout_s));

  const TrainConfig& t = c.train;
  if (t.batch_size < 1) fail("train.batch_size", str_cat("must be >= 1, got ", t.batch_size));
  if (t.epochs < 1) fail("train.epochs", str_cat("must be >= 1, got ", t.epochs));
  if (t.max_steps < 0) fail("train.max_steps", "must be >= 0");
  if (!(t.lr >= 0)) fail("train.lr", str_cat("must be >= 0, got ", t.lr));
  if (!(t.momentum >= 0 && t.momentum < 1)) fail("train.momentum", str_cat("must be in [0, 1), got ", t.momentum));
  if (!(t.weight_decay >= 0)) fail("train.weight_decay", "must be >= 0");

  if (c.parallel.devices_per_rank < 1 || c.parallel.devices_per_rank > 2)
    fail("parallel.devices_per_rank", str_cat("must be 1 or 2, got ", c.parallel.devices_per_rank));
  if (c.parallel.threads < 0) fail("parallel.threads", "must be >= 0");
  if (!(c.parallel.bucket_mb >= 0 && c.parallel.bucket_mb <= 4096))
    fail("parallel.bucket_mb", str_cat("must be in [0, 4096], got ", c.parallel.bucket_mb));
  if (!(std::isfinite(c.parallel.comm_timeout_s) && c.parallel.comm_timeout_s >= 0))
    fail("parallel.comm_timeout_s", str_cat("must be finite and >= 0 (0: wait forever), got ", c.parallel.comm_timeout_s));

  if (!(t.lr_decay > 0 && t.lr_decay <= 1)) fail("train.lr_decay", str_cat("must be in (0, 1], got ", t.lr_decay));
  for (size_t i = 0; i < t.lr_steps.size(); ++i) {
    if (t.lr_steps[i] < 1) fail("train.lr_steps", str_cat("epochs must be >= 1, got ", t.lr_steps[i]));
    if (i > 0 && t.lr_steps[i] <= t.lr_steps[i - 1]) fail("train.lr_steps", "epochs must be strictly increasing");
  }
  if (t.lr_schedule == LrSchedule::kStep && t.lr_steps.empty())
    fail("train.lr_steps", "lr_schedule: step needs at least one epoch in train.lr_steps");
  if (t.plateau_patience < 1) fail("train.plateau_patience", str_cat("must be >= 1, got ", t.plateau_patience));
  if (!(t.plateau_min_delta >= 0)) fail("train.plateau_min_delta", "must be >= 0");
  if (t.max_lr_drops < 0) fail("train.max_lr_drops", "must be >= 0");
  if (t.linear_scaling_reference < 0) fail("train.linear_scaling_reference", "must be >= 0");
  if (!(t.warmup_epochs >= 0)) fail("train.warmup_epochs", "must be >= 0");
  if (t.warmup_epochs > 0 && t.linear_scaling_reference == 0)
    fail("train.warmup_epochs", "warm-up ramps to the linearly scaled rate; set train.linear_scaling_reference too");
  if (t.eval_every_steps < 0) fail("train.eval_every_steps", "must be >= 0");

  if (c.checkpoint.every_steps < 0) fail("checkpoint.every_steps", "must be >= 0");
  if (!(c.checkpoint.every_minutes >= 0)) fail("checkpoint.every_minutes", "must be >= 0");
  if (c.checkpoint.keep < 2)
    fail("checkpoint.keep", str_cat("must be >= 2 (a damaged newest checkpoint needs a fallback), got ", c.checkpoint.keep));
  if (c.run.dir.empty()) fail("run.dir", "must not be empty");
  if (c.log.every_steps < 1) fail("log.every_steps", str_cat("must be >= 1, got ", c.log.every_steps));

  static const std::set<std::string> kLevels = {"debug", "info", "warning", "error"};
  if (kLevels.count(c.log.level) == 0)
    fail("log.level", str_cat("expected one of debug | info | warning | error, got '", c.log.level, "'"));
}

}  // namespace alexnet
