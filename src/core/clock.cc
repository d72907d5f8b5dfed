#include "qm/clock.h"

#include <cctype>
#include <cstdio>

namespace qm {

Time SystemClock::Now() const {
  return std::chrono::time_point_cast<Duration>(
      std::chrono::system_clock::now());
}

SystemClock* SystemClock::Default() {
  static SystemClock clock;
  return &clock;
}

std::string FormatTime(Time t) {
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day ymd(day);
  const auto ms_of_day = (t - day).count();
  const long long secs = ms_of_day / 1000, ms = ms_of_day % 1000;
  char buf[64];
  if (ms == 0) {
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02lld:%02lld:%02lldZ",
                  int(ymd.year()), unsigned(ymd.month()), unsigned(ymd.day()),
                  secs / 3600, secs / 60 % 60, secs % 60);
  } else {
    std::snprintf(buf, sizeof buf,
                  "%04d-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
                  int(ymd.year()), unsigned(ymd.month()), unsigned(ymd.day()),
                  secs / 3600, secs / 60 % 60, secs % 60, ms);
  }
  return buf;
}

bool ParseTime(const std::string& s, Time* out) {
  using namespace std::chrono;
  int y, mo, d, h, mi, sec, n = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi,
                  &sec, &n) != 6 ||
      n != 19) {
    return false;
  }
  size_t pos = 19;
  long long ms = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (digits < 3) ms = ms * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return false;
    for (int i = digits; i < 3; ++i) ms *= 10;
  }
  const std::string rest = s.substr(pos);
  if (rest != "Z" && rest != "+00:00") return false;
  const year_month_day ymd{year(y), month(unsigned(mo)), day(unsigned(d))};
  if (!ymd.ok() || h > 23 || mi > 59 || sec > 59) return false;
  *out = Time(sys_days(ymd).time_since_epoch() +
              Duration(((h * 60LL + mi) * 60 + sec) * 1000 + ms));
  return true;
}

std::string FormatDuration(Duration d) {
  long long ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) {
    out = "-";
    ms = -ms;
  }
  struct Unit {
    long long ms;
    const char* name;
  };
  static constexpr Unit kUnits[] = {
      {86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
  for (const Unit& u : kUnits) {
    if (ms >= u.ms) {
      out += std::to_string(ms / u.ms) + u.name;
      ms %= u.ms;
    }
  }
  return out;
}

bool ParseDuration(const std::string& s, Duration* out) {
  // About 31,000 years: far beyond any lease, far below int64 overflow.
  constexpr long long kMaxMs = 1'000'000'000'000'000LL;
  if (s.empty()) return false;
  // A plain number is seconds.
  bool all_digits = true;
  for (char c : s)
    all_digits &= std::isdigit(static_cast<unsigned char>(c)) != 0;
  if (all_digits) {
    if (s.size() > 12) return false;
    *out = Duration(std::stoll(s) * 1000);
    return true;
  }
  // Units must come largest first, each at most once ("1h30m", not "30m1h").
  long long total = 0;
  long long last_unit = kMaxMs;
  size_t i = 0;
  while (i < s.size()) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    long long n = 0;
    size_t digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      n = n * 10 + (s[i] - '0');
      if (++digits > 12) return false;
      ++i;
    }
    long long unit;
    if (s.compare(i, 2, "ms") == 0) {
      unit = 1;
      i += 2;
    } else if (i < s.size() && s[i] == 's') {
      unit = 1000;
      ++i;
    } else if (i < s.size() && s[i] == 'm') {
      unit = 60000;
      ++i;
    } else if (i < s.size() && s[i] == 'h') {
      unit = 3600000;
      ++i;
    } else if (i < s.size() && s[i] == 'd') {
      unit = 86400000;
      ++i;
    } else {
      return false;
    }
    if (unit >= last_unit) return false;
    last_unit = unit;
    if (n > kMaxMs / unit) return false;
    total += n * unit;
    if (total > kMaxMs) return false;
  }
  *out = Duration(total);
  return true;
}

}  // namespace qm
