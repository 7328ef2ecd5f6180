// Pre-flight checks of alexnet-launch: dataset, checkpoint folder, executables, mpirun.
#include "launcher/launch_checks.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <system_error>

#include "core/error.h"

namespace fs = std::filesystem;

namespace alexnet {
namespace {

bool is_executable_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) && access(p.c_str(), X_OK) == 0;
}

}  // namespace

void check_dataset(const DataConfig& data) {
  ALEXNET_CHECK(!data.root.empty() || !data.prepared.empty(),
                "config key 'data.root': not set (nor data.prepared); set it to the dataset folder, e.g. "
                "--set data.root=/scratch/imagenet");
  std::error_code ec;
  if (!data.root.empty()) {
    ALEXNET_CHECK(fs::is_directory(data.root, ec), "config key 'data.root': ", data.root, " is not a folder");
    ALEXNET_CHECK(fs::is_directory(fs::path(data.root) / "train", ec), "config key 'data.root': ", data.root,
                  " has no train/ folder (expected the ImageNet layout train/<wnid>/*.JPEG, val/)");
  }
  const std::string prepared = !data.prepared.empty() ? data.prepared : data.root + "/.prepared";
  const char* key = !data.prepared.empty() ? "data.prepared" : "data.root";
  ALEXNET_CHECK(fs::is_regular_file(fs::path(prepared) / "index.txt", ec), "config key '", key, "': ", prepared,
                "/index.txt not found: the dataset is not prepared (or preparation did not finish); run "
                "`alexnet-tool prepare --config C` first");
}

void check_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  fs::path path = fs::absolute(dir, ec);
  ALEXNET_CHECK(!ec, "config key 'checkpoint.dir': ", dir, ": ", ec.message());
  // The nearest existing ancestor: the folder where the worker's create_directories starts.
  fs::path probe_dir = path;
  while (!fs::exists(probe_dir, ec) && probe_dir.has_parent_path() && probe_dir != probe_dir.parent_path())
    probe_dir = probe_dir.parent_path();
  ALEXNET_CHECK(fs::is_directory(probe_dir, ec), "config key 'checkpoint.dir': ", dir, ": ", probe_dir.string(),
                " exists and is not a folder");
  std::string probe = (probe_dir / ".alexnet-launch-probe-XXXXXX").string();
  int fd = mkstemp(probe.data());
  ALEXNET_CHECK(fd >= 0, "config key 'checkpoint.dir': ", dir, " is not writable (creating a file in ",
                probe_dir.string(), " failed: ", std::strerror(errno), ")");
  close(fd);
  unlink(probe.c_str());
}

void check_executables(const std::string& bin_dir) {
  for (const char* name : {"alexnet-data-service", "alexnet-worker"}) {
    const fs::path p = fs::path(bin_dir) / name;
    ALEXNET_CHECK(is_executable_file(p), "--bin-dir ", bin_dir, ": ", p.string(),
                  " is missing or not executable (build it, or point --bin-dir at the build's bin/ folder)");
  }
}

std::string find_mpirun(const std::string& mpirun, const LaunchEnvironment& env) {
  ALEXNET_CHECK(!mpirun.empty(), "--mpirun: empty");
  if (mpirun.find('/') != std::string::npos) {
    ALEXNET_CHECK(is_executable_file(mpirun), "--mpirun ", mpirun, ": not an executable file");
    return mpirun;
  }
  std::istringstream path(env.get("PATH"));
  std::string dir;
  while (std::getline(path, dir, ':')) {
    const fs::path p = fs::path(dir.empty() ? "." : dir) / mpirun;
    if (is_executable_file(p)) return p.string();
  }
  ALEXNET_FAIL("--mpirun ", mpirun, ": not found in PATH (load the MPI module, or give --mpirun /path/to/mpirun)");
}

std::string own_bin_dir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  ALEXNET_CHECK(!ec, "cannot read /proc/self/exe (", ec.message(), "); give --bin-dir");
  return self.parent_path().string();
}

}  // namespace alexnet
