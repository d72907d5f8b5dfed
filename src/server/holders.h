// Watching the processes that hold allocations on this host, so that an
// allocation whose holder exited (crashed, killed, forgot to release) is
// taken back at once (Engine::Reclaim) instead of when its lease runs out.
//
// A client on the same machine as the server (`qm run`) names itself in its
// allocate request: its pid, the process's start time and the host's boot
// id. The server opens a pidfd for that pid, checks that the pid still is
// that process (start time), and waits for it to exit with epoll: no
// polling, and the reclaim starts as soon as the kernel reports the exit.
// A holder on another host (another boot id) is not watched: its lease
// covers it.
//
// What is watched lives in memory: after a server restart the leases still
// cover the allocations that were watched (docs/api.md, "Holders").
//
// Thread safety: every method may be called from any thread. `reclaim` runs
// on the watcher's thread, never under its lock.
#ifndef QM_SERVER_HOLDERS_H_
#define QM_SERVER_HOLDERS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "qm/status.h"

namespace qm::server {

// A process on a host, as a holder names itself.
struct HolderProcess {
  int64_t pid = 0;
  // Field 22 of /proc/<pid>/stat: clock ticks after boot when it started.
  // With the pid it names one process (pids are reused, start times not).
  uint64_t start_time = 0;
  // /proc/sys/kernel/random/boot_id of its host: the same host and boot.
  std::string boot_id;
};

// This host's boot id ("" when it cannot be read). `root` is the
// filesystem root ("/"; tests pass a fixture tree).
std::string BootId(const std::string& root = "/");
// The start time of process `pid` (field 22 of /proc/<pid>/stat): NOT_FOUND
// when there is no such process, DATA_LOSS when the file does not parse.
StatusOr<uint64_t> ProcessStartTime(int64_t pid, const std::string& root = "/");
// The calling process as a holder.
StatusOr<HolderProcess> SelfHolder();
// The calling process as the `holder` of an allocate request, as JSON text
// ({"pid": N, "start_time": N, "boot_id": "..."}): what a client on this
// host (`qm run`, `qm mcp`) sends so that its allocation is reclaimed when
// it exits. SelfHolder's error when it cannot be read.
StatusOr<std::string> SelfHolderJson();

class HolderWatch {
 public:
  // Called with an allocation id and why, once its holder is gone.
  using Reclaim =
      std::function<void(const std::string& id, const std::string& reason)>;

  // Starts the watcher thread. UNIMPLEMENTED when this kernel has no
  // pidfd_open (Linux < 5.3): then nothing is watched.
  static StatusOr<std::unique_ptr<HolderWatch>> Start(Reclaim reclaim);
  ~HolderWatch();  // Stop()
  HolderWatch(const HolderWatch&) = delete;
  HolderWatch& operator=(const HolderWatch&) = delete;

  // Watches allocation `id`'s holder. Answers false (and watches nothing)
  // when the holder is on another host. When the process is already gone
  // (or the pid is now another process), `reclaim` is called at once, on
  // the watcher thread. INVALID_REQUEST for a pid <= 0.
  StatusOr<bool> Watch(const std::string& id, const HolderProcess& holder);
  // The allocation ended: stop watching for it (its process may hold
  // others).
  void Forget(const std::string& id);
  // Allocations watched now.
  size_t size() const;
  // Stops the thread and closes every pidfd. Idempotent.
  void Stop();

 private:
  HolderWatch(Reclaim reclaim, int epoll_fd, int wake_fd);
  void Loop();
  // Ends watch `key` and answers the allocations it covered.
  std::vector<std::string> Drop(uint64_t key);

  const Reclaim reclaim_;
  const int epoll_fd_, wake_fd_;
  const std::string boot_id_;
  mutable std::mutex mu_;
  // One watched process. Keys are never reused (a pidfd's number is, once
  // closed: an event read before the close must not reach its successor).
  struct Proc {
    int fd = -1;  // its pidfd
    int64_t pid = 0;
    std::vector<std::string> ids;
  };
  uint64_t next_key_ = 1;
  std::map<uint64_t, Proc> procs_;         // key -> process and holders
  std::map<int64_t, uint64_t> by_pid_;     // pid -> key
  std::map<std::string, uint64_t> by_id_;  // allocation -> key
  std::vector<std::pair<std::string, std::string>> gone_;  // reclaim now
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace qm::server

#endif  // QM_SERVER_HOLDERS_H_
