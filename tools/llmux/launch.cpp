#include "tools/llmux/launch.hpp"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <ctime>
#include <map>
#include <vector>

namespace llmux::tools {

std::string self_exe() {
  char buf[4096];
  auto n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0)
    return "llmux";
  buf[n] = '\0';
  return buf;
}

namespace {

/// Writes one whole line with a single write(2): the children share our
/// stdout and stderr, and a line written piece by piece interleaves with
/// theirs.
void say(int fd, const std::string& line) {
  std::string out = line + "\n";
  size_t done = 0;
  while (done < out.size()) {
    auto n = ::write(fd, out.data() + done, out.size() - done);
    if (n <= 0)
      return;
    done += static_cast<size_t>(n);
  }
}

std::string describe(int status) {
  if (WIFEXITED(status))
    return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string{"killed by signal "} + std::to_string(WTERMSIG(status)) + " ("
           + strsignal(WTERMSIG(status)) + ")";
  return "stopped";
}

/// Reaps every child that has exited; reports each one.
void reap(std::map<pid_t, std::string>& live, bool stopping) {
  int status = 0;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    auto it = live.find(pid);
    if (it == live.end())
      continue;
    if (!stopping || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      say(2, "llmux launch: node " + it->second + " (pid " + std::to_string(pid) + ") "
               + describe(status));
    live.erase(it);
  }
}

}  // namespace

int run_launch(const std::string& config_path, const config::cluster_config& cfg) {
  auto exe = self_exe();
  pid_t parent = getpid();
  std::map<pid_t, std::string> live;
  for (const auto& n : cfg.nodes) {
    pid_t pid = fork();
    if (pid < 0) {
      say(2, std::string{"llmux launch: fork failed: "} + strerror(errno));
      break;
    }
    if (pid == 0) {
      // Child: die with the launcher, and take signals normally again.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent)
        _exit(1);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      std::vector<std::string> args{exe, "node", "--config", config_path, "--name", n.name};
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(exe.c_str(), argv.data());
      say(2, "llmux launch: exec " + exe + " failed: " + strerror(errno));
      _exit(127);
    }
    live[pid] = n.name;
    say(1, "llmux launch: node " + n.name + " (pid " + std::to_string(pid) + ") on " + n.host + ":"
             + std::to_string(n.port));
  }
  say(1, "llmux launch: edge on node " + cfg.gateway.node + " at http://" + cfg.gateway.host + ":"
           + std::to_string(cfg.gateway.port) + "  (Ctrl-C stops every node)");

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  int rc = 0;
  while (!live.empty()) {
    int sig = 0;
    sigwait(&set, &sig);
    if (sig == SIGCHLD) {
      reap(live, false);
      if (live.empty()) {
        say(2, "llmux launch: every node has exited");
        rc = 1;
      }
      continue;
    }
    say(1, std::string{"llmux launch: "} + strsignal(sig) + ": stopping "
             + std::to_string(live.size()) + " node(s)");
    for (auto& [pid, name] : live)
      kill(pid, SIGTERM);
    // Give nodes 10 s to stop cleanly, then kill what is left.
    timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += 10;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    while (!live.empty()) {
      reap(live, true);
      if (live.empty())
        break;
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (now.tv_sec >= deadline.tv_sec)
        break;
      timespec wait{1, 0};
      sigtimedwait(&chld, nullptr, &wait);
    }
    for (auto& [pid, name] : live) {
      say(2, "llmux launch: node " + name + " did not stop in 10 s: killing");
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    live.clear();
    say(1, "llmux launch: all nodes stopped");
  }
  return rc;
}

}  // namespace llmux::tools
