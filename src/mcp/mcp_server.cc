#include "mcp/mcp_server.h"

#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include "mcp/resources.h"
#include "mcp/tools.h"

namespace qm::mcp {
namespace {

using Json = nlohmann::json;

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json Result(const Json& id, Json result) {
  return Json{{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

Json Error(const Json& id, int code, std::string_view message,
           Json data = nullptr) {
  Json e = {{"code", code}, {"message", message}};
  if (!data.is_null()) e["data"] = std::move(data);
  return Json{{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(e)}};
}

// The deepest nesting of arrays and objects in `text` (read as JSON
// tokens: brackets inside strings do not count). Stops counting past
// `limit`.
int Depth(std::string_view text, int limit) {
  int depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max) max = depth;
      if (max > limit) return max;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max;
}

const char* kInstructions =
    "Quartermaster (qm) shares limited resources (agent slots, CPU, memory, "
    "tools, token and dollar budgets, file locks) among AI agents. Before "
    "starting a piece of work call resource_allocate (it may queue: give a "
    "timeout to wait); while it runs, renew the lease with resource_renew "
    "before expires_at; when done call resource_release with the usage. "
    "resource_check_conflicts is a dry run; resource_monitor, "
    "resource_analytics and resource_optimize report the manager's state.";

}  // namespace

std::string JsonRpcError(const Json& id, int code, std::string_view message) {
  return Dump(Error(id, code, message));
}

MessageInfo InspectMessage(std::string_view text,
                           const McpServerOptions& options) {
  MessageInfo info;
  if (text.size() > options.max_message_bytes ||
      Depth(text, options.max_depth) > options.max_depth) {
    return info;
  }
  const Json msg = Json::parse(text, nullptr, false);
  auto is_request = [](const Json& m) {
    return m.is_object() && m.contains("method") && m.contains("id");
  };
  if (is_request(msg)) {
    info.has_request = true;
    info.initialize = msg["method"] == "initialize";
  } else if (msg.is_array()) {
    for (const Json& m : msg) info.has_request |= is_request(m);
  }
  return info;
}

class McpServer::Impl {
 public:
  Impl(std::shared_ptr<Backend> backend, McpServerOptions options)
      : backend_(std::move(backend)), options_(std::move(options)) {}

  std::vector<std::string> Handle(std::string_view text) {
    if (text.size() > options_.max_message_bytes) {
      return {JsonRpcError(nullptr, kInvalidRequest,
                           "message too large: " + std::to_string(text.size()) +
                               " bytes (the limit is " +
                               std::to_string(options_.max_message_bytes) +
                               ")")};
    }
    if (Depth(text, options_.max_depth) > options_.max_depth) {
      return {JsonRpcError(nullptr, kInvalidRequest,
                           "message nested deeper than " +
                               std::to_string(options_.max_depth) + " levels")};
    }
    const Json msg = Json::parse(text, nullptr, false);
    if (msg.is_discarded()) {
      return {JsonRpcError(nullptr, kParseError, "parse error: not JSON")};
    }
    if (!msg.is_array()) {
      std::optional<Json> r = HandleOne(msg, false);
      if (!r) return {};
      return {Dump(*r)};
    }
    if (protocol_version() != "2025-03-26") {
      return {
          JsonRpcError(nullptr, kInvalidRequest,
                       "batches are not supported: MCP " +
                           std::string(initialized() ? protocol_version()
                                                     : kProtocolVersions[0]) +
                           " sends one message at a time (2025-03-26 "
                           "sessions may batch)")};
    }
    if (msg.empty()) {
      return {JsonRpcError(nullptr, kInvalidRequest, "empty batch")};
    }
    Json responses = Json::array();
    for (const Json& m : msg) {
      if (std::optional<Json> r = HandleOne(m, true)) {
        responses.push_back(std::move(*r));
      }
    }
    if (responses.empty()) return {};
    return {Dump(responses)};
  }

  bool MayBlock(std::string_view text) const {
    if (text.size() > options_.max_message_bytes ||
        text.find("tools/call") == std::string_view::npos ||
        Depth(text, options_.max_depth) > options_.max_depth) {
      return false;
    }
    const Json msg = Json::parse(text, nullptr, false);
    return msg.is_object() && msg.contains("id") && msg.contains("method") &&
           msg["method"] == "tools/call";
  }

  std::vector<std::string> PollSubscriptions() {
    std::lock_guard<std::mutex> poll(poll_mu_);
    std::vector<std::string> uris;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [uri, last] : subscriptions_) uris.push_back(uri);
    }
    std::vector<std::string> out;
    for (const std::string& uri : uris) {
      const Resource* r = FindResource(uri);
      if (r == nullptr) continue;
      ApiAnswer a = ReadResource(*backend_, *r);
      if (!a.ok) continue;  // tried again at the next poll
      const std::string fp = Fingerprint(*r, a.result);
      std::lock_guard<std::mutex> lock(mu_);
      auto it = subscriptions_.find(uri);
      if (it == subscriptions_.end()) continue;  // unsubscribed meanwhile
      if (it->second && *it->second != fp) {
        out.push_back(Dump(Json{{"jsonrpc", "2.0"},
                                {"method", "notifications/resources/updated"},
                                {"params", {{"uri", uri}}}}));
      }
      it->second = fp;
    }
    return out;
  }

