#include "sys/parse.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace qm::sys::internal {
namespace {

// Larger CPU numbers than this are taken for garbage (Linux's NR_CPUS tops
// out at 8192).
constexpr uint64_t kMaxCpuId = (1u << 20) - 1;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// The next line of *rest without its '\n'; *rest moves past it.
std::string_view NextLine(std::string_view* rest) {
  const size_t end = rest->find('\n');
  std::string_view line = rest->substr(0, end);
  rest->remove_prefix(end == std::string_view::npos ? rest->size() : end + 1);
  return line;
}

// The next blank-separated token of *rest ("" at the end).
std::string_view NextToken(std::string_view* rest) {
  while (!rest->empty() && IsSpace(rest->front())) rest->remove_prefix(1);
  size_t n = 0;
  while (n < rest->size() && !IsSpace((*rest)[n])) ++n;
  std::string_view token = rest->substr(0, n);
  rest->remove_prefix(n);
  return token;
}

bool ToU64(std::string_view s, uint64_t* v) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && end == s.data() + s.size();
}

bool ToDouble(std::string_view s, double* v) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v,
                                         std::chars_format::fixed);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string Quoted(std::string_view s) {
  constexpr size_t kMax = 40;
  std::string out = "\"";
  out.append(s.substr(0, kMax));
  if (s.size() > kMax) out += "...";
  out += '"';
  return out;
}

}  // namespace

Status Malformed(const std::string& path, std::string_view what) {
  std::string message = path;
  message += ": ";
  message += what;
  return Status(Code::kDataLoss, std::move(message)).AddContext("file", path);
}

Status ReadError(const std::string& path, int err) {
  std::string message = path + ": " + std::generic_category().message(err) +
                        " (errno " + std::to_string(err) + ")";
  return Status(err == ENOENT ? Code::kNotFound : Code::kUnavailable,
                std::move(message))
      .AddContext("file", path);
}

Status ParseStat(std::string_view text, const std::string& path,
                 StatSample* out) {
  out->cores.clear();
  bool seen_all = false;
  while (!text.empty()) {
    std::string_view line = NextLine(&text);
    if (line.substr(0, 3) != "cpu") break;
    std::string_view name = NextToken(&line);
    CpuTimes times;
    if (name != "cpu") {
      uint64_t id = 0;
      if (!ToU64(name.substr(3), &id) || id > kMaxCpuId) {
        return Malformed(path, "bad CPU line name " + Quoted(name));
      }
      times.cpu = static_cast<int>(id);
    }
    if ((times.cpu < 0) == seen_all) {
      return Malformed(path, seen_all ? "a second \"cpu\" line"
                                      : "the first line is not \"cpu\"");
    }
    seen_all = true;
    // user nice system idle iowait irq softirq steal guest guest_nice; the
    // fields after idle came with later kernels.
    uint64_t fields[10] = {};
    int n = 0;
    for (std::string_view token = NextToken(&line); !token.empty();
         token = NextToken(&line)) {
      if (n == 10) break;
      if (!ToU64(token, &fields[n])) {
        return Malformed(path,
                         std::string(name) + ": bad number " + Quoted(token));
      }
      ++n;
    }
    if (n < 4) {
      return Malformed(path, std::string(name) + ": " + std::to_string(n) +
                                 " numbers, expected at least 4");
    }
    times.idle = fields[3] + fields[4];
    for (int i = 0; i < 8; ++i) times.total += fields[i];
    if (times.cpu < 0) {
      out->all = times;
    } else {
      out->cores.push_back(times);
    }
  }
  if (!seen_all) return Malformed(path, "no \"cpu\" line");
  return Status::Ok();
}

std::optional<double> BusyShare(const CpuTimes& before, const CpuTimes& after) {
  if (after.total <= before.total) return std::nullopt;
  const uint64_t all = after.total - before.total;
  // iowait may go back on some kernels: clamp rather than trust it.
  const int64_t idle = static_cast<int64_t>(after.idle - before.idle);
  const uint64_t busy =
      idle <= 0 ? all : all - std::min(all, static_cast<uint64_t>(idle));
  return static_cast<double>(busy) / static_cast<double>(all);
}

StatusOr<int> ParseCpuList(std::string_view text, const std::string& path) {
  std::string_view list = Trim(text);
  if (list.empty()) return Malformed(path, "empty CPU list");
  uint64_t count = 0;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    list.remove_prefix(comma == std::string_view::npos ? list.size()
                                                       : comma + 1);
    const size_t dash = item.find('-');
    uint64_t first = 0;
    uint64_t last = 0;
    bool ok = ToU64(item.substr(0, dash), &first);
    if (dash == std::string_view::npos) {
      last = first;
    } else {
      ok = ok && ToU64(item.substr(dash + 1), &last);
    }
    if (!ok || first > last || last > kMaxCpuId) {
      return Malformed(path, "bad CPU range " + Quoted(item));
    }
    count += last - first + 1;
  }
  if (count > kMaxCpuId) return Malformed(path, "too many CPUs");
  return static_cast<int>(count);
}

Status ParseLoadavg(std::string_view text, const std::string& path,
                    CpuInfo* out) {
  double* const targets[] = {&out->load1, &out->load5, &out->load15};
  for (double* target : targets) {
    std::string_view token = NextToken(&text);
    if (!ToDouble(token, target)) {
      return Malformed(path, "bad load average " + Quoted(token));
    }
  }
  return Status::Ok();
}

