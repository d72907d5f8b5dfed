// docs/openapi.yaml against the server: every route of Service::Routes() is
// documented (and nothing else is), and a running server (the real App on
// SQLite in a temporary directory, HTTP on port 0) answers every documented
// operation with a documented status, media type and body shape.
//
// The body check is a small recursive checker of the spec's schemas (type,
// required, properties, additionalProperties, items, enum of strings,
// nullable, allOf / oneOf / anyOf, $ref): enough to catch drift between the
// docs and the ToJson functions, not a full JSON Schema validator.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "qm/config_loader.h"
#include "server/app.h"
#include "server/http_client.h"
#include "server/service.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr const char* kSpecPath = QM_SOURCE_DIR "/docs/openapi.yaml";

// ---------------------------------------------------------------- the spec

YAML::Node LoadSpec() { return YAML::LoadFile(kSpecPath); }

// `n[key]` without the non-const operator[] (which may add the key).
YAML::Node Child(const YAML::Node& n, const std::string& key) {
  if (!n || !n.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  const YAML::Node& c = n;
  return c[key];
}

// Follows `$ref`s ("#/components/schemas/X") from `n`; an undefined node
// when one does not resolve. (Node::reset, not operator=: assigning a
// Node writes through to the node it refers to.)
YAML::Node Resolve(const YAML::Node& root, const YAML::Node& n) {
  if (!n) return YAML::Node(YAML::NodeType::Undefined);
  YAML::Node cur;
  cur.reset(n);
  for (int hops = 0; cur && cur.IsMap() && Child(cur, "$ref"); ++hops) {
    const std::string ref = Child(cur, "$ref").as<std::string>();
    if (hops > 32 || ref.rfind("#/", 0) != 0) {
      return YAML::Node(YAML::NodeType::Undefined);
    }
    YAML::Node at;
    at.reset(root);
    size_t start = 2;
    while (start <= ref.size()) {
      const size_t slash = ref.find('/', start);
      const size_t end = slash == std::string::npos ? ref.size() : slash;
      YAML::Node next = Child(at, ref.substr(start, end - start));
      if (!next) return YAML::Node(YAML::NodeType::Undefined);
      at.reset(next);
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
    cur.reset(at);
  }
  return cur;
}

// Every `$ref` anywhere under `n` that does not resolve.
void UnresolvedRefs(const YAML::Node& root, const YAML::Node& n,
                    std::vector<std::string>* out) {
  if (n.IsMap()) {
    if (YAML::Node ref = Child(n, "$ref")) {
      if (!Resolve(root, n)) out->push_back(ref.as<std::string>());
    }
    for (auto it = n.begin(); it != n.end(); ++it) {
      UnresolvedRefs(root, it->second, out);
    }
  } else if (n.IsSequence()) {
    for (const YAML::Node& c : n) UnresolvedRefs(root, c, out);
  }
}

struct Operation {
  std::string method;  // "GET"
  std::string path;    // "/v1/allocations/{id}"
  YAML::Node node;
  std::string Key() const { return method + " " + path; }
};

std::vector<Operation> Operations(const YAML::Node& spec) {
  std::vector<Operation> out;
  const YAML::Node paths = Child(spec, "paths");
  for (auto p = paths.begin(); p != paths.end(); ++p) {
    for (auto m = p->second.begin(); m != p->second.end(); ++m) {
      std::string method = m->first.as<std::string>();
      if (method == "parameters" || method == "summary" ||
          method == "description" || method == "servers") {
        continue;
      }
      for (char& ch : method) ch = static_cast<char>(std::toupper(ch));
      YAML::Node op;
      op.reset(m->second);
      out.push_back({method, p->first.as<std::string>(), op});
    }
  }
  return out;
}

// The only media type of a response or request body, and its entry.
std::pair<std::string, YAML::Node> Media(const YAML::Node& root,
                                         const YAML::Node& holder) {
  const YAML::Node content = Child(Resolve(root, holder), "content");
  if (!content || !content.IsMap() || content.size() == 0) {
    return {"", YAML::Node(YAML::NodeType::Undefined)};
  }
  YAML::Node media;
  media.reset(content.begin()->second);
  return {content.begin()->first.as<std::string>(), media};
}

std::string MediaTypeOf(const std::string& content_type) {
  std::string t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && t.back() == ' ') t.pop_back();
  return t;
}

// ---------------------------------------------------------------- checker

bool TypeMatches(const std::string& type, const Json& v) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "boolean") return v.is_boolean();
  if (type == "integer") return v.is_number_integer();
  if (type == "number") return v.is_number();
  return false;
}

