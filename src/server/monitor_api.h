// GET /v1/monitor/system (seed 000 `monitor system`): the machine's figures
// from the sampler's last reading, the engine's health and alerts, and the
// usage history with its trends. Kept apart from service.cc so the shape
// of this answer lives in one place.
//
// Thread safety: free functions.
#ifndef QM_SERVER_MONITOR_API_H_
#define QM_SERVER_MONITOR_API_H_

#include <nlohmann/json.hpp>

#include "qm/clock.h"
#include "qm/types.h"
#include "server/sampler.h"

namespace qm::server {

struct MonitorSystemQuery {
  // How much history (time_range). Default 1 h.
  Duration range = std::chrono::hours(1);
  bool include_trends = false;
  // "full" adds per-core utilisation and GPUs; "basic" (default) leaves
  // them out.
  bool full = false;
};

// The result object of the envelope. `snapshot_json` is the engine's
// snapshot as api::ToJson writes it (its health, alerts and pool are
// reused, not recomputed).
nlohmann::json MonitorSystemResult(const Sampler& sampler,
                                   const nlohmann::json& snapshot_json,
                                   const MonitorSystemQuery& query,
                                   double warning_threshold);

}  // namespace qm::server

#endif  // QM_SERVER_MONITOR_API_H_
