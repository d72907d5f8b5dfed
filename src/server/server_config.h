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
//
// Never the token itself: `qm token new` makes one and prints its entry.
#ifndef QM_SERVER_SERVER_CONFIG_H_
#define QM_SERVER_SERVER_CONFIG_H_

#include <string>
#include <vector>

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

struct ServerConfig {
  std::vector<TokenEntry> tokens;    // none: loopback clients only, as admin
  double rate_limit_per_second = 0;  // per token; 0 = unlimited
};

// Reads the `server:` section of a config file (absent: the defaults).
// INVALID_REQUEST naming the key ("server.auth.tokens[1].sha256: ...") for
// unknown keys, wrong types, a malformed digest, an unknown role, an agent
// without products, or two tokens with one name or one digest.
StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path);
StatusOr<ServerConfig> LoadServerConfigString(const std::string& yaml,
                                              const std::string& source);

// Lower-case hex SHA-256 of `text`.
std::string Sha256Hex(const std::string& text);

}  // namespace qm::server

#endif  // QM_SERVER_SERVER_CONFIG_H_
