// Command-line parsing.
#include "core/cli.h"

#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace alexnet {

ArgParser::ArgParser(std::string program, std::string usage)
    : program_(std::move(program)), usage_(std::move(usage)) {}

void ArgParser::option(const std::string& name, const std::string& help, bool repeatable) {
  specs_[name] = Spec{help, true, repeatable};
  order_.push_back(name);
}

void ArgParser::flag(const std::string& name, const std::string& help) {
  specs_[name] = Spec{help, false, false};
  order_.push_back(name);
}

void ArgParser::config_options() {
  option("--config", "YAML config file (default: the built-in defaults)");
  option("--set", "override one config key: --set dotted.key=value (value parsed as YAML); repeatable", true);
}

bool ArgParser::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help_text().c_str(), stdout);
      return false;
    }
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      positionals_.push_back(arg);
      continue;
    }
    std::string name = arg, value;
    bool inline_value = false;
    size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    auto it = specs_.find(name);
    ALEXNET_CHECK(it != specs_.end(), program_, ": unknown option '", name, "'\n", help_text());
    if (!it->second.takes_value) {
      ALEXNET_CHECK(!inline_value, program_, ": option ", name, " takes no value");
      values_[name].push_back("true");
      continue;
    }
    if (!inline_value) {
      ALEXNET_CHECK(i + 1 < argc, program_, ": option ", name, " needs a value");
      value = argv[++i];
    }
    ALEXNET_CHECK(it->second.repeatable || values_[name].empty(), program_, ": option ", name,
                  " given twice");
    values_[name].push_back(value);
  }
  return true;
}

bool ArgParser::has(const std::string& name) const {
  auto it = values_.find(name);
  return it != values_.end() && !it->second.empty();
}

std::string ArgParser::get(const std::string& name) const {
  ALEXNET_CHECK(has(name), program_, ": missing required option ", name, "\n", help_text());
  return values_.at(name).back();
}

std::string ArgParser::get_or(const std::string& name, const std::string& fallback) const {
  return has(name) ? get(name) : fallback;
}

std::vector<std::string> ArgParser::get_all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

double ArgParser::get_double(const std::string& name) const {
  std::string text = get(name);
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  ALEXNET_CHECK(end && *end == '\0' && !text.empty(), program_, ": option ", name,
                " expects a number, got '", text, "'");
  return v;
}

int64_t ArgParser::get_int(const std::string& name) const {
  std::string text = get(name);
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  ALEXNET_CHECK(end && *end == '\0' && !text.empty(), program_, ": option ", name,
                " expects an integer, got '", text, "'");
  return v;
}

int64_t ArgParser::get_int_or(const std::string& name, int64_t fallback) const {
  return has(name) ? get_int(name) : fallback;
}

std::string ArgParser::help_text() const {
  const bool glued = !usage_.empty() && usage_[0] == ':';
  std::string s = "usage: " + program_ + (glued ? "" : " ") + usage_ + "\n";
  for (const std::string& name : order_) {
    const Spec& spec = specs_.at(name);
    s += str_cat("  ", name, spec.takes_value ? " VALUE" : "", "\n      ", spec.help, "\n");
  }
  return s;
}

Config ArgParser::load_config() const {
  std::vector<std::string> overrides = get_all("--set");
  if (has("--config")) return load_config_file(get("--config"), overrides);
  return default_config(overrides);
}

}  // namespace alexnet
