#include "mcp/http_transport.h"

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "mcp/backend.h"
#include "mcp/mcp_server.h"

namespace qm::mcp {
namespace {

using Json = nlohmann::json;
using Steady = std::chrono::steady_clock;
using server::HttpRequest;
using server::HttpResponse;
using server::Responder;
using server::Stream;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// The media type of a Content-Type or Accept entry, without parameters,
// in lower case ("application/json").
std::string MediaType(std::string_view value) {
  return Lower(Trim(value.substr(0, value.find(';'))));
}

// Whether an Accept header allows `type` (exactly, as type/*, or */*; an
// entry with q=0 allows nothing).
bool Accepts(std::string_view accept, std::string_view type) {
  while (!accept.empty()) {
    const size_t comma = accept.find(',');
    std::string_view entry = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view()
                                             : accept.substr(comma + 1);
    const std::string media = MediaType(entry);
    bool refused = false;
    for (size_t semi = entry.find(';'); semi != std::string_view::npos;
         semi = entry.find(';', semi + 1)) {
      std::string_view param = entry.substr(semi + 1);
      param = Trim(param.substr(0, param.find(';')));
      if (param.size() >= 2 && (param[0] == 'q' || param[0] == 'Q') &&
          param[1] == '=') {
        refused =
            param.substr(2).find_first_not_of("0.") == std::string_view::npos;
      }
    }
    if (refused) continue;
    if (media == type || media == "*/*") return true;
    if (media.size() > 2 && media.ends_with("/*") &&
        type.substr(0, media.size() - 1) == media.substr(0, media.size() - 1)) {
      return true;
    }
  }
  return false;
}

// Compared in full (not stopping at the first difference): a session's
// caller is its bearer token.
bool SameCaller(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

// 128 random bits as hex: not guessable, visible ASCII only (as the spec
// asks of session ids).
std::string NewSessionId() {
  static const char* kHex = "0123456789abcdef";
  std::random_device rd;
  std::string id = "mcp-";
  for (int i = 0; i < 4; ++i) {
    uint32_t v = rd();
    for (int j = 0; j < 8; ++j) {
      id += kHex[v & 15];
      v >>= 4;
    }
  }
  return id;
}

std::string DefaultErrorBody(int /*status*/, const Status& s) {
  return Json{{"jsonrpc", "2.0"},
              {"id", nullptr},
              {"error", {{"code", -32000}, {"message", s.message()}}}}
      .dump(-1, ' ', false, Json::error_handler_t::replace);
}

// A header value for a message (client-sent: shortened).
std::string Shown(std::string_view v) {
  return std::string(v.substr(0, 100)) + (v.size() > 100 ? "..." : "");
}

using LogFn = std::function<void(const std::string&)>;

// Releases (active) or cancels (queued) the allocations `ids` as `backend`'s
// caller; those already ended are left alone. {"released": [...],
// "cancelled": [...]}.
Json GiveBack(Backend& backend, const std::vector<std::string>& ids,
              const std::string& reason, const LogFn& log) {
  Json released = Json::array(), cancelled = Json::array();
  auto Log = [&log](const std::string& line) {
    if (log) log(line);
  };
  for (const std::string& id : ids) {
    const std::string target = "/v1/allocations/" + UrlEncode(id);
    ApiAnswer a = CallApi(backend, "GET", target);
    if (!a.ok) {
      if (a.error.value("code", "") != "NOT_FOUND") {
        Log("could not read " + id + " to give it back (" + reason +
            "): " + a.error.dump());
      }
      continue;
    }
    const std::string status = a.result.value("status", "");
    if (status == "active") {
      ApiAnswer r = CallApi(backend, "POST", target + "/release");
      if (r.ok) {
        released.push_back(id);
      } else {
        Log("could not release " + id + " (" + reason + "): " + r.error.dump());
      }
    } else if (status == "queued") {
      ApiAnswer r = CallApi(backend, "POST", target + "/cancel",
                            Json{{"reason", reason}});
      if (r.ok) {
        cancelled.push_back(id);
      } else {
        Log("could not cancel " + id + " (" + reason + "): " + r.error.dump());
      }
    }
  }
  return Json{{"released", std::move(released)},
              {"cancelled", std::move(cancelled)}};
}

// A session's backend: the owner's, remembering the allocations that
// resource_allocate obtained through it until they end, so that they can
// be given back with the session.
class SessionBackend : public Backend {
 public:
  SessionBackend(std::shared_ptr<Backend> inner, LogFn log)
      : inner_(std::move(inner)), log_(std::move(log)) {}

  StatusOr<HttpResponse> Call(std::string_view method, std::string_view target,
                              std::string_view body,
                              Duration timeout) override {
    StatusOr<HttpResponse> r = inner_->Call(method, target, body, timeout);
    if (r.ok() && r->status == 200 && method == "POST" &&
        target.starts_with("/v1/allocations")) {
      Note(target, r->body);
    }
    return r;
  }

  std::string Describe() const override { return inner_->Describe(); }

  Backend& inner() { return *inner_; }

  // Stops remembering and returns the allocations still remembered; one
  // obtained later (by a call still running) is given back at once.
  std::vector<std::string> Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    std::vector<std::string> ids(ids_.begin(), ids_.end());
    ids_.clear();
    return ids;
  }

 private:
  void Note(std::string_view target, const std::string& body) {
    const Json j = Json::parse(body, nullptr, false);
    if (!j.is_object() || !j.contains("result") || !j["result"].is_object()) {
      return;
    }
    const Json& a = j["result"];
    if (!a.contains("allocation_id") || !a["allocation_id"].is_string()) return;
    const std::string id = a["allocation_id"].get<std::string>();
    const std::string status = a.value("status", "");
    bool late = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (status == "released" || status == "expired" || status == "failed" ||
          status == "cancelled") {
        ids_.erase(id);
      } else if (target == "/v1/allocations" &&
                 (status == "active" || status == "queued")) {
        if (closed_) {
          late = true;
        } else {
          ids_.insert(id);
        }
      }
    }
    if (late) GiveBack(*inner_, {id}, "its MCP session had ended", log_);
  }

