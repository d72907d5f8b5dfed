// System detection (Linux): CPU cores and utilisation, load, memory, the
// process's cgroup v2 limits, pressure stall information, disk space and
// NVIDIA GPUs. Every /proc and /sys file is read under a root directory
// ("/" on a live machine), so tests run the readers on fixture trees.
// See docs/system-detection.md.
//
// Errors as values: a required file that is missing or malformed gives a
// Status naming the file; an optional one (PSI, cgroup files, NVML) that is
// absent is reported as not available, never as zero.
//
// Thread safety: a SystemProbe keeps the previous /proc/stat sample and the
// loaded NVML library; use one probe per thread (or guard it).
#ifndef QM_SYS_SYSTEM_PROBE_H_
#define QM_SYS_SYSTEM_PROBE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qm/status.h"

namespace qm::sys {

struct ProbeOptions {
  // The directory that stands for "/" when reading /proc and /sys. Only
  // with "/" may a missing /sys/devices/system/cpu/online fall back to
  // sysconf(3).
  std::string root = "/";
  // The NVML library loaded with dlopen(3) for GPUs; "" turns GPU detection
  // off. A name that cannot be loaded means no GPUs (not an error).
  std::string nvml_library = "libnvidia-ml.so.1";
};

// The busy share of one core over the interval since the previous sample.
struct CoreUsage {
  int cpu = 0;             // N of "cpuN" in /proc/stat
  double utilisation = 0;  // 0..1: (all - idle - iowait) / all ticks
};

struct CpuInfo {
  // Cores in /sys/devices/system/cpu/online.
  int online_cores = 0;
  // The cgroup v2 cpu.max quota / period in cores, the smallest on the
  // process's cgroup path; empty when no cgroup level limits the CPU.
  std::optional<double> cgroup_quota_cores;
  // min(online_cores, cgroup_quota_cores).
  double effective_cores = 0;
  // All cores' busy share (0..1) since the previous sample of this probe;
  // empty on the first sample and when no tick passed in between.
  std::optional<double> utilisation;
  // The same per core, for the cores present in both samples.
  std::vector<CoreUsage> per_core;
  // /proc/loadavg: runnable + uninterruptible tasks over 1, 5, 15 minutes.
  double load1 = 0;
  double load5 = 0;
  double load15 = 0;
};

struct MemoryInfo {
  // /proc/meminfo, in bytes.
  uint64_t total_bytes = 0;      // MemTotal
  uint64_t available_bytes = 0;  // MemAvailable
  uint64_t swap_total_bytes = 0;
  uint64_t swap_free_bytes = 0;
  // The smallest cgroup v2 memory.max on the process's cgroup path and that
  // cgroup's memory.current; empty when no level sets a limit.
  std::optional<uint64_t> cgroup_limit_bytes;
  std::optional<uint64_t> cgroup_current_bytes;
  // What this process can use: min(MemTotal, the limit) and
  // min(MemAvailable, limit - current at every limited level).
  uint64_t effective_total_bytes = 0;
  uint64_t effective_available_bytes = 0;
};

// One line of a /proc/pressure file: the share of time (in percent, as the
// kernel writes it) some or all tasks stalled, and the total stall time.
struct PressureFigures {
  double avg10 = 0;
  double avg60 = 0;
  double avg300 = 0;
  uint64_t total_us = 0;
};

struct Pressure {
  // False when the file is absent (kernel without PSI, or psi=0), empty
  // (masked by a container runtime) or unsupported; the figures are then
  // unknown, not zero.
  bool available = false;
  PressureFigures some;
  // The "full" line; empty for cpu on kernels before 5.13.
  std::optional<PressureFigures> full;
};

struct PressureInfo {
  Pressure cpu;
  Pressure memory;
  Pressure io;
};

struct CgroupInfo {
  // True when /proc/self/cgroup has a cgroup v2 ("0::") line.
  bool available = false;
  std::string path;  // e.g. "/system.slice/qm.service"
};

// statvfs(3) of a path, in bytes.
struct DiskInfo {
  std::string path;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;       // free to root
  uint64_t available_bytes = 0;  // free to unprivileged users
};

struct GpuInfo {
  int index = 0;
  std::string name;
  uint64_t memory_total_bytes = 0;
  uint64_t memory_used_bytes = 0;
  uint64_t memory_free_bytes = 0;
  // nvmlDeviceGetUtilizationRates, in percent; empty when the device does
  // not report it.
  std::optional<int> utilisation_percent;
  std::optional<int> memory_utilisation_percent;
};

struct GpuReport {
  std::vector<GpuInfo> gpus;
  // Why no (or not every) GPU was read, e.g. "libnvidia-ml.so.1: cannot
  // open shared object file"; "" when NVML answered for every device.
  std::string note;
};

struct SystemInfo {
  CpuInfo cpu;
  MemoryInfo memory;
  PressureInfo pressure;
  CgroupInfo cgroup;
  std::vector<DiskInfo> disks;  // in the order of the paths asked for
  GpuReport gpu;
};

class SystemProbe {
 public:
  explicit SystemProbe(ProbeOptions options = {});
  ~SystemProbe();
  SystemProbe(SystemProbe&&) noexcept;
  SystemProbe& operator=(SystemProbe&&) noexcept;
  SystemProbe(const SystemProbe&) = delete;
  SystemProbe& operator=(const SystemProbe&) = delete;

  // Every reader; `disk_paths` (the state directory, workspaces) are taken
  // as given, not under the root. The first error wins.
  StatusOr<SystemInfo> Detect(const std::vector<std::string>& disk_paths = {});

  // The single readers. ReadCpu (and Detect) replace the /proc/stat sample
  // that the next utilisation is measured against.
  StatusOr<CgroupInfo> ReadCgroup();
  StatusOr<CpuInfo> ReadCpu();
  StatusOr<MemoryInfo> ReadMemory();
  StatusOr<PressureInfo> ReadPressure();
  // Loads NVML on the first call and keeps it (a failed load is not
  // retried by this probe).
  GpuReport ReadGpus();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// statvfs(3) of `path` (not under any root); NOT_FOUND or UNAVAILABLE
// naming the path when it fails.
StatusOr<DiskInfo> ReadDisk(const std::string& path);

}  // namespace qm::sys

#endif  // QM_SYS_SYSTEM_PROBE_H_
