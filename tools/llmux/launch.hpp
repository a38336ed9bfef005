#pragma once
/// `llmux launch`: every node of a config as a child process of this one.
/// Prints where the edge listens, reports a child that dies, forwards
/// SIGINT/SIGTERM and leaves no child behind (children also get SIGTERM if
/// this process dies, through PR_SET_PDEATHSIG).

#include <string>

#include "config/cluster_config.hpp"

namespace llmux::tools {

/// This program's own path (/proc/self/exe; "llmux" if it cannot be read).
[[nodiscard]] std::string self_exe();

/// Runs until a termination signal or until every child has exited.
/// SIGINT, SIGTERM and SIGCHLD must be blocked in the calling thread.
int run_launch(const std::string& config_path, const config::cluster_config& cfg);

}  // namespace llmux::tools
