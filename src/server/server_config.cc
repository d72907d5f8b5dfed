#include "server/server_config.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "qm/types.h"

namespace qm::server {
namespace {

std::string Where(const std::string& source, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  if (m.line < 0) return source + ": ";
  return source + ":" + std::to_string(m.line + 1) + ":" +
         std::to_string(m.column + 1) + ": ";
}

Status CheckKeys(const std::string& source, const YAML::Node& n,
                 const std::string& path,
                 const std::vector<std::string>& allowed) {
  if (!n.IsMap()) {
    return InvalidRequest(Where(source, n) + path + ": must be a mapping");
  }
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (const std::string& a : allowed)
        list += (list.empty() ? "" : ", ") + a;
      return InvalidRequest(Where(source, kv.first) + path + "." + key +
                            ": unknown key (known: " + list + ")");
    }
  }
  return {};
}

// Every event type name (the engine's EventTypeName values).
bool KnownEventType(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(kLastEventType); ++i) {
    if (name == EventTypeName(static_cast<EventType>(i))) return true;
  }
  return false;
}

Status ParseWebhooks(const YAML::Node& hooks, const std::string& source,
                     ServerConfig* out) {
  if (!hooks || hooks.IsNull()) return {};
  if (!hooks.IsSequence()) {
    return InvalidRequest(Where(source, hooks) +
                          "server.webhooks: must be a list");
  }
  for (size_t i = 0; i < hooks.size(); ++i) {
    const YAML::Node h = hooks[i];
    const std::string path = "server.webhooks[" + std::to_string(i) + "]";
    QM_RETURN_IF_ERROR(
        CheckKeys(source, h, path, {"url", "types", "product", "retries"}));
    WebhookEntry w;
    const YAML::Node url = h["url"];
    if (!url || !url.IsScalar() ||
        (url.Scalar().rfind("http://", 0) != 0 &&
         url.Scalar().rfind("https://", 0) != 0)) {
      return InvalidRequest(Where(source, url ? url : h) + path +
                            ".url: required, an http:// or https:// URL");
    }
    w.url = url.Scalar();
    if (const YAML::Node t = h["types"]) {
      if (!t.IsSequence()) {
        return InvalidRequest(Where(source, t) + path +
                              ".types: must be a list of event types");
      }
      for (const auto& name : t) {
        if (!name.IsScalar() || !KnownEventType(name.Scalar())) {
          return InvalidRequest(
              Where(source, name) + path + ".types: unknown event type \"" +
              (name.IsScalar() ? name.Scalar() : std::string("?")) +
              "\" (see docs/api.md, \"Events\")");
        }
        w.types.push_back(name.Scalar());
      }
    } else {
      w.types = DefaultAlertTypes();
    }
    if (const YAML::Node p = h["product"]) {
      if (!p.IsScalar()) {
        return InvalidRequest(Where(source, p) + path +
                              ".product: must be a product name");
      }
      w.product = p.Scalar();
    }
    if (const YAML::Node r = h["retries"]) {
      int v = -1;
      if (!r.IsScalar() || !YAML::convert<int>::decode(r, v) || v < 0 ||
          v > 20) {
        return InvalidRequest(Where(source, r) + path +
                              ".retries: a whole number from 0 to 20");
      }
      w.retries = v;
    }
    out->webhooks.push_back(std::move(w));
  }
  return {};
}

