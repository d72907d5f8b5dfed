// Parsers of the /proc and /sys files that SystemProbe reads (private to
// src/sys). Each takes the file's text and its path, which every error
// message names. No exceptions: numbers go through std::from_chars.
#ifndef QM_SYS_PARSE_H_
#define QM_SYS_PARSE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qm/status.h"
#include "sys/system_probe.h"

namespace qm::sys::internal {

// DATA_LOSS "<path>: <what>", with the path in the context as "file".
Status Malformed(const std::string& path, std::string_view what);
// NOT_FOUND (ENOENT) or UNAVAILABLE "<path>: <strerror>", with the path.
Status ReadError(const std::string& path, int err);

// One "cpu" line of /proc/stat reduced to what utilisation needs.
struct CpuTimes {
  int cpu = -1;        // N of "cpuN"; -1 for the "cpu" line (all cores)
  uint64_t idle = 0;   // idle + iowait
  uint64_t total = 0;  // user .. steal (guest time is inside user and nice)
};
struct StatSample {
  CpuTimes all;
  std::vector<CpuTimes> cores;
};
// The "cpu" lines of /proc/stat (the aggregate line must come first).
Status ParseStat(std::string_view text, const std::string& path,
                 StatSample* out);

// The busy share of the interval between two samples of one core; empty
// when no tick passed (or the counters went back).
std::optional<double> BusyShare(const CpuTimes& before, const CpuTimes& after);

// The number of CPUs in a list such as "0-3,5,7-8\n".
StatusOr<int> ParseCpuList(std::string_view text, const std::string& path);

// The three load averages of /proc/loadavg.
Status ParseLoadavg(std::string_view text, const std::string& path,
                    CpuInfo* out);

// MemTotal, MemAvailable, SwapTotal and SwapFree (all required), in bytes.
Status ParseMeminfo(std::string_view text, const std::string& path,
                    MemoryInfo* out);

// A /proc/pressure file: a "some" line, and a "full" line when present.
Status ParsePressure(std::string_view text, const std::string& path,
                     Pressure* out);

// The cgroup v2 path of /proc/self/cgroup ("0::/a/b" -> "/a/b"); empty when
// the file has no v2 line (cgroup v1 only).
StatusOr<std::optional<std::string>> ParseSelfCgroup(std::string_view text,
                                                     const std::string& path);

// cpu.max: "max 100000" (no quota) or "150000 100000".
struct CpuMax {
  std::optional<uint64_t> quota_us;
  uint64_t period_us = 0;
};
StatusOr<CpuMax> ParseCpuMax(std::string_view text, const std::string& path);

// memory.max: "max" (empty) or bytes.
StatusOr<std::optional<uint64_t>> ParseMemoryMax(std::string_view text,
                                                 const std::string& path);

// A file holding one unsigned number and a newline (memory.current).
StatusOr<uint64_t> ParseSingleNumber(std::string_view text,
                                     const std::string& path);

}  // namespace qm::sys::internal

#endif  // QM_SYS_PARSE_H_
