// The `server:` section of the config file: what `qm serve` itself needs
// (auth tokens and roles, rate limits) and the engine does not. The engine's
// loader skips this section, so it is not part of the state's recorded
// config: tokens can change without touching the state.
//
//   server:
//     auth:
//       tokens:
//         - name: ci-bot                 # shown as the actor of its actions
//           sha256: 9f86d0...            # SHA-256 of the token, 64 hex digits
//           role: agent                  # admin | operator | agent
//           products: [web, api]         # agent: the products it may touch
//     rate_limit_per_second: 200         # per token; 0 = no limit (default)
//     mcp:
//       allowed_origins:                 # Origins allowed to use /mcp
//         - http://localhost:*           # (default: loopback origins)
//     webhooks:
//       - url: http://alerts.internal:9000/qm   # POSTed each matching event
//         types: [budget_alert, circuit_tripped] # default: the alert types
//         product: web                          # default: every product
//         retries: 5                            # default 5 (backoff 0.5 s x2)
//
// Never the token itself: `qm token new` makes one and prints its entry.
#ifndef QM_SERVER_SERVER_CONFIG_H_
#define QM_SERVER_SERVER_CONFIG_H_

#include <optional>
#include <string>
#include <vector>

#include "qm/clock.h"
#include "qm/status.h"

namespace qm::server {

enum class Role { kAgent, kOperator, kAdmin };
const char* RoleName(Role r);

struct TokenEntry {
  std::string name;
  std::string sha256;  // lower-case hex
  Role role = Role::kAgent;
  // kAgent only: the products it may allocate in and see allocations of.
  std::vector<std::string> products;
};

// Where alerts (or any events) are POSTed as they happen.
struct WebhookEntry {
  std::string url;                 // http:// or https://
  std::vector<std::string> types;  // event type names; see DefaultAlertTypes
  std::string product;             // "" = every product
  int retries = 5;                 // further attempts after a failure
};

// The event types a webhook gets when it names none: the alerts (budget
// thresholds, breaker trips, starvation, conflicts, over-budget, preemption
// notices).
const std::vector<std::string>& DefaultAlertTypes();

// `server.detect`: the capacities of cpu_cores, memory_gb and storage_gb
// that the config file does not set are what this machine has (cgroup
// limits included) minus a buffer kept for everything else, and follow the
// machine while the server runs.
struct DetectConfig {
  bool enabled = true;
  // Kept back from what is detected, in the resource's unit.
  double cpu_cores_buffer = 0;
  double memory_gb_buffer = 2;  // seed 000's buffer_gb
  double storage_gb_buffer = 0;
  // How often the machine is looked at again (0: at start and reload only).
  Duration interval = std::chrono::seconds(30);
  // The filesystem root the readers look under ("/"; tests: a fixture
  // tree). Not a config key.
  std::string root = "/";
};

struct ServerConfig {
  std::vector<TokenEntry> tokens;    // none: loopback clients only, as admin
  double rate_limit_per_second = 0;  // per token; 0 = unlimited
  std::vector<WebhookEntry> webhooks;
  DetectConfig detect;
  // `server.mcp.allowed_origins`: the browser origins (an `Origin`
  // header) allowed to use /mcp ("http://localhost:*", exact origins, or
  // "*"); unset: loopback origins only (mcp::DefaultAllowedOrigins).
  std::optional<std::vector<std::string>> mcp_allowed_origins;
  // Of cpu_cores, memory_gb and storage_gb, those the file's `resources`
  // sets: they are never replaced by what is detected.
  std::vector<std::string> fixed_resources;
};

// Reads the `server:` section of a config file (absent: the defaults).
// INVALID_REQUEST naming the key ("server.auth.tokens[1].sha256: ...") for
// unknown keys, wrong types, a malformed digest, an unknown role, an agent
// without products, two tokens with one name or one digest, a webhook URL
// that is not http(s)://, or an unknown event type.
StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path);
StatusOr<ServerConfig> LoadServerConfigString(const std::string& yaml,
                                              const std::string& source);

// Lower-case hex SHA-256 of `text`.
std::string Sha256Hex(const std::string& text);

}  // namespace qm::server

#endif  // QM_SERVER_SERVER_CONFIG_H_