Status ParseMeminfo(std::string_view text, const std::string& path,
                    MemoryInfo* out) {
  struct Field {
    std::string_view key;
    uint64_t* value;
    bool seen;
  };
  Field fields[] = {{"MemTotal", &out->total_bytes, false},
                    {"MemAvailable", &out->available_bytes, false},
                    {"SwapTotal", &out->swap_total_bytes, false},
                    {"SwapFree", &out->swap_free_bytes, false}};
  int seen = 0;
  while (!text.empty() && seen < 4) {
    std::string_view line = NextLine(&text);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view key = line.substr(0, colon);
    Field* field = nullptr;
    for (Field& f : fields) {
      if (f.key == key) field = &f;
    }
    if (field == nullptr || field->seen) continue;
    std::string_view rest = line.substr(colon + 1);
    const std::string_view number = NextToken(&rest);
    const std::string_view unit = NextToken(&rest);
    uint64_t kib = 0;
    if (!ToU64(number, &kib) || unit != "kB" || kib > (UINT64_MAX >> 10)) {
      return Malformed(path, std::string(key) +
                                 ": expected \"<number> kB\", "
                                 "found " +
                                 Quoted(Trim(line.substr(colon + 1))));
    }
    *field->value = kib << 10;
    field->seen = true;
    ++seen;
  }
  for (const Field& f : fields) {
    if (!f.seen) return Malformed(path, "no " + std::string(f.key) + " line");
  }
  return Status::Ok();
}

Status ParsePressure(std::string_view text, const std::string& path,
                     Pressure* out) {
  *out = Pressure();
  bool some = false;
  while (!text.empty()) {
    std::string_view line = NextLine(&text);
    if (Trim(line).empty()) continue;
    const std::string_view kind = NextToken(&line);
    if (kind != "some" && kind != "full") {
      return Malformed(path, "unknown line " + Quoted(kind));
    }
    PressureFigures figures;
    unsigned seen = 0;  // one bit per key
    for (std::string_view item = NextToken(&line); !item.empty();
         item = NextToken(&line)) {
      const size_t eq = item.find('=');
      const std::string_view key = item.substr(0, eq);
      const std::string_view value =
          eq == std::string_view::npos ? "" : item.substr(eq + 1);
      bool ok = true;  // keys of later kernels are skipped
      if (key == "avg10") {
        ok = ToDouble(value, &figures.avg10);
        seen |= 1;
      } else if (key == "avg60") {
        ok = ToDouble(value, &figures.avg60);
        seen |= 2;
      } else if (key == "avg300") {
        ok = ToDouble(value, &figures.avg300);
        seen |= 4;
      } else if (key == "total") {
        ok = ToU64(value, &figures.total_us);
        seen |= 8;
      }
      if (!ok) {
        return Malformed(path,
                         std::string(kind) + ": bad value " + Quoted(item));
      }
    }
    if (seen != 15) {
      return Malformed(path, std::string(kind) +
                                 ": expected avg10, avg60, avg300 and total");
    }
    if (kind == "some") {
      out->some = figures;
      some = true;
    } else {
      out->full = figures;
    }
  }
  if (!some) return Malformed(path, "no \"some\" line");
  out->available = true;
  return Status::Ok();
}

StatusOr<std::optional<std::string>> ParseSelfCgroup(std::string_view text,
                                                     const std::string& path) {
  while (!text.empty()) {
    const std::string_view line = NextLine(&text);
    if (line.substr(0, 3) != "0::") continue;
    const std::string_view cgroup = line.substr(3);
    if (cgroup.empty() || cgroup.front() != '/') {
      return Malformed(path, "bad cgroup v2 path " + Quoted(cgroup));
    }
    return std::optional<std::string>(std::string(cgroup));
  }
  return std::optional<std::string>();
}

StatusOr<CpuMax> ParseCpuMax(std::string_view text, const std::string& path) {
  std::string_view rest = text;
  const std::string_view quota = NextToken(&rest);
  const std::string_view period = NextToken(&rest);
  CpuMax max;
  uint64_t q = 0;
  const bool ok = (quota == "max" || ToU64(quota, &q)) &&
                  ToU64(period, &max.period_us) && max.period_us > 0 &&
                  Trim(rest).empty();
  if (!ok) {
    return Malformed(path,
                     "expected \"max <period>\" or \"<quota> "
                     "<period>\", found " +
                         Quoted(Trim(text)));
  }
  if (quota != "max") max.quota_us = q;
  return max;
}

StatusOr<std::optional<uint64_t>> ParseMemoryMax(std::string_view text,
                                                 const std::string& path) {
  const std::string_view value = Trim(text);
  if (value == "max") return std::optional<uint64_t>();
  uint64_t bytes = 0;
  if (!ToU64(value, &bytes)) {
    return Malformed(
        path, "expected \"max\" or a number of bytes, found " + Quoted(value));
  }
  return std::optional<uint64_t>(bytes);
}

StatusOr<uint64_t> ParseSingleNumber(std::string_view text,
                                     const std::string& path) {
  const std::string_view value = Trim(text);
  uint64_t n = 0;
  if (!ToU64(value, &n)) {
    return Malformed(path, "expected a number, found " + Quoted(value));
  }
  return n;
}

}  // namespace qm::sys::internal