// Appends to `errors` where `v` does not fit `schema`.
void Check(const YAML::Node& root, const YAML::Node& schema_in, const Json& v,
           const std::string& where, std::vector<std::string>* errors) {
  const YAML::Node s = Resolve(root, schema_in);
  if (!s) {
    errors->push_back(where + ": the schema does not resolve");
    return;
  }
  if (!s.IsMap()) return;
  const YAML::Node nullable = Child(s, "nullable");
  if (v.is_null() && nullable && nullable.as<bool>()) return;
  if (const YAML::Node all = Child(s, "allOf")) {
    for (const YAML::Node& sub : all) Check(root, sub, v, where, errors);
  }
  for (const char* key : {"oneOf", "anyOf"}) {
    const YAML::Node any = Child(s, key);
    if (!any) continue;
    bool fits = false;
    for (const YAML::Node& sub : any) {
      std::vector<std::string> e;
      Check(root, sub, v, where, &e);
      if (e.empty()) {
        fits = true;
        break;
      }
    }
    if (!fits) {
      errors->push_back(where + ": fits none of " + key + " (" + v.dump() +
                        ")");
    }
  }
  const YAML::Node type = Child(s, "type");
  if (v.is_null()) {
    if (type) {
      errors->push_back(where + ": null, documented as a " +
                        type.as<std::string>() + " that is not nullable");
    }
    return;
  }
  if (type && !TypeMatches(type.as<std::string>(), v)) {
    errors->push_back(where + ": documented as " + type.as<std::string>() +
                      ", got " + v.dump().substr(0, 200));
    return;
  }
  if (const YAML::Node e = Child(s, "enum"); e && v.is_string()) {
    bool listed = false;
    for (const YAML::Node& item : e) {
      if (item.IsScalar() && !item.IsNull() &&
          item.as<std::string>() == v.get<std::string>()) {
        listed = true;
      }
    }
    if (!listed) {
      errors->push_back(where + ": \"" + v.get<std::string>() +
                        "\" is not in the documented enum");
    }
  }
  if (v.is_object()) {
    if (const YAML::Node req = Child(s, "required")) {
      for (const YAML::Node& r : req) {
        if (!v.contains(r.as<std::string>())) {
          errors->push_back(where + ": lacks required property " +
                            r.as<std::string>());
        }
      }
    }
    const YAML::Node props = Child(s, "properties");
    const YAML::Node extra = Child(s, "additionalProperties");
    for (const auto& [key, value] : v.items()) {
      const std::string at = where + "." + key;
      if (YAML::Node p = Child(props, key)) {
        Check(root, p, value, at, errors);
      } else if (extra && extra.IsMap()) {
        Check(root, extra, value, at, errors);
      } else if (extra && extra.IsScalar() && !extra.as<bool>()) {
        errors->push_back(at + ": not a documented property");
      }
    }
  }
  if (v.is_array()) {
    if (const YAML::Node items = Child(s, "items")) {
      for (size_t i = 0; i < v.size(); ++i) {
        Check(root, items, v[i], where + "[" + std::to_string(i) + "]", errors);
      }
    }
  }
}

// The property names a schema documents, through allOf.
void DocumentedProperties(const YAML::Node& root, const YAML::Node& schema_in,
                          std::set<std::string>* out) {
  const YAML::Node s = Resolve(root, schema_in);
  if (!s || !s.IsMap()) return;
  if (const YAML::Node props = Child(s, "properties")) {
    for (auto it = props.begin(); it != props.end(); ++it) {
      out->insert(it->first.as<std::string>());
    }
  }
  if (const YAML::Node all = Child(s, "allOf")) {
    for (const YAML::Node& sub : all) DocumentedProperties(root, sub, out);
  }
}

std::string JoinErrors(const std::vector<std::string>& errors) {
  std::string out;
  for (const std::string& e : errors) out += "\n  " + e;
  return out;
}

// ---------------------------------------------------------------- server

using testing::TempDir;

// A few agents, a token budget for backend engineers (so that extend has
// something to extend) and a period token limit (so that override_limits
// has something to raise).
constexpr const char* kConfig = R"(
max_concurrent:
  total: 64
  per_type:
    backend-engineer: 32
token_budgets:
  backend-engineer: 10000
daily_limits:
  max_tokens_total: 100000000
)";

// A request for one documented operation.
struct Req {
  std::string target;
  std::string body;
  Headers headers;
};
// How to call an operation: `make` builds the request (creating what it
// names first), `want` is the status expected of that valid request, and
// `after` undoes what it changed that would disturb the next operations.
struct Example {
  Example() = default;
  Example(std::function<Req()> m, int w = 200,
          std::function<void()> a = nullptr)
      : make(std::move(m)), want(w), after(std::move(a)) {}
  std::function<Req()> make;
  int want = 200;
  std::function<void()> after;
};

class OpenApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = LoadSpec();
    app_ = testing::StartApp(dir_.path(), kConfig);
    ASSERT_TRUE(app_);
    url_ = "http://" + app_->address();
  }
  void TearDown() override {
    if (app_) {
      EXPECT_TRUE(app_->Stop(std::chrono::seconds(5)).ok());
    }
  }

  HttpClient Client() { return testing::ClientOf(url_); }
  StatusOr<HttpResponse> Send(const std::string& method, const Req& r) {
    HttpClient c = Client();
    return c.Call(method, r.target, r.body, std::chrono::seconds(30),
                  r.headers);
  }
  // A call that must succeed; its envelope's result.
  Json MustCall(const std::string& method, const std::string& target,
                const std::string& body = "") {
    auto r = Send(method, {target, body, {}});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return Json();
    EXPECT_EQ(r->status, 200) << method << " " << target << ": " << r->body;
    Json j = Json::parse(r->body, nullptr, false);
    return j.is_object() ? j["result"] : Json();
  }

  // An allocation of `workflow` (unique unless given), with `extra` JSON
  // members; its result.
  Json Allocate(const std::string& extra = "", std::string workflow = "") {
    if (workflow.empty()) workflow = "wf-" + std::to_string(++serial_);
    return MustCall("POST", "/v1/allocations",
                    R"({"workflow_id": ")" + workflow +
                        R"(", "product": "web", "agent_type": )"
                        R"("backend-engineer")" +
                        extra + "}");
  }
  std::string ActiveId() {
    return Allocate()["allocation_id"].get<std::string>();
  }
  // A fresh path for locks.
  std::string NewPath() { return "src/f" + std::to_string(++serial_) + ".cc"; }
  // Two allocations wanting `path` exclusively: the first holds it, the
  // second queues for it. Returns {holder, waiter}.
  std::pair<Json, Json> LockPair(const std::string& path) {
    const std::string lock = R"(, "exclusive_access": [")" + path + "\"]";
    Json holder = Allocate(lock);
    Json waiter = Allocate(lock);
    EXPECT_EQ(holder["status"], "active") << holder.dump();
    EXPECT_EQ(waiter["status"], "queued") << waiter.dump();
    return {holder, waiter};
  }
  // The id of the open conflict a queued lock waiter registered.
  std::string NewConflict() {
    auto [holder, waiter] = LockPair(NewPath());
    Json list = MustCall("GET", "/v1/conflicts");
    for (const Json& c : list["conflicts"]) {
      if (c.value("waiter", "") == waiter["allocation_id"] &&
          c.value("status", "") == "open") {
        return c["id"].get<std::string>();
      }
    }
    ADD_FAILURE() << "no open conflict for " << waiter.dump() << " in "
                  << list.dump();
    return "conf_0";
  }
  std::string NewReservation() {
    const std::string id = "res-" + std::to_string(++serial_);
    MustCall("POST", "/v1/reservations",
             R"({"reservation_id": ")" + id +
                 R"(", "workflow_id": "release", "start_time": "+1h",)"
                 R"( "duration": "30m", "resources": {"agents": 1}})");
    return id;
  }

  // A valid request for every documented operation, by "METHOD path".
  std::map<std::string, Example> Examples() {
    auto fixed = [](std::string target, std::string body = "") {
      return [target, body] { return Req{target, body, {}}; };
    };
    auto on_alloc = [this](std::string suffix, std::string body) {
      return [this, suffix, body] {
        return Req{"/v1/allocations/" + ActiveId() + suffix, body, {}};
      };
    };
    std::map<std::string, Example> e;
    e["GET /"] = {fixed("/")};
    e["GET /dashboard/{file}"] = {fixed("/dashboard/app.js")};
    e["GET /healthz"] = {fixed("/healthz")};
    e["GET /readyz"] = {fixed("/readyz")};
    e["GET /metrics"] = {fixed("/metrics")};
    e["POST /v1/allocations"] = {
        fixed("/v1/allocations",
              R"({"workflow_id": "feature-a", "product": "web",)"
              R"( "agent_type": "backend-engineer", "priority": "high",)"
              R"( "estimated_minutes": 30, "resources": {"agents": 1},)"
              R"( "metadata": {"ticket": 42}, "idempotency_key": "k-1",)"
              R"( "wait": 1})")};
    e["GET /v1/allocations"] = {
        fixed("/v1/allocations?status=active,queued&product=web"
              "&agent_type=backend-engineer&limit=5")};
    e["POST /v1/allocations/batch"] = {fixed(
        "/v1/allocations/batch",
        R"({"requests": [{"workflow_id": "b1", "agent_type": "reviewer"},)"
        R"( {"workflow_id": "b2", "agent_type": "reviewer"}],)"
        R"( "all_or_nothing": true})")};
    e["GET /v1/allocations/{id}"] = {on_alloc("?wait=0.1", "")};
    e["POST /v1/allocations/{id}/renew"] = {
        on_alloc("/renew", R"({"ttl": "10m"})")};
    e["POST /v1/allocations/{id}/heartbeat"] = {on_alloc("/heartbeat", "")};
    e["POST /v1/allocations/{id}/release"] = {on_alloc(
        "/release", R"({"usage": {"report_id": "last", "tokens": 1200,)"
                    R"( "outcome": "success"}})")};
    e["POST /v1/allocations/{id}/reallocate"] = {
        on_alloc("/reallocate", R"({"resources": {"agents": 1}})")};
    e["POST /v1/allocations/{id}/cancel"] = {[this] {
      auto [holder, waiter] = LockPair(NewPath());
      return Req{"/v1/allocations/" +
                     waiter["allocation_id"].get<std::string>() + "/cancel",
                 R"({"reason": "not needed"})",
                 {}};
    }};
    e["POST /v1/allocations/{id}/usage"] = {on_alloc(
        "/usage",
        R"({"report_id": "r1", "input_tokens": 100, "output_tokens": 50})")};
    e["POST /v1/allocations/{id}/extend"] = {
        on_alloc("/extend", R"({"max_tokens": 12000})")};
    e["GET /v1/queue"] = {fixed("/v1/queue")};
    e["GET /v1/status"] = {fixed("/v1/status")};
    e["GET /v1/status/{resource}"] = {
        fixed("/v1/status/agents?time_range=1h&group_by=specialization"
              "&include_performance=true")};
    e["GET /v1/usage/{workflow_id}"] = {[this] {
      const std::string id = Allocate(R"(, "metadata": {"phase": "build"})",
                                      "wf-usage")["allocation_id"];
      MustCall("POST", "/v1/allocations/" + id + "/release",
               R"({"usage": {"tokens": 10}})");
      Allocate("", "wf-other");
      return Req{
          "/v1/usage/wf-usage?breakdown_by_phase=true"
          "&include_efficiency=true&compare_baseline=true",
          "",
          {}};
    }};
    e["GET /v1/capacity"] = {fixed("/v1/capacity")};
    e["GET /v1/monitor/system"] = {
        fixed("/v1/monitor/system?time_range=1h&include_trends=true&"
              "detail_level=full")};
    e["GET /v1/costs"] = {fixed("/v1/costs")};
    e["GET /v1/analytics"] = {fixed("/v1/analytics")};
    e["GET /v1/conflicts"] = {[this] {
      NewConflict();
      return Req{"/v1/conflicts", "", {}};
    }};
    e["POST /v1/conflicts/check"] = {[this] {
      auto [holder, waiter] = LockPair(NewPath());
      return Req{"/v1/conflicts/check",
                 R"({"proposed_allocation": {"workflow_id": "x",)"
                 R"( "files": [")" +
                     holder["locks"][0]["path"].get<std::string>() +
                     R"("]}, "check_future": true, "time_horizon": "1h"})",
                 {}};
    }};
    e["POST /v1/conflicts/{id}/resolve"] = {[this] {
      return Req{"/v1/conflicts/" + NewConflict() + "/resolve",
                 R"({"strategy": "queue_and_serialize", "reason": "in turn"})",
                 {}};
    }};
    e["POST /v1/conflicts/policy"] = {
        fixed("/v1/conflicts/policy",
              R"({"policy_type": "file_locking", "scope": "docs",)"
              R"( "enforcement": "advisory",)"
              R"( "exceptions": ["read_only_operations"], "reason": "r"})")};
    e["POST /v1/locks/verify"] = {[this] {
      const std::string path = NewPath();
      Json a = Allocate(R"(, "exclusive_access": [")" + path + "\"]");
      return Req{"/v1/locks/verify",
                 R"({"path": ")" + path + R"(", "token": )" +
                     std::to_string(a["fencing_token"].get<uint64_t>()) + "}",
                 {}};
    }};
    e["POST /v1/reservations"] = {fixed(
        "/v1/reservations",
        R"({"workflow_id": "release", "product": "web", "priority": "high",)"
        R"( "start_time": "+2h", "duration": "1h", "resources": {"agents": 2},)"
        R"( "recurrence": "daily", "until": "+72h", "metadata": {"a": 1}})")};
    e["GET /v1/reservations"] = {[this] {
      NewReservation();
      return Req{"/v1/reservations", "", {}};
    }};
    e["GET /v1/reservations/{id}"] = {[this] {
      return Req{"/v1/reservations/" + NewReservation(), "", {}};
    }};
    e["POST /v1/reservations/{id}/cancel"] = {[this] {
      return Req{"/v1/reservations/" + NewReservation() + "/cancel",
                 R"({"reason": "moved"})",
                 {}};
    }};
    e["POST /v1/overrides/pause"] = {
        fixed("/v1/overrides/pause", R"({"reason": "incident"})"), 200,
        [this] { MustCall("POST", "/v1/overrides/resume"); }};
    e["POST /v1/overrides/resume"] = {
        fixed("/v1/overrides/resume", R"({"reason": "over"})")};
    // The breaker is closed: overriding it is documented as 409.
    e["POST /v1/overrides/breaker"] = {
        fixed("/v1/overrides/breaker", R"({"reason": "ok"})"), 409};
    e["POST /v1/overrides/priority"] = {
        fixed("/v1/overrides/priority",
              R"({"product": "web", "level": "high", "reason": "launch"})")};
    e["POST /v1/overrides/limits"] = {
        fixed("/v1/overrides/limits",
              R"({"max_tokens": 200000000, "max_cost_usd": null,)"
              R"( "reason": "launch"})")};
    e["GET /v1/config"] = {fixed("/v1/config")};
    // This server runs without a --config file: nothing to reload (the
    // 200 answer: ServeProcessTest.ConfigReloadBySighupByApiAndAtRestart).
    e["POST /v1/config/reload"] = {fixed("/v1/config/reload"), 409};
    e["GET /v1/events"] = {
        fixed("/v1/events?after=0&types=granted,queued&product=web")};
    e["GET /v1/monitor"] = {fixed("/v1/monitor?interval=1&product=web")};
    // MCP (its own protocol): initialize opens a session; the stream and
    // DELETE name one.
    e["POST /mcp"] = {[] { return Req{"/mcp", kMcpInitialize, McpHeaders()}; }};
    e["GET /mcp"] = {[this] {
      Headers h = McpHeaders(OpenMcpSession());
      h.emplace_back("Accept", "text/event-stream");
      return Req{"/mcp", "", h};
    }};
    e["DELETE /mcp"] = {[this] {
      return Req{"/mcp", "", McpHeaders(OpenMcpSession())};
    }};
    return e;
  }

  static constexpr const char* kMcpInitialize =
      R"({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params":)"
      R"( {"protocolVersion": "2025-06-18", "capabilities": {},)"
      R"( "clientInfo": {"name": "openapi_test", "version": "1"}}})";
  // The headers of an MCP client (of a session, when given).
  static Headers McpHeaders(const std::string& session = "") {
    Headers h = {{"Content-Type", "application/json"}};
    if (!session.empty()) {
      h.emplace_back("Mcp-Session-Id", session);
      h.emplace_back("MCP-Protocol-Version", "2025-06-18");
    } else {
      h.emplace_back("Accept", "application/json, text/event-stream");
    }
    return h;
  }
  // A new MCP session's id.
  std::string OpenMcpSession() {
    auto r = Send("POST", {"/mcp", kMcpInitialize, McpHeaders()});
    EXPECT_TRUE(r.ok() && r->status == 200);
    if (!r.ok()) return "";
    for (const auto& [name, value] : r->headers) {
      if (name == "mcp-session-id") return value;
    }
    ADD_FAILURE() << "no Mcp-Session-Id in " << r->body;
    return "";
  }

  // Checks an answer of `op` against its documented responses; `want` (when
  // not 0) is the status it must have.
  void CheckAnswer(const Operation& op, const HttpResponse& r, int want) {
    SCOPED_TRACE(op.Key() + " answered " + std::to_string(r.status) + ": " +
                 r.body.substr(0, 600));
    if (want != 0) {
      EXPECT_EQ(r.status, want);
    }
    const YAML::Node responses = Child(op.node, "responses");
    const YAML::Node documented = Child(responses, std::to_string(r.status));
    ASSERT_TRUE(documented) << "status " << r.status << " is not documented";
    const auto [media, entry] = Media(spec_, documented);
    ASSERT_FALSE(media.empty()) << "no documented media type";
    EXPECT_EQ(MediaTypeOf(r.content_type), media);
    if (media != "application/json") return;
    const Json body = Json::parse(r.body, nullptr, false);
    ASSERT_FALSE(body.is_discarded()) << "not JSON";
    std::vector<std::string> errors;
    Check(spec_, Child(entry, "schema"), body, "body", &errors);
    EXPECT_TRUE(errors.empty()) << JoinErrors(errors);
    // An envelope names the operation as documented.
    if (body.contains("operation") && body.contains("timestamp")) {
      const YAML::Node name = Child(op.node, "x-qm-operation");
      ASSERT_TRUE(name);
      EXPECT_EQ(body["operation"], name.as<std::string>());
    }
  }

  // Checks a request body against the operation's documented request body:
  // that one is documented, and that every field sent is documented and
  // fits.
  void CheckRequest(const Operation& op, const std::string& body) {
    if (body.empty()) return;
    SCOPED_TRACE(op.Key() + " request " + body);
    const YAML::Node rb = Child(op.node, "requestBody");
    ASSERT_TRUE(rb) << "sends a body but documents none";
    const auto [media, entry] = Media(spec_, rb);
    EXPECT_EQ(media, "application/json");
    const YAML::Node schema = Child(entry, "schema");
    const Json j = Json::parse(body);
    std::vector<std::string> errors;
    Check(spec_, schema, j, "request", &errors);
    EXPECT_TRUE(errors.empty()) << JoinErrors(errors);
    std::set<std::string> fields;
    DocumentedProperties(spec_, schema, &fields);
    for (const auto& [key, value] : j.items()) {
      EXPECT_TRUE(fields.count(key)) << key << " is not documented";
    }
  }

  bool IsStream(const Operation& op) {
    const YAML::Node ok = Child(Child(op.node, "responses"), "200");
    return ok && Media(spec_, ok).first == "text/event-stream";
  }

  TempDir dir_;
  YAML::Node spec_;
  std::unique_ptr<App> app_;
  std::string url_;
  int serial_ = 0;
};

