// Command-line parsing shared by every executable: named options, flags, positionals, and the
// common --config FILE / --set dotted.key=value pair that every executable takes.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/config.h"

namespace alexnet {

class ArgParser {
 public:
  // `program` and `usage` appear in errors and --help.
  ArgParser(std::string program, std::string usage);

  // Declares an option taking a value ("--out"); repeatable ones collect every value.
  void option(const std::string& name, const std::string& help, bool repeatable = false);
  void flag(const std::string& name, const std::string& help);
  // Declares --config and --set.
  void config_options();

  // Parses argv[first..argc). Throws alexnet::Error naming an unknown option or a missing value.
  // Returns false when --help was given (usage already printed).
  bool parse(int argc, char** argv, int first = 1);

  bool has(const std::string& name) const;
  std::string get(const std::string& name) const;  // throws if absent
  std::string get_or(const std::string& name, const std::string& fallback) const;
  std::vector<std::string> get_all(const std::string& name) const;
  double get_double(const std::string& name) const;
  int64_t get_int(const std::string& name) const;
  int64_t get_int_or(const std::string& name, int64_t fallback) const;
  const std::vector<std::string>& positionals() const { return positionals_; }
  std::string help_text() const;

  // The config from --config (or the defaults) with every --set applied, validated.
  Config load_config() const;

 private:
  std::string program_;
  std::string usage_;
  struct Spec {
    std::string help;
    bool takes_value;
    bool repeatable;
  };
  std::map<std::string, Spec> specs_;
  std::vector<std::string> order_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positionals_;
};

}  // namespace alexnet
