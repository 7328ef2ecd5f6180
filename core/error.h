// Error reporting: user errors (bad config, data, arguments) versus internal bugs, and the one
// formatter every check macro uses, so each message names rank, host and file:line.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace alexnet {

// Bad input: a config key, a file, an argument. The message says what to fix.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A bug of ours: a broken invariant.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// Concatenates anything streamable into a string.
template <class... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

// Identity of this process in messages; set once at start-up (MPI rank, host name).
void set_process_identity(int rank, const std::string& host);
int process_rank();  // -1 until set
const std::string& process_host();

// "[rank 3 host node07] model/lrn.cc:42: " (rank omitted when not an MPI job).
std::string location_prefix(const char* file, int line);

namespace detail {
[[noreturn]] void throw_user_error(const char* file, int line, const std::string& message);
[[noreturn]] void throw_internal_error(const char* file, int line, const char* condition,
                                       const std::string& message);
}  // namespace detail

}  // namespace alexnet

// Bad input: throws alexnet::Error with the message built from the remaining arguments.
#define ALEXNET_CHECK(cond, ...)                                                            \
  do {                                                                                      \
    if (!(cond)) ::alexnet::detail::throw_user_error(__FILE__, __LINE__,                    \
                                                     ::alexnet::str_cat(__VA_ARGS__));      \
  } while (0)

// Our own invariant: throws alexnet::InternalError naming the condition.
#define ALEXNET_ASSERT(cond, ...)                                                           \
  do {                                                                                      \
    if (!(cond)) ::alexnet::detail::throw_internal_error(__FILE__, __LINE__, #cond,         \
                                                         ::alexnet::str_cat("" __VA_ARGS__)); \
  } while (0)

#define ALEXNET_FAIL(...) \
  ::alexnet::detail::throw_user_error(__FILE__, __LINE__, ::alexnet::str_cat(__VA_ARGS__))
