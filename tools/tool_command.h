// alexnet-tool's command table: each tools/cmd_*.cc file registers its commands with a static
// ToolCommand object, so a new command needs no edit elsewhere.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace alexnet {

struct ToolCommandInfo {
  std::string name;
  std::string summary;
  std::function<int(int, char**)> run;  // argv[1] is the command name; options start at argv[2]
};

// Every registered command, in registration order (the model commands first).
std::vector<ToolCommandInfo>& tool_commands();

struct ToolCommand {
  ToolCommand(std::string name, std::string summary, std::function<int(int, char**)> run) {
    tool_commands().push_back({std::move(name), std::move(summary), std::move(run)});
  }
};

}  // namespace alexnet
