// What every `qm` command shares to print its answer: the output format
// and the envelope printer. Private to src/cli.
#ifndef QM_CLI_OUTPUT_H_
#define QM_CLI_OUTPUT_H_

#include <chrono>
#include <ostream>
#include <string>

#include "api/json_codec.h"
#include "qm/clock.h"

namespace qm::cli {

// Exit codes: 0 ok, 1 an operation failed (envelope says why), 2 usage.
inline constexpr int kExitError = 1;

// Where and how a command prints its envelope.
struct Output {
  std::string format = "json";  // json | table | yaml (config show only)
  std::ostream* out = nullptr;

  // Prints `envelope` (as indented JSON, or RenderTable's text for
  // "table"); returns the exit code its status stands for. Text that is not
  // valid UTF-8 (a path, say) is printed with U+FFFD in its place.
  int Emit(const api::Json& envelope) const {
    if (format == "table") {
      *out << api::RenderTable(envelope);
    } else {
      *out << envelope.dump(2, ' ', false, api::Json::error_handler_t::replace)
           << '\n';
    }
    return envelope["status"] == "success" ? 0 : kExitError;
  }
};

// The envelope's timestamp: now, by the system clock.
inline Time Now() { return SystemClock::Default()->Now(); }

// The wall time elapsed since `t0`, for metrics.execution_time.
inline Duration Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() -
                                              t0);
}

}  // namespace qm::cli

#endif  // QM_CLI_OUTPUT_H_