Status ParseDetect(const YAML::Node& d, const std::string& source,
                   DetectConfig* out) {
  if (!d || d.IsNull()) return {};
  QM_RETURN_IF_ERROR(CheckKeys(source, d, "server.detect",
                               {"enabled", "interval", "buffers"}));
  if (const YAML::Node e = d["enabled"]) {
    if (!e.IsScalar() || !YAML::convert<bool>::decode(e, out->enabled)) {
      return InvalidRequest(Where(source, e) +
                            "server.detect.enabled: true or false");
    }
  }
  if (const YAML::Node i = d["interval"]) {
    Duration v{};
    if (!i.IsScalar() || !ParseDuration(i.Scalar(), &v) || v.count() < 0 ||
        (v.count() > 0 && v < std::chrono::seconds(1))) {
      return InvalidRequest(Where(source, i) +
                            "server.detect.interval: a duration of at least "
                            "1s (e.g. 30s), or 0 to detect at start only");
    }
    out->interval = v;
  }
  const YAML::Node b = d["buffers"];
  if (!b || b.IsNull()) return {};
  QM_RETURN_IF_ERROR(CheckKeys(source, b, "server.detect.buffers",
                               {"cpu_cores", "memory_gb", "storage_gb"}));
  for (auto [key, field] : {std::pair{"cpu_cores", &out->cpu_cores_buffer},
                            std::pair{"memory_gb", &out->memory_gb_buffer},
                            std::pair{"storage_gb", &out->storage_gb_buffer}}) {
    const YAML::Node v = b[key];
    if (!v) continue;
    double x = -1;
    if (!v.IsScalar() || !YAML::convert<double>::decode(v, x) || x < 0 ||
        x > 1e9) {
      return InvalidRequest(Where(source, v) + "server.detect.buffers." + key +
                            ": a number >= 0");
    }
    *field = x;
  }
  return {};
}

Status ParseMcp(const YAML::Node& m, const std::string& source,
                ServerConfig* out) {
  if (!m || m.IsNull()) return {};
  QM_RETURN_IF_ERROR(CheckKeys(source, m, "server.mcp", {"allowed_origins"}));
  const YAML::Node o = m["allowed_origins"];
  if (!o || o.IsNull()) return {};
  const std::string what =
      "server.mcp.allowed_origins: a list of origins (\"http://localhost:*\", "
      "\"https://app.example.com\", or \"*\" for any)";
  if (!o.IsSequence()) return InvalidRequest(Where(source, o) + what);
  std::vector<std::string> origins;
  for (const auto& e : o) {
    if (!e.IsScalar() || e.Scalar().empty() ||
        (e.Scalar() != "*" && e.Scalar().find("://") == std::string::npos) ||
        e.Scalar().find_first_of(" \t/", e.Scalar().find("://") + 3) !=
            std::string::npos) {
      return InvalidRequest(Where(source, e) + what + ", got \"" +
                            (e.IsScalar() ? e.Scalar() : std::string("?")) +
                            "\"");
    }
    origins.push_back(e.Scalar());
  }
  out->mcp_allowed_origins = std::move(origins);
  return {};
}

