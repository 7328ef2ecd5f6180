// Logging: one line per message to stderr, with time, level and rank; an optional mirror file.
#pragma once

#include <string>

#include "core/error.h"

namespace alexnet {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_log_level(LogLevel level);
// The config's log.level spelling: debug | info | warning | error (validated by the config).
LogLevel parse_log_level(const std::string& name);
LogLevel log_level();
// Also append every line to this file (the run directory's log); empty path stops mirroring.
void set_log_file(const std::string& path);
void log_line(LogLevel level, const std::string& message);

template <class... Args>
void log_debug(Args&&... args) {
  if (log_level() <= LogLevel::kDebug) log_line(LogLevel::kDebug, str_cat(std::forward<Args>(args)...));
}
template <class... Args>
void log_info(Args&&... args) {
  if (log_level() <= LogLevel::kInfo) log_line(LogLevel::kInfo, str_cat(std::forward<Args>(args)...));
}
template <class... Args>
void log_warn(Args&&... args) {
  log_line(LogLevel::kWarn, str_cat(std::forward<Args>(args)...));
}
template <class... Args>
void log_error(Args&&... args) {
  log_line(LogLevel::kError, str_cat(std::forward<Args>(args)...));
}

}  // namespace alexnet
