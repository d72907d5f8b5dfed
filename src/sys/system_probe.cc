#include "sys/system_probe.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sys/nvml.h"
#include "sys/parse.h"

namespace qm::sys {
namespace {

using internal::ReadError;

// Reads all of `path` into *out (its capacity is kept between calls); 0 or
// the errno of the failure.
int ReadFile(const std::string& path, std::string* out) {
  out->clear();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  size_t used = 0;
  for (;;) {
    if (used == out->size()) out->resize(std::max<size_t>(4096, used * 2));
    const ssize_t n = ::read(fd, out->data() + used, out->size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      out->clear();
      return err;
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  ::close(fd);
  out->resize(used);
  return 0;
}

// An optional file that is not there: no such path, or a kernel that does
// not support it (PSI turned off answers EOPNOTSUPP).
bool IsAbsent(int err) {
  return err == ENOENT || err == ENOTDIR || err == EOPNOTSUPP;
}

bool IsBlank(std::string_view s) {
  return s.find_first_not_of(" \t\n") == std::string_view::npos;
}

}  // namespace

struct SystemProbe::Impl {
  explicit Impl(ProbeOptions options)
      : root(std::move(options.root)),
        nvml_library(std::move(options.nvml_library)) {
    while (!root.empty() && root.back() == '/') root.pop_back();
  }

  std::string root;  // no trailing '/': "" is the live machine
  std::string nvml_library;
  std::string buffer;  // the file just read
  internal::StatSample previous;
  internal::StatSample current;
  bool has_previous = false;
  bool nvml_tried = false;
  std::unique_ptr<internal::Nvml> nvml;
  std::string nvml_note;

  bool live() const { return root.empty(); }
  std::string Path(std::string_view file) const {
    std::string path = root;
    path += file;
    return path;
  }

  Status ReadRequired(const std::string& path) {
    const int err = ReadFile(path, &buffer);
    return err == 0 ? Status::Ok() : ReadError(path, err);
  }
  // False when the file is absent.
  StatusOr<bool> ReadOptional(const std::string& path) {
    const int err = ReadFile(path, &buffer);
    if (err == 0) return true;
    if (IsAbsent(err)) return false;
    return ReadError(path, err);
  }

  // The cgroup v2 directories from the process's cgroup up to the root of
  // the hierarchy: a limit at any level applies. (In a container with its
  // own cgroup namespace the process's cgroup is "/".)
  std::vector<std::string> CgroupDirs(const CgroupInfo& cgroup) const {
    std::vector<std::string> dirs;
    if (!cgroup.available) return dirs;
    std::string_view path = cgroup.path;
    const std::string base = Path("/sys/fs/cgroup");
    for (;;) {
      while (!path.empty() && path.back() == '/') path.remove_suffix(1);
      dirs.push_back(base + std::string(path));
      if (path.empty()) break;
      path = path.substr(0, path.rfind('/'));
    }
    return dirs;
  }

  StatusOr<CgroupInfo> Cgroup();
  StatusOr<CpuInfo> Cpu(const CgroupInfo& cgroup);
  StatusOr<MemoryInfo> Memory(const CgroupInfo& cgroup);
  StatusOr<PressureInfo> Pressures();
  GpuReport Gpus();
};

StatusOr<CgroupInfo> SystemProbe::Impl::Cgroup() {
  CgroupInfo info;
  const std::string path = Path("/proc/self/cgroup");
  StatusOr<bool> read = ReadOptional(path);
  if (!read.ok()) return read.status();
  if (!*read) return info;
  StatusOr<std::optional<std::string>> parsed =
      internal::ParseSelfCgroup(buffer, path);
  if (!parsed.ok()) return parsed.status();
  if (parsed->has_value()) {
    info.available = true;
    info.path = std::move(**parsed);
  }
  return info;
}

StatusOr<CpuInfo> SystemProbe::Impl::Cpu(const CgroupInfo& cgroup) {
  CpuInfo info;
  const std::string online = Path("/sys/devices/system/cpu/online");
  if (const int err = ReadFile(online, &buffer); err == 0) {
    StatusOr<int> cores = internal::ParseCpuList(buffer, online);
    if (!cores.ok()) return cores.status();
    info.online_cores = *cores;
  } else {
    // Only the live machine has another source.
    const long cores =
        live() && IsAbsent(err) ? sysconf(_SC_NPROCESSORS_ONLN) : -1;
    if (cores < 1) return ReadError(online, err);
    info.online_cores = static_cast<int>(cores);
  }
  info.effective_cores = info.online_cores;

  for (const std::string& dir : CgroupDirs(cgroup)) {
    const std::string path = dir + "/cpu.max";
    StatusOr<bool> read = ReadOptional(path);
    if (!read.ok()) return read.status();
    if (!*read) continue;
    StatusOr<internal::CpuMax> max = internal::ParseCpuMax(buffer, path);
    if (!max.ok()) return max.status();
    if (!max->quota_us.has_value()) continue;
    const double cores = static_cast<double>(*max->quota_us) /
                         static_cast<double>(max->period_us);
    if (!info.cgroup_quota_cores.has_value() ||
        cores < *info.cgroup_quota_cores) {
      info.cgroup_quota_cores = cores;
    }
  }
  if (info.cgroup_quota_cores.has_value()) {
    info.effective_cores =
        std::min(info.effective_cores, *info.cgroup_quota_cores);
  }

  const std::string loadavg = Path("/proc/loadavg");
  QM_RETURN_IF_ERROR(ReadRequired(loadavg));
  QM_RETURN_IF_ERROR(internal::ParseLoadavg(buffer, loadavg, &info));

  // Last, so that a failure above leaves the previous sample in place.
  const std::string stat = Path("/proc/stat");
  QM_RETURN_IF_ERROR(ReadRequired(stat));
  QM_RETURN_IF_ERROR(internal::ParseStat(buffer, stat, &current));
  if (has_previous) {
    info.utilisation = internal::BusyShare(previous.all, current.all);
    info.per_core.reserve(current.cores.size());
    for (size_t i = 0; i < current.cores.size(); ++i) {
      const internal::CpuTimes& now = current.cores[i];
      // Cores keep their place unless one went offline or came back.
      const internal::CpuTimes* before = nullptr;
      if (i < previous.cores.size() && previous.cores[i].cpu == now.cpu) {
        before = &previous.cores[i];
      } else {
        for (const internal::CpuTimes& p : previous.cores) {
          if (p.cpu == now.cpu) before = &p;
        }
      }
      if (before == nullptr) continue;
      if (std::optional<double> busy = internal::BusyShare(*before, now)) {
        info.per_core.push_back({now.cpu, *busy});
      }
    }
  }
  std::swap(previous, current);
  has_previous = true;
  return info;
}

StatusOr<MemoryInfo> SystemProbe::Impl::Memory(const CgroupInfo& cgroup) {
  MemoryInfo info;
  const std::string meminfo = Path("/proc/meminfo");
  QM_RETURN_IF_ERROR(ReadRequired(meminfo));
  QM_RETURN_IF_ERROR(internal::ParseMeminfo(buffer, meminfo, &info));
  info.effective_total_bytes = info.total_bytes;
  info.effective_available_bytes = info.available_bytes;

  for (const std::string& dir : CgroupDirs(cgroup)) {
    const std::string max_path = dir + "/memory.max";
    StatusOr<bool> read = ReadOptional(max_path);
    if (!read.ok()) return read.status();
    if (!*read) continue;
    StatusOr<std::optional<uint64_t>> max =
        internal::ParseMemoryMax(buffer, max_path);
    if (!max.ok()) return max.status();
    if (!max->has_value()) continue;
    const uint64_t limit = **max;
    // A level with a limit has its usage next to it.
    const std::string current_path = dir + "/memory.current";
    QM_RETURN_IF_ERROR(ReadRequired(current_path));
    StatusOr<uint64_t> used = internal::ParseSingleNumber(buffer, current_path);
    if (!used.ok()) return used.status();
    const uint64_t headroom = limit > *used ? limit - *used : 0;
    info.effective_available_bytes =
        std::min(info.effective_available_bytes, headroom);
    info.effective_total_bytes = std::min(info.effective_total_bytes, limit);
    if (!info.cgroup_limit_bytes.has_value() ||
        limit < *info.cgroup_limit_bytes) {
      info.cgroup_limit_bytes = limit;
      info.cgroup_current_bytes = *used;
    }
  }
  return info;
}

StatusOr<PressureInfo> SystemProbe::Impl::Pressures() {
  PressureInfo info;
  const std::pair<const char*, Pressure*> files[] = {
      {"/proc/pressure/cpu", &info.cpu},
      {"/proc/pressure/memory", &info.memory},
      {"/proc/pressure/io", &info.io}};
  for (const auto& [file, pressure] : files) {
    const std::string path = Path(file);
    StatusOr<bool> read = ReadOptional(path);
    if (!read.ok()) return read.status();
    // Container runtimes mask some /proc files with /dev/null: empty.
    if (!*read || IsBlank(buffer)) continue;
    QM_RETURN_IF_ERROR(internal::ParsePressure(buffer, path, pressure));
  }
  return info;
}

GpuReport SystemProbe::Impl::Gpus() {
  if (nvml_library.empty()) return {{}, "GPU detection is off"};
  if (!nvml_tried) {
    nvml_tried = true;
    nvml = internal::Nvml::Load(nvml_library, &nvml_note);
  }
  if (nvml == nullptr) return {{}, nvml_note};
  return nvml->Read();
}

SystemProbe::SystemProbe(ProbeOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
SystemProbe::~SystemProbe() = default;
SystemProbe::SystemProbe(SystemProbe&&) noexcept = default;
SystemProbe& SystemProbe::operator=(SystemProbe&&) noexcept = default;

StatusOr<SystemInfo> SystemProbe::Detect(
    const std::vector<std::string>& disk_paths) {
  SystemInfo info;
  StatusOr<CgroupInfo> cgroup = impl_->Cgroup();
  if (!cgroup.ok()) return cgroup.status();
  info.cgroup = std::move(*cgroup);
  StatusOr<CpuInfo> cpu = impl_->Cpu(info.cgroup);
  if (!cpu.ok()) return cpu.status();
  info.cpu = std::move(*cpu);
  StatusOr<MemoryInfo> memory = impl_->Memory(info.cgroup);
  if (!memory.ok()) return memory.status();
  info.memory = *memory;
  StatusOr<PressureInfo> pressure = impl_->Pressures();
  if (!pressure.ok()) return pressure.status();
  info.pressure = *pressure;
  info.disks.reserve(disk_paths.size());
  for (const std::string& path : disk_paths) {
    StatusOr<DiskInfo> disk = ReadDisk(path);
    if (!disk.ok()) return disk.status();
    info.disks.push_back(std::move(*disk));
  }
  info.gpu = impl_->Gpus();
  return info;
}

StatusOr<CgroupInfo> SystemProbe::ReadCgroup() { return impl_->Cgroup(); }

StatusOr<CpuInfo> SystemProbe::ReadCpu() {
  StatusOr<CgroupInfo> cgroup = impl_->Cgroup();
  if (!cgroup.ok()) return cgroup.status();
  return impl_->Cpu(*cgroup);
}

StatusOr<MemoryInfo> SystemProbe::ReadMemory() {
  StatusOr<CgroupInfo> cgroup = impl_->Cgroup();
  if (!cgroup.ok()) return cgroup.status();
  return impl_->Memory(*cgroup);
}

StatusOr<PressureInfo> SystemProbe::ReadPressure() {
  return impl_->Pressures();
}

GpuReport SystemProbe::ReadGpus() { return impl_->Gpus(); }

StatusOr<DiskInfo> ReadDisk(const std::string& path) {
  struct statvfs fs;
  if (::statvfs(path.c_str(), &fs) != 0) return ReadError(path, errno);
  const uint64_t unit = fs.f_frsize != 0 ? fs.f_frsize : fs.f_bsize;
  DiskInfo disk;
  disk.path = path;
  disk.total_bytes = static_cast<uint64_t>(fs.f_blocks) * unit;
  disk.free_bytes = static_cast<uint64_t>(fs.f_bfree) * unit;
  disk.available_bytes = static_cast<uint64_t>(fs.f_bavail) * unit;
  return disk;
}

}  // namespace qm::sys