  bool has_subscriptions() const {
    std::lock_guard<std::mutex> lock(mu_);
    return !subscriptions_.empty();
  }
  bool initialized() const {
    std::lock_guard<std::mutex> lock(mu_);
    return !version_.empty();
  }
  std::string protocol_version() const {
    std::lock_guard<std::mutex> lock(mu_);
    return version_;
  }
  const McpServerOptions& options() const { return options_; }

 private:
  void Log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  // One message of any kind; the response to send, if any.
  std::optional<Json> HandleOne(const Json& msg, bool in_batch) {
    if (!msg.is_object()) {
      return Error(nullptr, kInvalidRequest,
                   "invalid request: a message must be a JSON object");
    }
    Json id = nullptr;
    const bool has_id = msg.contains("id");
    if (has_id) {
      const Json& given = msg["id"];
      if (!given.is_string() && !given.is_number_integer()) {
        return Error(nullptr, kInvalidRequest,
                     "invalid request: id must be a string or an integer");
      }
      id = given;
    }
    if (!msg.contains("jsonrpc") || msg["jsonrpc"] != "2.0") {
      return Error(id, kInvalidRequest,
                   "invalid request: \"jsonrpc\" must be \"2.0\"");
    }
    if (!msg.contains("method")) {
      // A response (to nothing: this server sends no requests).
      if (has_id && (msg.contains("result") || msg.contains("error"))) {
        return std::nullopt;
      }
      return Error(id, kInvalidRequest, "invalid request: no method");
    }
    if (!msg["method"].is_string()) {
      return Error(id, kInvalidRequest,
                   "invalid request: method must be a string");
    }
    const std::string method = msg["method"].get<std::string>();
    const Json params = msg.contains("params") ? msg["params"] : Json::object();
    if (!has_id) {
      if (params.is_object()) Notify(method, params);
      return std::nullopt;
    }
    if (!params.is_object()) {
      return Error(id, kInvalidParams, "invalid params: must be an object");
    }
    return Request(id, method, params, in_batch);
  }

  void Notify(const std::string& method, const Json& params) {
    if (method == "notifications/cancelled") {
      if (!params.contains("requestId")) return;
      const std::string key = Dump(params["requestId"]);
      std::lock_guard<std::mutex> lock(mu_);
      if (in_flight_.count(key)) cancelled_.insert(key);
    }
    // notifications/initialized and the others need nothing.
  }

  // A request's response; none when a cancelled tools/call must not be
  // answered.
  std::optional<Json> Request(const Json& id, const std::string& method,
                              const Json& params, bool in_batch) {
    if (method == "ping") return Result(id, Json::object());
    if (method == "initialize") {
      if (in_batch) {
        return Error(id, kInvalidRequest,
                     "initialize must not be part of a batch");
      }
      return Initialize(id, params);
    }
    if (!initialized()) {
      return Error(id, kInvalidRequest,
                   "not initialized: send initialize first");
    }
    if (method == "tools/list") {
      if (params.contains("cursor") && !params["cursor"].is_null()) {
        return Error(id, kInvalidParams,
                     "invalid cursor: the tools come in one page");
      }
      Json tools = Json::array();
      for (const Tool& t : Tools()) tools.push_back(t.ToJson());
      return Result(id, Json{{"tools", std::move(tools)}});
    }
    if (method == "tools/call") return CallTool(id, params);
    if (method == "resources/list") {
      if (params.contains("cursor") && !params["cursor"].is_null()) {
        return Error(id, kInvalidParams,
                     "invalid cursor: the resources come in one page");
      }
      Json list = Json::array();
      for (const Resource& r : Resources()) list.push_back(r.ToJson());
      return Result(id, Json{{"resources", std::move(list)}});
    }
    if (method == "resources/templates/list") {
      return Result(id, Json{{"resourceTemplates", Json::array()}});
    }
    if (method == "resources/read" || method == "resources/subscribe" ||
        method == "resources/unsubscribe") {
      if (!params.contains("uri") || !params["uri"].is_string()) {
        return Error(id, kInvalidParams,
                     "invalid params: uri (a string) is required");
      }
      const std::string uri = params["uri"].get<std::string>();
      const Resource* r = FindResource(uri);
      if (r == nullptr) {
        return Error(id, kResourceNotFound, "resource not found: " + uri,
                     Json{{"uri", uri}});
      }
      if (method == "resources/read") return Read(id, *r);
      if (method == "resources/subscribe") return Subscribe(id, *r);
      std::lock_guard<std::mutex> lock(mu_);
      subscriptions_.erase(uri);
      return Result(id, Json::object());
    }
    return Error(id, kMethodNotFound, "method not found: " + method);
  }