// ---------------------------------------------------------------- a. routes

TEST(OpenApiSpecTest, EveryRouteIsDocumentedAndNothingElse) {
  const YAML::Node spec = LoadSpec();
  EXPECT_EQ(Child(spec, "openapi").as<std::string>(), "3.0.3");
  std::map<std::string, std::string> routes;  // key -> operation
  for (const Service::RouteInfo& r : Service::Routes()) {
    routes[r.method + " " + r.pattern] = r.operation;
  }
  std::set<std::string> documented, operation_ids;
  for (const Operation& op : Operations(spec)) {
    documented.insert(op.Key());
    auto it = routes.find(op.Key());
    EXPECT_NE(it, routes.end()) << op.Key() << " is documented but no route";
    const YAML::Node id = Child(op.node, "operationId");
    ASSERT_TRUE(id) << op.Key();
    EXPECT_TRUE(operation_ids.insert(id.as<std::string>()).second)
        << "operationId " << id.as<std::string>() << " is used twice";
    const YAML::Node name = Child(op.node, "x-qm-operation");
    ASSERT_TRUE(name) << op.Key() << " has no x-qm-operation";
    if (it != routes.end()) {
      EXPECT_EQ(name.as<std::string>(), it->second) << op.Key();
    }
    EXPECT_TRUE(Child(op.node, "summary")) << op.Key();
    const YAML::Node responses = Child(op.node, "responses");
    ASSERT_TRUE(responses && responses.IsMap()) << op.Key();
    // Every documented error answers with the error envelope.
    for (auto r = responses.begin(); r != responses.end(); ++r) {
      const std::string code = r->first.as<std::string>();
      if (code[0] == '2' || op.path == "/readyz") continue;
      const auto [media, entry] = Media(spec, r->second);
      EXPECT_EQ(media, "application/json") << op.Key() << " " << code;
      const YAML::Node ref = Child(Child(entry, "schema"), "$ref");
      EXPECT_TRUE(ref &&
                  ref.as<std::string>() == "#/components/schemas/ErrorEnvelope")
          << op.Key() << " " << code << " is not the error envelope";
    }
    // A path's {parameters} are documented as path parameters.
    if (op.path.find("{id}") != std::string::npos) {
      bool found = false;
      const YAML::Node path_item = Child(Child(spec, "paths"), op.path);
      for (const YAML::Node& list :
           {Child(path_item, "parameters"), Child(op.node, "parameters")}) {
        if (!list) continue;
        for (const YAML::Node& p : list) {
          const YAML::Node param = Resolve(spec, p);
          if (Child(param, "in").as<std::string>() == "path" &&
              Child(param, "name").as<std::string>() == "id") {
            found = true;
          }
        }
      }
      EXPECT_TRUE(found) << op.Key() << " does not document {id}";
    }
  }
  for (const auto& [key, operation] : routes) {
    EXPECT_TRUE(documented.count(key)) << key << " is not documented";
  }
  std::vector<std::string> unresolved;
  UnresolvedRefs(spec, spec, &unresolved);
  EXPECT_TRUE(unresolved.empty()) << JoinErrors(unresolved);
}

