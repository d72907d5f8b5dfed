// Time, injected. The engine never reads the wall clock: it asks a Clock.
// Production code uses SystemClock; tests and the simulator use ManualClock.
#ifndef QM_CLOCK_H_
#define QM_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace qm {

using Duration = std::chrono::milliseconds;
// Milliseconds since the Unix epoch, UTC.
using Time = std::chrono::time_point<std::chrono::system_clock, Duration>;

class Clock {
 public:
  virtual ~Clock() = default;
  // Current time. Implementations must be safe to call from any thread.
  virtual Time Now() const = 0;
};

// The real wall clock.
class SystemClock final : public Clock {
 public:
  Time Now() const override;
  // A process-wide instance.
  static SystemClock* Default();
};

// A clock that moves only when told. Not thread-safe: owned by one test or
// one simulation.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(Time start = Time(Duration(0))) : now_(start) {}
  Time Now() const override { return now_; }
  void Set(Time t) { now_ = t; }
  void Advance(Duration d) { now_ += d; }

 private:
  Time now_;
};

// "2026-01-26T14:30:00Z" (milliseconds appended only when non-zero).
std::string FormatTime(Time t);
// Parses the RFC 3339 UTC form FormatTime writes ("Z" or "+00:00" offsets,
// optional fraction). False on anything else.
bool ParseTime(const std::string& text, Time* out);
// "1h30m", "45m", "30s", "250ms", "2d"; "0s" for zero.
std::string FormatDuration(Duration d);
// Parses the forms FormatDuration writes, also combined ("1h30m": units
// largest first, each once) and a plain number of seconds ("90"). False on
// anything else, negatives, or more than about 31,000 years.
bool ParseDuration(const std::string& text, Duration* out);

}  // namespace qm

#endif  // QM_CLOCK_H_
