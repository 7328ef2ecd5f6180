// Expected failures as values (a bad JPEG is data, not a bug): Status and StatusOr<T>.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "core/error.h"

namespace alexnet {

class Status {
 public:
  Status() = default;  // ok
  static Status error(std::string message) { return Status(std::move(message)); }
  bool ok() const { return !message_.has_value(); }
  const std::string& message() const {
    static const std::string kOk = "ok";
    return message_ ? *message_ : kOk;
  }

 private:
  explicit Status(std::string message) : message_(std::move(message)) {}
  std::optional<std::string> message_;
};

template <class T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}                       // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {                // NOLINT: implicit by design
    ALEXNET_ASSERT(!status_.ok(), "StatusOr built from an ok Status without a value");
  }
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() {
    ALEXNET_ASSERT(ok(), "value() of a failed StatusOr: ", status_.message());
    return *value_;
  }
  const T& value() const {
    ALEXNET_ASSERT(ok(), "value() of a failed StatusOr: ", status_.message());
    return *value_;
  }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace alexnet
