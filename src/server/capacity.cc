#include "server/capacity.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "sys/system_probe.h"

namespace qm::server {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Down to 0.1, never below 0.
double Floor01(double v) { return std::max(0.0, std::floor(v * 10) / 10); }

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

CapacityDetector::CapacityDetector(DetectConfig config,
                                   std::string storage_path, std::string root)
    : config_(std::move(config)), storage_path_(std::move(storage_path)) {
  sys::ProbeOptions o;
  o.root = std::move(root);
  o.nvml_library = "";  // GPUs are not a configured capacity (yet)
  probe_ = std::make_unique<sys::SystemProbe>(std::move(o));
}

CapacityDetector::~CapacityDetector() = default;

StatusOr<DetectedCapacities> CapacityDetector::Detect() {
  DetectedCapacities d;
  Status first;
  auto note = [&](const std::string& s) {
    d.summary += (d.summary.empty() ? "" : ", ") + s;
  };
  if (auto cpu = probe_->ReadCpu(); cpu.ok()) {
    d.cpu_cores = Floor01(cpu->effective_cores - config_.cpu_cores_buffer);
    note("cpu_cores " + Num(*d.cpu_cores) + " (" + Num(cpu->effective_cores) +
         (cpu->cgroup_quota_cores ? " cores by the cgroup quota"
                                  : " online cores") +
         (config_.cpu_cores_buffer > 0
              ? " - " + Num(config_.cpu_cores_buffer) + " buffer"
              : "") +
         ")");
  } else {
    first = cpu.status();
  }
  if (auto mem = probe_->ReadMemory(); mem.ok()) {
    const double total = static_cast<double>(mem->effective_total_bytes) / kGiB;
    d.memory_gb = Floor01(total - config_.memory_gb_buffer);
    note("memory_gb " + Num(*d.memory_gb) + " (" + Num(Floor01(total)) +
         " GiB" + (mem->cgroup_limit_bytes ? " by the cgroup limit" : "") +
         (config_.memory_gb_buffer > 0
              ? " - " + Num(config_.memory_gb_buffer) + " buffer"
              : "") +
         ")");
  } else if (first.ok()) {
    first = mem.status();
  }
  if (!storage_path_.empty()) {
    // The state directory may not exist yet: its nearest existing parent
    // is on the same filesystem.
    std::filesystem::path where = storage_path_;
    std::error_code ec;
    while (!std::filesystem::exists(where, ec) && where.has_parent_path() &&
           where.parent_path() != where) {
      where = where.parent_path();
    }
    if (auto disk = sys::ReadDisk(where.string()); disk.ok()) {
      const double total = static_cast<double>(disk->total_bytes) / kGiB;
      d.storage_gb = Floor01(total - config_.storage_gb_buffer);
      note("storage_gb " + Num(*d.storage_gb) + " (the filesystem of " +
           storage_path_ + ": " + Num(Floor01(total)) + " GiB" +
           (config_.storage_gb_buffer > 0
                ? " - " + Num(config_.storage_gb_buffer) + " buffer"
                : "") +
           ")");
    } else if (first.ok()) {
      first = disk.status();
    }
  }
  if (!d.cpu_cores && !d.memory_gb && !d.storage_gb) {
    return first.ok() ? NotFound("nothing could be detected") : first;
  }
  return d;
}

Config WithDetected(Config config, const DetectedCapacities& detected,
                    const std::vector<std::string>& fixed) {
  auto apply = [&](const char* name, const std::optional<double>& value) {
    if (!value) return;
    if (std::find(fixed.begin(), fixed.end(), name) != fixed.end()) return;
    for (ResourceSpec& r : config.resources) {
      if (r.name == name) r.capacity = *value;
    }
  };
  apply("cpu_cores", detected.cpu_cores);
  apply("memory_gb", detected.memory_gb);
  apply("storage_gb", detected.storage_gb);
  return config;
}

}  // namespace qm::server