// ---------------------------------------------------------------- b. answers

TEST_F(OpenApiTest, EveryOperationAnswersAsDocumented) {
  std::map<std::string, Example> examples = Examples();
  int checked = 0;
  for (const Operation& op : Operations(spec_)) {
    SCOPED_TRACE(op.Key());
    auto it = examples.find(op.Key());
    ASSERT_NE(it, examples.end()) << "no example request for " << op.Key();
    if (IsStream(op)) continue;  // StreamsAnswerAsDocumented
    const Req req = it->second.make();
    CheckRequest(op, req.body);
    auto r = Send(op.method, req);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    CheckAnswer(op, *r, it->second.want);
    if (it->second.after) it->second.after();
    ++checked;
  }
  EXPECT_GE(checked, 30);
}

// The documented 404 of every operation on an {id}: an unknown id.
TEST_F(OpenApiTest, UnknownIdsAnswerTheDocumented404) {
  std::map<std::string, Example> examples = Examples();
  for (const Operation& op : Operations(spec_)) {
    const size_t at = op.path.find("{id}");
    if (at == std::string::npos) continue;
    SCOPED_TRACE(op.Key());
    Req req = examples.at(op.Key()).make();
    // Well-formed ids of nothing (a malformed one is a documented 400).
    const std::string id =
        op.path.rfind("/v1/allocations/", 0) == 0 ? "alloc_999999"
        : op.path.rfind("/v1/conflicts/", 0) == 0 ? "conf_999999"
                                                  : "res_999999";
    req.target = op.path.substr(0, at) + id + op.path.substr(at + 4);
    auto r = Send(op.method, req);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    CheckAnswer(op, *r, 404);
    const Json j = Json::parse(r->body, nullptr, false);
    EXPECT_EQ(j["error"]["code"], "NOT_FOUND");
  }
}