  const std::shared_ptr<Backend> inner_;
  const LogFn log_;
  std::mutex mu_;
  std::set<std::string> ids_;  // guarded by mu_
  bool closed_ = false;        // guarded by mu_
};

struct Session {
  std::string id;
  std::string authorization;  // of the request that opened it
  std::shared_ptr<SessionBackend> backend;
  std::shared_ptr<McpServer> server;
  // Guarded by HttpTransport::Impl::mu_.
  Steady::time_point last_used;
  int running = 0;                 // messages being handled
  std::shared_ptr<Stream> stream;  // the GET stream, if any
  Steady::time_point last_keepalive;
};

}  // namespace

std::vector<std::string> DefaultAllowedOrigins() {
  return {"http://localhost:*",  "http://127.0.0.1:*",  "http://[::1]:*",
          "https://localhost:*", "https://127.0.0.1:*", "https://[::1]:*"};
}

bool OriginAllowed(std::string_view origin,
                   const std::vector<std::string>& allowed) {
  const std::string o = Lower(Trim(origin));
  for (const std::string& entry : allowed) {
    if (entry == "*") return true;
    const std::string e = Lower(Trim(entry));
    if (e.ends_with(":*")) {
      const std::string base = e.substr(0, e.size() - 2);
      if (o == base) return true;
      if (o.size() > base.size() + 1 && o.starts_with(base) &&
          o[base.size()] == ':' &&
          o.find_first_not_of("0123456789", base.size() + 1) ==
              std::string::npos) {
        return true;
      }
    } else if (o == e) {
      return true;
    }
  }
  return false;
}

