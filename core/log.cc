// Logging implementation: serialised writes so lines from threads never interleave.
#include "core/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace alexnet {
namespace {

struct LogState {
  std::mutex mu;
  LogLevel level = LogLevel::kInfo;
  std::FILE* mirror = nullptr;
};

LogState& state() {
  static LogState s;
  return s;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warning";
    case LogLevel::kError: return "error";
  }
  return "?";
}

}  // namespace

void set_log_level(LogLevel level) { state().level = level; }
LogLevel log_level() { return state().level; }

void set_log_file(const std::string& path) {
  LogState& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.mirror) std::fclose(s.mirror);
  s.mirror = nullptr;
  if (!path.empty()) {
    s.mirror = std::fopen(path.c_str(), "a");
    ALEXNET_CHECK(s.mirror != nullptr, "cannot open log file '", path, "' for appending");
  }
}

void log_line(LogLevel level, const std::string& message) {
  LogState& s = state();
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
  std::string who = process_rank() >= 0 ? str_cat(" rank ", process_rank()) : std::string();
  std::string line = str_cat(stamp, who, " ", level_name(level), ": ", message, "\n");
  std::lock_guard<std::mutex> lock(s.mu);
  std::fputs(line.c_str(), stderr);
  if (s.mirror) {
    std::fputs(line.c_str(), s.mirror);
    std::fflush(s.mirror);
  }
}

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

}  // namespace alexnet