// Opens `target` on a connection of its own and reads the answer's head and
// the start of its body until `until` appears in it (or 5 s pass). Returns
// {status, content type, what was read}.
struct RawAnswer {
  int status = 0;
  std::string content_type;
  std::string text;
};
RawAnswer RawGet(const std::string& address, const std::string& target,
                 const std::string& until) {
  RawAnswer out;
  const size_t colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port =
      htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    return out;
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return out;
  timeval tv{};
  tv.tv_sec = 5;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    close(fd);
    return out;
  }
  const std::string request = "GET " + target +
                              " HTTP/1.1\r\nHost: " + address +
                              "\r\nAccept: text/event-stream\r\n\r\n";
  if (write(fd, request.data(), request.size()) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return out;
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(5);
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    const size_t head_end = out.text.find("\r\n\r\n");
    if (head_end != std::string::npos &&
        out.text.find(until, head_end) != std::string::npos) {
      break;
    }
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (out.text.rfind("HTTP/1.1 ", 0) == 0) {
    out.status = std::atoi(out.text.c_str() + 9);
  }
  std::string lower = out.text.substr(0, out.text.find("\r\n\r\n"));
  for (char& ch : lower) ch = static_cast<char>(std::tolower(ch));
  const size_t ct = lower.find("\r\ncontent-type:");
  if (ct != std::string::npos) {
    const size_t start = ct + 15;
    const size_t end = out.text.find("\r\n", start);
    out.content_type = out.text.substr(start, end - start);
    while (!out.content_type.empty() && out.content_type[0] == ' ') {
      out.content_type.erase(0, 1);
    }
  }
  return out;
}