class HttpTransport::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(BackendFactory backend_for, HttpTransportOptions options)
      : backend_for_(std::move(backend_for)), options_(std::move(options)) {
    if (!options_.error_body) options_.error_body = DefaultErrorBody;
    server_options_.version = options_.version;
    server_options_.log = options_.log;
    poller_ = std::thread([this] { PollLoop(); });
  }

  void Handle(HttpRequest req, Responder r) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        Refuse(r, 503, Unavailable("the server is stopping"));
        return;
      }
    }
    const std::string_view origin = req.Header("origin");
    if (!origin.empty() && !OriginAllowed(origin, options_.allowed_origins)) {
      Refuse(r, 403,
             PermissionDenied("Origin " + Shown(origin) +
                              " may not use MCP on this server (allowed: "
                              "server.mcp.allowed_origins)"));
      return;
    }
    if (req.method == "POST") {
      Post(std::move(req), std::move(r));
    } else if (req.method == "GET") {
      Get(req, r);
    } else if (req.method == "DELETE") {
      Delete(req, r);
    } else {
      Refuse(r, 405,
             InvalidRequest(req.method + " is not allowed on the MCP endpoint "
                                         "(allowed: POST, GET, DELETE)"),
             {{"Allow", "POST, GET, DELETE"}});
    }
  }

  void Stop(Duration grace) {
    std::vector<std::shared_ptr<Stream>> streams;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      stopping_ = true;
      for (auto& [id, s] : sessions_) {
        if (s->stream) streams.push_back(std::move(s->stream));
      }
    }
    cv_.notify_all();
    for (auto& s : streams) s->Close();
    if (poller_.joinable()) poller_.join();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, grace, [&] { return in_flight_ == 0; });
    sessions_.clear();
  }

  size_t sessions() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sessions_.size();
  }

 private:
  void Refuse(const Responder& r, int status, const Status& why,
              std::vector<std::pair<std::string, std::string>> headers = {}) {
    HttpResponse res;
    res.status = status;
    res.headers = std::move(headers);
    res.body = options_.error_body(status, why);
    r.Respond(std::move(res));
  }

  void Log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  // The session named by the request's Mcp-Session-Id for this caller, or
  // null after answering why not (400 without the header, 404 unknown, 400
  // for a protocol version that is not the session's).
  std::shared_ptr<Session> Find(const HttpRequest& req, const Responder& r) {
    const std::string_view sid = req.Header("mcp-session-id");
    if (sid.empty()) {
      Refuse(r, 400,
             InvalidRequest("Mcp-Session-Id header required: open a session "
                            "with an initialize request first"));
      return nullptr;
    }
    std::shared_ptr<Session> s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sessions_.find(std::string(sid));
      if (it != sessions_.end()) s = it->second;
    }
    if (!s || !SameCaller(s->authorization, req.Header("authorization"))) {
      Refuse(r, 404,
             NotFound("no MCP session " + Shown(sid) +
                      " (it ended, expired, or the server restarted): "
                      "initialize a new one"));
      return nullptr;
    }
    const std::string_view version = req.Header("mcp-protocol-version");
    const std::string agreed = s->server->protocol_version();
    if (!version.empty() && version != agreed) {
      bool known = false;
      for (const char* v : kProtocolVersions) known |= version == v;
      Refuse(r, 400,
             InvalidRequest(
                 "MCP-Protocol-Version " + Shown(version) +
                 (known ? " is not this session's (it agreed " + agreed + ")"
                        : " is not supported (this server speaks 2025-06-18 "
                          "and 2025-03-26; this session agreed " +
                              agreed + ")")));
      return nullptr;
    }
    return s;
  }

  void Post(HttpRequest req, Responder r) {
    if (const std::string_view a = req.Header("accept");
        !a.empty() && !Accepts(a, "application/json")) {
      Refuse(r, 406,
             InvalidRequest("Accept must allow application/json: this "
                            "endpoint answers POSTs with JSON (send Accept: "
                            "application/json, text/event-stream)"));
      return;
    }
    if (const std::string_view ct = req.Header("content-type");
        !ct.empty() && MediaType(ct) != "application/json") {
      Refuse(r, 415,
             InvalidRequest("Content-Type must be application/json (a "
                            "JSON-RPC message), got " +
                            Shown(ct)));
      return;
    }
    const MessageInfo info = InspectMessage(req.body, server_options_);
    if (req.Header("mcp-session-id").empty() && info.initialize) {
      Open(req, r);
      return;
    }
    std::shared_ptr<Session> s = Find(req, r);
    if (!s) return;
    if (!info.has_request) {
      // Notifications and responses only change the session's memory.
      std::vector<std::string> out = s->server->Handle(req.body);
      Touch(*s);
      if (out.empty()) {
        HttpResponse res;
        res.status = 202;
        res.content_type.clear();
        r.Respond(std::move(res));
        return;
      }
      const Json e = Json::parse(out[0], nullptr, false);
      std::string why = "the message cannot be taken";
      if (e.is_object() && e.contains("error") && e["error"].is_object()) {
        why += ": " + e["error"].value("message", "") + " (JSON-RPC " +
               std::to_string(e["error"].value("code", 0)) + ")";
      }
      Refuse(r, 400, InvalidRequest(why));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (in_flight_ >= options_.max_in_flight) {
        Refuse(r, 503,
               Unavailable("too many MCP requests in progress (" +
                           std::to_string(options_.max_in_flight) +
                           "); retry in a moment"),
               {{"Retry-After", "1"}});
        return;
      }
      ++in_flight_;
      ++s->running;
      s->last_used = Steady::now();
    }
    auto run = [self = shared_from_this(), s, body = std::move(req.body), r] {
      std::vector<std::string> out = s->server->Handle(body);
      HttpResponse res;
      if (out.empty()) {
        // A cancelled call: nothing to answer.
        res.status = 202;
        res.content_type.clear();
      } else {
        res.body = std::move(out[0]);
      }
      r.Respond(std::move(res));
      self->Finish(s.get());
    };
    try {
      std::thread(std::move(run)).detach();
    } catch (const std::system_error& e) {
      Finish(s.get());
      Refuse(r, 503,
             Unavailable(std::string("no thread for the request: ") + e.what()),
             {{"Retry-After", "1"}});
    }
  }

  // An initialize request without a session: a new session, kept when the
  // initialize succeeds.
  void Open(const HttpRequest& req, const Responder& r) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (sessions_.size() >= options_.max_sessions) {
        Refuse(r, 503,
               Unavailable("too many MCP sessions open (" +
                           std::to_string(options_.max_sessions) +
                           "): end one with DELETE, or wait for idle ones to "
                           "expire"),
               {{"Retry-After", "5"}});
        return;
      }
    }
    auto s = std::make_shared<Session>();
    s->authorization = std::string(req.Header("authorization"));
    s->backend =
        std::make_shared<SessionBackend>(backend_for_(req), options_.log);
    s->server = std::make_shared<McpServer>(s->backend, server_options_);
    // initialize is answered from memory (no backend call).
    std::vector<std::string> out = s->server->Handle(req.body);
    HttpResponse res;
    res.body = out.empty() ? std::string() : std::move(out[0]);
    if (s->server->initialized()) {
      s->id = NewSessionId();
      s->last_used = s->last_keepalive = Steady::now();
      std::lock_guard<std::mutex> lock(mu_);
      sessions_[s->id] = s;
      res.headers.emplace_back("Mcp-Session-Id", s->id);
    }
    r.Respond(std::move(res));
  }

  void Get(const HttpRequest& req, const Responder& r) {
    if (const std::string_view a = req.Header("accept");
        !a.empty() && !Accepts(a, "text/event-stream")) {
      Refuse(r, 406,
             InvalidRequest("Accept must allow text/event-stream: GET opens "
                            "the session's event stream"));
      return;
    }
    std::shared_ptr<Session> s = Find(req, r);
    if (!s) return;
    std::shared_ptr<Stream> stream =
        r.OpenStream("text/event-stream", {{"Cache-Control", "no-cache"}});
    std::shared_ptr<Stream> old;
    {
      std::lock_guard<std::mutex> lock(mu_);
      old = std::move(s->stream);
      s->stream = stream;
      s->last_used = s->last_keepalive = Steady::now();
    }
    if (old) old->Close();
  }

  void Delete(const HttpRequest& req, const Responder& r) {
    std::shared_ptr<Session> s = Find(req, r);
    if (!s) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (sessions_.erase(s->id) == 0) {
        // Ended meanwhile (another DELETE, or expiry).
        Refuse(r, 404, NotFound("no MCP session " + s->id + " (it ended)"));
        return;
      }
      ++in_flight_;
    }
    // Giving the allocations back calls the server: not on this thread.
    auto run = [self = shared_from_this(), s, r] {
      Json out = self->End(*s, "its MCP session ended (DELETE /mcp)");
      HttpResponse res;
      res.body = out.dump(-1, ' ', false, Json::error_handler_t::replace);
      r.Respond(std::move(res));
      self->Finish(nullptr);
    };
    try {
      std::thread(run).detach();
    } catch (const std::system_error&) {
      run();  // rather late than the allocations kept
    }
  }

  void Touch(Session& s) {
    std::lock_guard<std::mutex> lock(mu_);
    s.last_used = Steady::now();
  }

  // A message handled on its thread (`s` null: a session's end).
  void Finish(Session* s) {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    if (s != nullptr) {
      --s->running;
      s->last_used = Steady::now();
    }
    cv_.notify_all();
  }

  // Ends a session already taken out of sessions_: closes its stream and
  // gives back what it still holds. Blocks (calls the server).
  Json End(Session& s, const std::string& reason) {
    std::shared_ptr<Stream> stream;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream = std::move(s.stream);
    }
    if (stream) stream->Close();
    Json out =
        GiveBack(s.backend->inner(), s.backend->Close(), reason, options_.log);
    Log("MCP session " + s.id + " ended (" + reason + "): released " +
        out["released"].dump() + ", cancelled " + out["cancelled"].dump());
    out["session_id"] = s.id;
    return out;
  }

  // Every poll_interval: expires idle sessions, sends keep-alives and the
  // notifications of subscribed resources to open streams.
  void PollLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, options_.poll_interval, [&] { return stopping_; });
      if (stopping_) break;
      const auto now = Steady::now();
      std::vector<std::shared_ptr<Session>> expired, streaming;
      std::vector<std::shared_ptr<Stream>> keepalive;
      for (auto it = sessions_.begin(); it != sessions_.end();) {
        Session& s = *it->second;
        if (s.stream && !s.stream->open()) s.stream.reset();
        if (!s.stream && s.running == 0 &&
            now - s.last_used >= options_.idle_timeout) {
          expired.push_back(it->second);
          it = sessions_.erase(it);
          continue;
        }
        if (s.stream) {
          // Idle time counts from the stream's end.
          s.last_used = now;
          streaming.push_back(it->second);
          if (now - s.last_keepalive >= options_.keepalive) {
            keepalive.push_back(s.stream);
            s.last_keepalive = now;
          }
        }
        ++it;
      }
      lock.unlock();
      for (auto& stream : keepalive) stream->Send(": keep-alive\n\n");
      for (auto& s : streaming) {
        if (!s->server->has_subscriptions()) continue;
        std::vector<std::string> messages = s->server->PollSubscriptions();
        if (messages.empty()) continue;
        std::shared_ptr<Stream> stream;
        {
          std::lock_guard<std::mutex> l(mu_);
          stream = s->stream;
        }
        for (const std::string& m : messages) {
          if (stream) stream->Send("event: message\ndata: " + m + "\n\n");
        }
      }
      for (auto& s : expired) {
        End(*s,
            "its MCP session was idle for " +
                std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                   options_.idle_timeout)
                                   .count()) +
                " s");
      }
      lock.lock();
    }
  }

  const BackendFactory backend_for_;
  HttpTransportOptions options_;
  McpServerOptions server_options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;  // by id
  int in_flight_ = 0;  // threads handling messages or ending sessions
  bool stopping_ = false;
  std::thread poller_;
};

HttpTransport::HttpTransport(BackendFactory backend_for,
                             HttpTransportOptions options)
    : impl_(
          std::make_shared<Impl>(std::move(backend_for), std::move(options))) {}

HttpTransport::~HttpTransport() { impl_->Stop(Duration(0)); }

void HttpTransport::Handle(server::HttpRequest request,
                           server::Responder responder) {
  impl_->Handle(std::move(request), std::move(responder));
}

void HttpTransport::Stop(Duration grace) { impl_->Stop(grace); }

size_t HttpTransport::sessions() const { return impl_->sessions(); }

}  // namespace qm::mcp