StatusOr<ServerConfig> Parse(const YAML::Node& root,
                             const std::string& source) {
  ServerConfig out;
  if (root && root.IsMap() && root["resources"] && root["resources"].IsMap()) {
    for (const char* name : {"cpu_cores", "memory_gb", "storage_gb"}) {
      if (root["resources"][name]) out.fixed_resources.push_back(name);
    }
  }
  if (!root || !root.IsMap() || !root["server"]) return out;
  const YAML::Node server = root["server"];
  if (server.IsNull()) return out;
  QM_RETURN_IF_ERROR(CheckKeys(
      source, server, "server",
      {"auth", "rate_limit_per_second", "webhooks", "detect", "mcp"}));
  QM_RETURN_IF_ERROR(ParseDetect(server["detect"], source, &out.detect));
  QM_RETURN_IF_ERROR(ParseMcp(server["mcp"], source, &out));
  QM_RETURN_IF_ERROR(ParseWebhooks(server["webhooks"], source, &out));
  if (const YAML::Node r = server["rate_limit_per_second"]) {
    double v = -1;
    if (!r.IsScalar() || !YAML::convert<double>::decode(r, v) || v < 0) {
      return InvalidRequest(Where(source, r) +
                            "server.rate_limit_per_second: a number >= 0 "
                            "(0 = no limit)");
    }
    out.rate_limit_per_second = v;
  }
  const YAML::Node auth = server["auth"];
  if (!auth || auth.IsNull()) return out;
  QM_RETURN_IF_ERROR(CheckKeys(source, auth, "server.auth", {"tokens"}));
  const YAML::Node tokens = auth["tokens"];
  if (!tokens || tokens.IsNull()) return out;
  if (!tokens.IsSequence()) {
    return InvalidRequest(Where(source, tokens) +
                          "server.auth.tokens: must be a list");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    const YAML::Node t = tokens[i];
    const std::string path = "server.auth.tokens[" + std::to_string(i) + "]";
    QM_RETURN_IF_ERROR(
        CheckKeys(source, t, path, {"name", "sha256", "role", "products"}));
    TokenEntry e;
    auto text = [&](const char* key, std::string* v) -> Status {
      const YAML::Node n = t[key];
      if (!n || !n.IsScalar() || n.Scalar().empty()) {
        return InvalidRequest(Where(source, n ? n : t) + path + "." + key +
                              ": required text");
      }
      *v = n.Scalar();
      return {};
    };
    QM_RETURN_IF_ERROR(text("name", &e.name));
    QM_RETURN_IF_ERROR(text("sha256", &e.sha256));
    std::transform(e.sha256.begin(), e.sha256.end(), e.sha256.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (e.sha256.size() != 64 ||
        e.sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return InvalidRequest(Where(source, t["sha256"]) + path +
                            ".sha256: must be the token's SHA-256 as 64 hex "
                            "digits (`qm token new` prints one), never the "
                            "token itself");
    }
    std::string role;
    QM_RETURN_IF_ERROR(text("role", &role));
    if (role == "admin") {
      e.role = Role::kAdmin;
    } else if (role == "operator") {
      e.role = Role::kOperator;
    } else if (role == "agent") {
      e.role = Role::kAgent;
    } else {
      return InvalidRequest(Where(source, t["role"]) + path +
                            ".role: admin, operator or agent, got \"" + role +
                            "\"");
    }
    if (const YAML::Node p = t["products"]) {
      if (!p.IsSequence()) {
        return InvalidRequest(Where(source, p) + path +
                              ".products: must be a list of product names");
      }
      for (const auto& name : p) {
        if (!name.IsScalar() || name.Scalar().empty()) {
          return InvalidRequest(Where(source, name) + path +
                                ".products: must be a list of product names");
        }
        e.products.push_back(name.Scalar());
      }
    }
    if (e.role == Role::kAgent && e.products.empty()) {
      return InvalidRequest(Where(source, t) + path +
                            ".products: an agent token needs the products it "
                            "may work in");
    }
    for (const TokenEntry& o : out.tokens) {
      if (o.name == e.name) {
        return InvalidRequest(Where(source, t) + path + ".name: \"" + e.name +
                              "\" is used by another token");
      }
      if (o.sha256 == e.sha256) {
        return InvalidRequest(Where(source, t) + path +
                              ".sha256: the same digest as token \"" + o.name +
                              "\"");
      }
    }
    out.tokens.push_back(std::move(e));
  }
  return out;
}

}  // namespace

const std::vector<std::string>& DefaultAlertTypes() {
  static const std::vector<std::string> kTypes = {
      "budget_alert", "circuit_tripped",   "starvation", "conflict_detected",
      "over_budget",  "preemption_notice", "alert",      "reclaim_requested"};
  return kTypes;
}

const char* RoleName(Role r) {
  switch (r) {
    case Role::kAgent:
      return "agent";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

StatusOr<ServerConfig> LoadServerConfigString(const std::string& yaml,
                                              const std::string& source) {
  try {
    return Parse(YAML::Load(yaml), source);
  } catch (const YAML::Exception& e) {
    return InvalidRequest(source + ": " + e.what());
  }
}

StatusOr<ServerConfig> LoadServerConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read config file " + path);
  std::stringstream text;
  text << in.rdbuf();
  return LoadServerConfigString(text.str(), path);
}

std::string Sha256Hex(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

}  // namespace qm::server