TEST_F(OpenApiTest, StreamsAnswerAsDocumented) {
  // Something to report.
  Allocate();
  LockPair(NewPath());
  std::map<std::string, Example> examples = Examples();
  int streams = 0;
  for (const Operation& op : Operations(spec_)) {
    // GET /mcp needs a session: McpAnswersAsDocumented.
    if (!IsStream(op) || op.path == "/mcp") continue;
    ++streams;
    SCOPED_TRACE(op.Key());
    const Req req = examples.at(op.Key()).make();
    const YAML::Node responses = Child(op.node, "responses");
    ASSERT_TRUE(Child(responses, "200"));
    const auto [media, entry] = Media(spec_, Child(responses, "200"));
    // The head: status and content type, read off the wire.
    const RawAnswer raw = RawGet(app_->address(), req.target, "data:");
    EXPECT_EQ(raw.status, 200) << raw.text;
    EXPECT_EQ(MediaTypeOf(raw.content_type), media) << raw.text;
    // The first event, with the data schema documented for its name.
    const YAML::Node events = Child(entry, "x-sse-events");
    ASSERT_TRUE(events) << "no x-sse-events";
    int seen = 0;
    HttpClient c = Client();
    Status s = c.Stream(
        req.target,
        [&](const std::string&, const std::string& event,
            const std::string& data) {
          if (data.empty()) return true;
          ++seen;
          const YAML::Node named = Child(events, event);
          YAML::Node schema;
          schema.reset(named ? named : Child(events, "*"));
          EXPECT_TRUE(schema) << "event " << event << " is not documented";
          if (!schema) return false;
          const Json j = Json::parse(data, nullptr, false);
          EXPECT_FALSE(j.is_discarded()) << data;
          std::vector<std::string> errors;
          Check(spec_, schema, j, event, &errors);
          EXPECT_TRUE(errors.empty()) << JoinErrors(errors);
          return false;
        },
        std::chrono::seconds(5), req.headers);
    EXPECT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(seen, 1);
    // A documented error of the stream: a bad filter.
    auto bad = Send("GET", {op.path + "?nonsense=1", "", {}});
    ASSERT_TRUE(bad.ok()) << bad.status().ToString();
    CheckAnswer(op, *bad, 400);
  }
  EXPECT_EQ(streams, 2);

  // Resuming with Last-Event-ID: the next event has the next seq.
  HttpClient c = Client();
  std::string first_id, resumed_id;
  ASSERT_TRUE(
      c.Stream(
           "/v1/events?after=0",
           [&](const std::string& id, const std::string&, const std::string&) {
             if (id.empty()) return true;
             first_id = id;
             return false;
           },
           std::chrono::seconds(5))
          .ok());
  ASSERT_FALSE(first_id.empty());
  ASSERT_TRUE(c.Stream("/v1/events",
                       [&](const std::string& id, const std::string&,
                           const std::string&) {
                         if (id.empty()) return true;
                         resumed_id = id;
                         return false;
                       },
                       std::chrono::seconds(5), {{"Last-Event-ID", first_id}})
                  .ok());
  EXPECT_EQ(resumed_id, std::to_string(std::stoull(first_id) + 1));
}

// The monitor's product filter keeps `products` a {name: usage} object
// holding that product, as documented (Snapshot.products).
TEST_F(OpenApiTest, MonitorProductFilterKeepsTheProductsShape) {
  Allocate();  // product web
  HttpClient c = Client();
  Json snapshot;
  ASSERT_TRUE(c.Stream(
                   "/v1/monitor?product=web",
                   [&](const std::string&, const std::string& event,
                       const std::string& data) {
                     if (event != "snapshot") return true;
                     snapshot = Json::parse(data, nullptr, false);
                     return false;
                   },
                   std::chrono::seconds(5))
                  .ok());
  std::vector<std::string> errors;
  Check(spec_, YAML::Load("{$ref: '#/components/schemas/Snapshot'}"), snapshot,
        "snapshot", &errors);
  EXPECT_TRUE(errors.empty()) << JoinErrors(errors);
  ASSERT_TRUE(snapshot["products"].is_object()) << snapshot.dump();
  EXPECT_EQ(snapshot["products"].size(), 1u);
  EXPECT_TRUE(snapshot["products"].contains("web"));
}

