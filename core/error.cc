// Error formatting shared by every check macro.
#include "core/error.h"

#include <unistd.h>

#include <cstring>

namespace alexnet {
namespace {

struct Identity {
  int rank = -1;
  std::string host;
};

Identity& identity() {
  static Identity id = [] {
    Identity i;
    char buf[256] = {0};
    if (gethostname(buf, sizeof(buf) - 1) == 0) i.host = buf;
    return i;
  }();
  return id;
}

const char* short_path(const char* file) {
  // Keep the path from the repository root: ".../main/model/lrn.cc" -> "model/lrn.cc".
  static const char* kRoots[] = {"/core/", "/model/", "/checkpoint/", "/comm/", "/tools/",
                                 "/data_service/", "/worker/", "/launcher/", "/tests/", "/bench/"};
  const char* best = nullptr;
  for (const char* root : kRoots) {
    const char* p = std::strstr(file, root);
    while (p) {
      best = (!best || p > best) ? p : best;
      p = std::strstr(p + 1, root);
    }
  }
  return best ? best + 1 : file;
}

}  // namespace

void set_process_identity(int rank, const std::string& host) {
  identity().rank = rank;
  if (!host.empty()) identity().host = host;
}

int process_rank() { return identity().rank; }
const std::string& process_host() { return identity().host; }

std::string location_prefix(const char* file, int line) {
  std::string out;
  if (identity().rank >= 0) out = str_cat("[rank ", identity().rank, " host ", identity().host, "] ");
  return out + str_cat(short_path(file), ":", line, ": ");
}

namespace detail {

void throw_user_error(const char* file, int line, const std::string& message) {
  throw Error(location_prefix(file, line) + message);
}

void throw_internal_error(const char* file, int line, const char* condition,
                          const std::string& message) {
  std::string text = str_cat(location_prefix(file, line), "internal error (a bug, please report): '",
                             condition, "' failed");
  if (!message.empty()) text += ": " + message;
  throw InternalError(text);
}

}  // namespace detail
}  // namespace alexnet
