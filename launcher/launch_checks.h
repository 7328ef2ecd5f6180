// alexnet-launch's pre-flight checks, run before anything starts: the dataset, the checkpoint folder,
// the executables and mpirun. Each failure throws alexnet::Error naming the key or path to fix.
#pragma once

#include <string>

#include "core/config.h"
#include "launcher/launch_plan.h"

namespace alexnet {

// The prepared folder (data.prepared, or <data.root>/.prepared) holds index.txt, written last by
// `alexnet-tool prepare`; a data.root that is set is a folder with train/.
void check_dataset(const DataConfig& data);
// `dir` is, or can be created as, a folder this process can write: a probe file is created in it (or
// in its nearest existing ancestor) and removed. Nothing else is created.
void check_checkpoint_dir(const std::string& dir);
// alexnet-data-service and alexnet-worker are executable files in `bin_dir`.
void check_executables(const std::string& bin_dir);
// The path of `mpirun` (a path, or a name looked up in the environment's PATH).
std::string find_mpirun(const std::string& mpirun, const LaunchEnvironment& env);

// The folder of the running executable (/proc/self/exe).
std::string own_bin_dir();

}  // namespace alexnet
