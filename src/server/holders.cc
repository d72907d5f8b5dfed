#include "server/holders.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace qm::server {

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// pidfd_open(2) through syscall(2): glibc's wrapper is missing from some
// of the C++ declarations this project builds with.
int PidfdOpen(int64_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
}

std::string Root(const std::string& root) {
  return root.empty() || root == "/" ? "" : root;
}

}  // namespace

std::string BootId(const std::string& root) {
  std::string id = ReadFile(Root(root) + "/proc/sys/kernel/random/boot_id");
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

StatusOr<uint64_t> ProcessStartTime(int64_t pid, const std::string& root) {
  const std::string path =
      Root(root) + "/proc/" + std::to_string(pid) + "/stat";
  const std::string stat = ReadFile(path);
  if (stat.empty()) return NotFound("no process " + std::to_string(pid));
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields are counted from the last ')'. starttime is field 22, the
  // 20th after it.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return DataLoss(path + ": no ')'");
  size_t at = close + 1;
  for (int field = 3; field < 22; ++field) {
    at = stat.find(' ', at + 1);
    if (at == std::string::npos) return DataLoss(path + ": too few fields");
  }
  uint64_t start = 0;
  const char* b = stat.data() + at + 1;
  const char* e = stat.data() + stat.size();
  auto [p, ec] = std::from_chars(b, e, start);
  if (ec != std::errc() || p == b) {
    return DataLoss(path + ": field 22 is not a number");
  }
  return start;
}

StatusOr<HolderProcess> SelfHolder() {
  HolderProcess h;
  h.pid = getpid();
  auto start = ProcessStartTime(h.pid);
  if (!start.ok()) return start.status();
  h.start_time = *start;
  h.boot_id = BootId();
  if (h.boot_id.empty()) return NotFound("this host has no readable boot id");
  return h;
}

StatusOr<std::string> SelfHolderJson() {
  auto self = SelfHolder();
  if (!self.ok()) return self.status();
  return nlohmann::json{{"pid", self->pid},
                        {"start_time", self->start_time},
                        {"boot_id", self->boot_id}}
      .dump();
}

StatusOr<std::unique_ptr<HolderWatch>> HolderWatch::Start(Reclaim reclaim) {
  // Probe pidfd_open on ourselves.
  const int self = PidfdOpen(getpid());
  if (self < 0) {
    return Unimplemented(std::string("pidfd_open: ") + std::strerror(errno) +
                         " (Linux 5.3 or later is needed to watch holders)");
  }
  close(self);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return Internal(std::string("epoll: ") + std::strerror(errno));
  const int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    close(ep);
    return Internal(std::string("eventfd: ") + std::strerror(errno));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // the wake-up; watches have keys from 1
  epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev);
  std::unique_ptr<HolderWatch> w(new HolderWatch(std::move(reclaim), ep, wake));
  w->thread_ = std::thread([p = w.get()] { p->Loop(); });
  return w;
}

HolderWatch::HolderWatch(Reclaim reclaim, int epoll_fd, int wake_fd)
    : reclaim_(std::move(reclaim)),
      epoll_fd_(epoll_fd),
      wake_fd_(wake_fd),
      boot_id_(BootId()) {}

HolderWatch::~HolderWatch() {
  Stop();
  close(wake_fd_);
  close(epoll_fd_);
}

StatusOr<bool> HolderWatch::Watch(const std::string& id,
                                  const HolderProcess& holder) {
  if (holder.pid <= 0 || holder.pid > INT32_MAX) {
    return InvalidRequest("holder.pid: must be a process id > 0");
  }
  if (boot_id_.empty() || holder.boot_id != boot_id_) return false;
  auto wake = [&] {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  };
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return false;
  if (by_id_.count(id)) return true;
  auto known = by_pid_.find(holder.pid);
  if (known != by_pid_.end()) {
    procs_[known->second].ids.push_back(id);
    by_id_[id] = known->second;
    return true;
  }
  const int fd = PidfdOpen(holder.pid);
  // The pidfd refers to whatever process has the pid now: it is the holder
  // only if the start time matches (checked after opening, so the process
  // cannot change in between).
  auto start = ProcessStartTime(holder.pid);
  if (fd < 0 || !start.ok() || *start != holder.start_time) {
    if (fd >= 0) close(fd);
    gone_.emplace_back(id, "holder process " + std::to_string(holder.pid) +
                               " had exited when the allocation was made");
    wake();
    return true;
  }
  const uint64_t key = next_key_++;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = key;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    const int err = errno;
    close(fd);
    return Internal(std::string("epoll_ctl: ") + std::strerror(err));
  }
  procs_[key] = Proc{fd, holder.pid, {id}};
  by_pid_[holder.pid] = key;
  by_id_[id] = key;
  return true;
}

void HolderWatch::Forget(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  const uint64_t key = it->second;
  by_id_.erase(it);
  auto p = procs_.find(key);
  if (p == procs_.end()) return;
  auto& ids = p->second.ids;
  ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  if (ids.empty()) (void)Drop(key);
}

size_t HolderWatch::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_id_.size();
}

std::vector<std::string> HolderWatch::Drop(uint64_t key) {
  std::vector<std::string> ids;
  auto p = procs_.find(key);
  if (p == procs_.end()) return ids;
  ids = std::move(p->second.ids);
  for (const std::string& id : ids) by_id_.erase(id);
  by_pid_.erase(p->second.pid);
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, p->second.fd, nullptr);
  close(p->second.fd);
  procs_.erase(p);
  return ids;
}

void HolderWatch::Loop() {
  epoll_event events[64];
  for (;;) {
    const int n = epoll_wait(epoll_fd_, events, 64, -1);
    if (n < 0 && errno != EINTR) return;
    std::vector<std::pair<std::string, std::string>> reclaim;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      for (int i = 0; i < n; ++i) {
        const uint64_t key = events[i].data.u64;
        if (key == 0) {
          uint64_t v;
          (void)!read(wake_fd_, &v, sizeof v);
          continue;
        }
        auto p = procs_.find(key);
        if (p == procs_.end()) continue;  // forgotten meanwhile
        const std::string why =
            "holder process " + std::to_string(p->second.pid) + " exited";
        for (std::string& id : Drop(key)) reclaim.emplace_back(id, why);
      }
      for (auto& g : gone_) reclaim.push_back(std::move(g));
      gone_.clear();
    }
    for (const auto& [id, why] : reclaim) reclaim_(id, why);
  }
}

void HolderWatch::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, proc] : procs_) close(proc.fd);
  procs_.clear();
  by_pid_.clear();
  by_id_.clear();
}

}  // namespace qm::server