  Json Initialize(const Json& id, const Json& params) {
    if (!params.contains("protocolVersion") ||
        !params["protocolVersion"].is_string()) {
      return Error(id, kInvalidParams,
                   "invalid params: protocolVersion (a string) is required");
    }
    const std::string asked = params["protocolVersion"].get<std::string>();
    std::string agreed = kProtocolVersions[0];
    for (const char* v : kProtocolVersions) {
      if (asked == v) agreed = v;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!version_.empty()) {
        return Error(id, kInvalidRequest,
                     "already initialized (protocol " + version_ + ")");
      }
      version_ = agreed;
    }
    Json result = {
        {"protocolVersion", agreed},
        {"capabilities",
         {{"tools", {{"listChanged", false}}},
          {"resources", {{"subscribe", true}, {"listChanged", false}}}}},
        {"serverInfo",
         {{"name", "qm"},
          {"title", "Quartermaster"},
          {"version", options_.version}}},
        {"instructions", kInstructions}};
    return Result(id, std::move(result));
  }

  std::optional<Json> CallTool(const Json& id, const Json& params) {
    if (!params.contains("name") || !params["name"].is_string()) {
      return Error(id, kInvalidParams,
                   "invalid params: name (the tool's, a string) is required");
    }
    const std::string name = params["name"].get<std::string>();
    const Tool* tool = FindTool(name);
    if (tool == nullptr) {
      return Error(id, kInvalidParams, "unknown tool: " + name,
                   Json{{"tool", name}});
    }
    Json args = params.contains("arguments") ? params["arguments"] : Json();
    if (!args.is_null() && !args.is_object()) {
      return Error(id, kInvalidParams,
                   "invalid params: arguments must be an object");
    }
    const std::string key = Dump(id);
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_.insert(key);
    }
    ToolResult r = qm::mcp::CallTool(*tool, *backend_, args);
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_flight_.erase(key);
      cancelled = cancelled_.erase(key) > 0;
    }
    if (cancelled) {
      Abandon(*tool, r);
      return std::nullopt;
    }
    return Result(id, r.ToJson());
  }

  // A cancelled call's answer will not be read: an allocation it obtained
  // would be held by nobody, so it is cancelled on the server.
  void Abandon(const Tool& tool, const ToolResult& r) {
    if (tool.name != "resource_allocate" || r.is_error) return;
    const Json& a = r.structured;
    if (!a.contains("allocation_id") || !a["allocation_id"].is_string()) {
      return;
    }
    const std::string status = a.value("status", "");
    if (status != "active" && status != "queued") return;
    const std::string alloc = a["allocation_id"].get<std::string>();
    ApiAnswer c = CallApi(*backend_, "POST",
                          "/v1/allocations/" + UrlEncode(alloc) + "/cancel",
                          Json{{"reason", "MCP request cancelled"}});
    Log(c.ok ? "cancelled " + alloc + ": its tools/call was cancelled"
             : "could not cancel " + alloc +
                   " (its tools/call was cancelled): " + Dump(c.error));
  }

  Json Read(const Json& id, const Resource& r) {
    ApiAnswer a = ReadResource(*backend_, r);
    if (!a.ok) {
      return Error(id, kInternalError,
                   a.error.value("code", "INTERNAL") + ": " +
                       a.error.value("message", "failed"),
                   Json{{"uri", r.uri}, {"error", a.error}});
    }
    Json content = {
        {"uri", r.uri}, {"mimeType", r.mime_type}, {"text", Dump(a.result)}};
    return Result(id, Json{{"contents", Json::array({std::move(content)})}});
  }

  Json Subscribe(const Json& id, const Resource& r) {
    // The reading now is what later readings are compared with.
    std::optional<std::string> fp;
    ApiAnswer a = ReadResource(*backend_, r);
    if (a.ok) fp = Fingerprint(r, a.result);
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, added] = subscriptions_.emplace(r.uri, fp);
    if (!added && !it->second) it->second = fp;
    return Result(id, Json::object());
  }

  const std::shared_ptr<Backend> backend_;
  const McpServerOptions options_;

  mutable std::mutex mu_;
  std::string version_;  // guarded by mu_; "" until initialize
  // Subscribed URIs and the fingerprint of their last reading (none when
  // no reading has worked yet). Guarded by mu_.
  std::map<std::string, std::optional<std::string>> subscriptions_;
  // Ids (as JSON text) of running tools/calls, and those of them the client
  // cancelled. Guarded by mu_.
  std::set<std::string> in_flight_, cancelled_;
  // One PollSubscriptions at a time.
  std::mutex poll_mu_;
};

McpServer::McpServer(std::shared_ptr<Backend> backend, McpServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(backend), std::move(options))) {}

McpServer::~McpServer() = default;

std::vector<std::string> McpServer::Handle(std::string_view message) {
  return impl_->Handle(message);
}

bool McpServer::MayBlock(std::string_view message) const {
  return impl_->MayBlock(message);
}

std::vector<std::string> McpServer::PollSubscriptions() {
  return impl_->PollSubscriptions();
}

bool McpServer::has_subscriptions() const { return impl_->has_subscriptions(); }

bool McpServer::initialized() const { return impl_->initialized(); }

std::string McpServer::protocol_version() const {
  return impl_->protocol_version();
}

const McpServerOptions& McpServer::options() const { return impl_->options(); }

}  // namespace qm::mcp