// /mcp: its stream (with a session and something to notify) and its
// documented refusals.
TEST_F(OpenApiTest, McpAnswersAsDocumented) {
  const std::vector<Operation> ops = Operations(spec_);
  auto find = [&](const std::string& method) -> const Operation* {
    for (const Operation& op : ops) {
      if (op.path == "/mcp" && op.method == method) return &op;
    }
    return nullptr;
  };
  const Operation* post_op = find("POST");
  const Operation* get_op = find("GET");
  const Operation* del_op = find("DELETE");
  ASSERT_TRUE(post_op && get_op && del_op);
  const Operation& post = *post_op;
  const Operation& get = *get_op;
  const Operation& del = *del_op;
  const std::string session = OpenMcpSession();
  ASSERT_FALSE(session.empty());
  const std::string subscribe =
      R"({"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe",)"
      R"( "params": {"uri": "qm://status"}})";
  auto sub = Send("POST", {"/mcp", subscribe, McpHeaders(session)});
  ASSERT_TRUE(sub.ok());
  CheckAnswer(post, *sub, 200);
  const std::string note =
      R"({"jsonrpc": "2.0", "method": "notifications/initialized"})";
  auto accepted = Send("POST", {"/mcp", note, McpHeaders(session)});
  ASSERT_TRUE(accepted.ok());
  EXPECT_EQ(accepted->status, 202);
  EXPECT_TRUE(Child(Child(post.node, "responses"), "202"));

  // The stream: its head off the wire, then one event once something
  // changes.
  Headers stream_headers = McpHeaders(session);
  stream_headers.emplace_back("Accept", "text/event-stream");
  const auto [media, entry] =
      Media(spec_, Child(Child(get.node, "responses"), "200"));
  int seen = 0;
  std::thread reader([&, entry = entry] {
    HttpClient c = Client();
    Status s = c.Stream(
        "/mcp",
        [&](const std::string&, const std::string& event,
            const std::string& data) {
          if (data.empty()) return true;
          ++seen;
          const YAML::Node schema = Child(Child(entry, "x-sse-events"), event);
          EXPECT_TRUE(schema) << "event " << event << " is not documented";
          if (!schema) return false;
          std::vector<std::string> errors;
          Check(spec_, schema, Json::parse(data, nullptr, false), event,
                &errors);
          EXPECT_TRUE(errors.empty()) << JoinErrors(errors);
          return false;
        },
        std::chrono::seconds(10), stream_headers);
    EXPECT_TRUE(s.ok()) << s.ToString();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Allocate();
  reader.join();
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(media, "text/event-stream");

  // Refusals, each documented.
  struct Refusal {
    const Operation* op;
    Req req;
    int status;
  };
  Headers html = McpHeaders();
  html.emplace_back("Accept", "text/html");
  Headers form = {{"Content-Type", "application/x-www-form-urlencoded"}};
  Headers evil = McpHeaders();
  evil.emplace_back("Origin", "http://evil.example");
  Headers json_only = McpHeaders(session);
  json_only.emplace_back("Accept", "application/json");
  Headers old_version = {{"Mcp-Session-Id", session},
                         {"MCP-Protocol-Version", "2024-11-05"}};
  const std::string ping = R"({"jsonrpc": "2.0", "id": 3, "method": "ping"})";
  const std::vector<Refusal> refusals = {
      {&post, {"/mcp", ping, McpHeaders()}, 400},
      {&post, {"/mcp", ping, McpHeaders("mcp-unknown")}, 404},
      {&post, {"/mcp", ping, old_version}, 400},
      {&post, {"/mcp", "{oops", McpHeaders(session)}, 400},
      {&post, {"/mcp", kMcpInitialize, html}, 406},
      {&post, {"/mcp", kMcpInitialize, form}, 415},
      {&post, {"/mcp", kMcpInitialize, evil}, 403},
      {&get, {"/mcp", "", {}}, 400},
      {&get, {"/mcp", "", json_only}, 406},
      {&del, {"/mcp", "", McpHeaders("mcp-unknown")}, 404},
  };
  for (const Refusal& r : refusals) {
    SCOPED_TRACE(r.op->Key() + " " + r.req.body);
    auto a = Send(r.op->method, r.req);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    CheckAnswer(*r.op, *a, r.status);
  }
}

// ---------------------------------------------------------------- c. refusals

TEST_F(OpenApiTest, UnknownFieldsAreRefusedAsDocumented) {
  std::map<std::string, Example> examples = Examples();
  int refused = 0;
  for (const Operation& op : Operations(spec_)) {
    if (op.method != "POST" || !Child(op.node, "requestBody")) continue;
    if (!Child(Child(op.node, "responses"), "400")) continue;
    // A JSON-RPC message, not an operation's fields: McpAnswersAsDocumented.
    if (op.path == "/mcp") continue;
    SCOPED_TRACE(op.Key());
    Req req = examples.at(op.Key()).make();
    req.body = R"({"bogus_field": 1})";
    auto r = Send(op.method, req);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    CheckAnswer(op, *r, 400);
    const Json j = Json::parse(r->body, nullptr, false);
    EXPECT_EQ(j["error"]["code"], "INVALID_REQUEST");
    EXPECT_NE(j["error"]["message"].get<std::string>().find("bogus_field"),
              std::string::npos)
        << j.dump();
    ++refused;
  }
  EXPECT_GE(refused, 20);
}

}  // namespace
}  // namespace qm::server
