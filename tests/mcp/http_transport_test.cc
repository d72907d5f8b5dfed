// MCP over Streamable HTTP at /mcp on a real `qm serve` (the App in this
// process, port 0, state in a temporary directory), driven with plain HTTP
// requests as an MCP client sends them: sessions (Mcp-Session-Id), the
// protocol version header, Origin, auth tokens and their products, the
// tools, the GET event stream, and what happens to a session's allocations
// when it is deleted or expires.
#include "mcp/http_transport.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "mcp/mcp_server.h"
#include "qm/config_loader.h"
#include "server/server_config.h"
#include "tests/server/test_util.h"

namespace qm::mcp::testing {
namespace {

using Json = nlohmann::json;
using Headers = std::vector<std::pair<std::string, std::string>>;
using server::HttpClient;
using server::Role;
using server::ServerConfig;
using server::Sha256Hex;

// At most 2 agents at once, so a third request queues.
constexpr const char* kTwoAgents = R"(
max_concurrent:
  total: 2
)";

constexpr const char* kWebToken = "qm_mcp_web_agent_secret";
constexpr const char* kApiToken = "qm_mcp_api_agent_secret";
constexpr const char* kAdminToken = "qm_mcp_admin_secret";

ServerConfig Tokens() {
  ServerConfig c;
  c.tokens = {
      {"web-agent", Sha256Hex(kWebToken), Role::kAgent, {"web"}},
      {"api-agent", Sha256Hex(kApiToken), Role::kAgent, {"api"}},
      {"root", Sha256Hex(kAdminToken), Role::kAdmin, {}},
  };
  return c;
}

// One HTTP answer, its JSON body parsed (null when not JSON or empty).
struct Answer {
  int status = 0;
  std::string body;
  Json json;
  std::string session;  // its Mcp-Session-Id header
  std::string content_type;
};

Json Request(const Json& id, const std::string& method,
             Json params = Json::object()) {
  return Json{{"jsonrpc", "2.0"},
              {"id", id},
              {"method", method},
              {"params", std::move(params)}};
}

Json InitializeRequest(const std::string& version = "2025-06-18") {
  return Request(0, "initialize",
                 {{"protocolVersion", version},
                  {"capabilities", Json::object()},
                  {"clientInfo", {{"name", "http_test"}, {"version", "1"}}}});
}

Json Coder(const std::string& workflow, const std::string& product = "") {
  Json r = {{"workflow_id", workflow}, {"agent_type", "coder"}};
  if (!product.empty()) r["product"] = product;
  return r;
}

class McpHttpTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (app_) {
      EXPECT_TRUE(app_->Stop(std::chrono::seconds(5)).ok());
    }
  }

  // Starts the server; `tune` may change its options.
  void Start(ServerConfig auth = {},
             const std::function<void(server::ServeOptions&)>& tune = nullptr,
             const std::string& yaml = kTwoAgents) {
    server::ServeOptions o;
    o.http.listen = "127.0.0.1:0";
    o.sample = false;  // hermetic: no readings of this machine
    o.service.auth = std::move(auth);
    o.service.workers = 8;
    o.durable.store.location = dir_.path();
    auto c = LoadConfigString(yaml, "test config");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    o.config = *c;
    if (tune) tune(o);
    auto app = server::App::Start(std::move(o));
    ASSERT_TRUE(app.ok()) << app.status().ToString();
    app_ = std::move(*app);
    url_ = "http://" + app_->address();
  }

  // Sends one HTTP request to /mcp with the headers of an MCP client (and
  // `extra`, which may replace them: an empty value drops the header).
  Answer Http(const std::string& method, const std::string& body,
              const std::string& session, const std::string& token,
              const Headers& extra = {}) {
    Headers h = {{"Accept", "application/json, text/event-stream"},
                 {"Content-Type", "application/json"}};
    if (!session.empty()) {
      h.emplace_back("Mcp-Session-Id", session);
      h.emplace_back("MCP-Protocol-Version", "2025-06-18");
    }
    if (!token.empty()) h.emplace_back("Authorization", "Bearer " + token);
    for (const auto& [name, value] : extra) {
      std::erase_if(
          h, [&](const auto& kv) { return Lower(kv.first) == Lower(name); });
      if (!value.empty()) h.emplace_back(name, value);
    }
    HttpClient c = server::testing::ClientOf(url_);
    auto r = c.Call(method, "/mcp", body, std::chrono::seconds(60), h);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    Answer a;
    if (!r.ok()) return a;
    a.status = r->status;
    a.body = r->body;
    a.content_type = r->content_type;
    for (const auto& [name, value] : r->headers) {
      if (name == "mcp-session-id") a.session = value;
      if (name == "content-type") a.content_type = value;
    }
    if (!a.body.empty()) a.json = Json::parse(a.body, nullptr, false);
    if (a.json.is_discarded()) a.json = Json();
    return a;
  }
  Answer Post(const Json& msg, const std::string& session,
              const std::string& token = "", const Headers& extra = {}) {
    return Http("POST", msg.dump(), session, token, extra);
  }

  // A new initialized session; its id.
  std::string Open(const std::string& token = "") {
    Answer a = Post(InitializeRequest(), "", token);
    EXPECT_EQ(a.status, 200) << a.body;
    EXPECT_FALSE(a.session.empty());
    Answer n =
        Post(Json{{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}},
             a.session, token);
    EXPECT_EQ(n.status, 202) << n.body;
    return a.session;
  }

  // Calls a tool; its CallToolResult.
  Json Tool(const std::string& session, const std::string& name,
            const Json& args, const std::string& token = "") {
    Answer a = Post(Request(++next_id_, "tools/call",
                            {{"name", name}, {"arguments", args}}),
                    session, token);
    EXPECT_EQ(a.status, 200) << a.body;
    EXPECT_TRUE(a.json.contains("result")) << a.body;
    return a.json.contains("result") ? a.json["result"] : Json();
  }

  // The API directly; its envelope.
  Json Api(const std::string& method, const std::string& target,
           const std::string& body = "", const std::string& token = "") {
    HttpClient c = server::testing::ClientOf(url_, token);
    auto r = c.Call(method, target, body, std::chrono::seconds(30));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return Json();
    return Json::parse(r->body, nullptr, false);
  }
  std::string StatusOf(const std::string& id, const std::string& token = "") {
    Json j = Api("GET", "/v1/allocations/" + id, "", token);
    return j["result"].value("status", "?");
  }

  static std::string Lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(c));
    return s;
  }

  server::testing::TempDir dir_;
  std::unique_ptr<server::App> app_;
  std::string url_;
  std::atomic<int> next_id_ = 0;  // tools are called from several threads
};

TEST_F(McpHttpTest, InitializeOpensASessionAndToolsList) {
  Start();
  Answer init = Post(InitializeRequest(), "");
  ASSERT_EQ(init.status, 200) << init.body;
  EXPECT_EQ(init.content_type, "application/json");
  EXPECT_EQ(init.json["id"], 0);
  EXPECT_EQ(init.json["result"]["protocolVersion"], "2025-06-18");
  EXPECT_EQ(init.json["result"]["serverInfo"]["name"], "qm");
  ASSERT_FALSE(init.session.empty());
  EXPECT_EQ(
      init.session.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-"),
      std::string::npos)
      << init.session;
  // Each initialize opens a session of its own.
  EXPECT_NE(Post(InitializeRequest(), "").session, init.session);

  // A notification is accepted with 202 and no body.
  Answer n =
      Post(Json{{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}},
           init.session);
  EXPECT_EQ(n.status, 202);
  EXPECT_TRUE(n.body.empty()) << n.body;

  Answer tools = Post(Request(1, "tools/list"), init.session);
  ASSERT_EQ(tools.status, 200) << tools.body;
  EXPECT_EQ(tools.json["id"], 1);
  std::vector<std::string> names;
  for (const Json& t : tools.json["result"]["tools"])
    names.push_back(t["name"]);
  EXPECT_EQ(names.size(), 8u);
  EXPECT_NE(std::find(names.begin(), names.end(), "resource_allocate"),
            names.end());

  // JSON-RPC errors of a message are answered in JSON-RPC.
  Answer unknown = Post(Request(2, "tools/teleport"), init.session);
  EXPECT_EQ(unknown.status, 200);
  EXPECT_EQ(unknown.json["error"]["code"], kMethodNotFound) << unknown.body;
  // A notification that cannot be taken is refused with 400.
  Answer bad = Http("POST", "{not json", init.session, "");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(bad.json["error"]["code"], "INVALID_REQUEST") << bad.body;
  EXPECT_NE(bad.body.find("-32700"), std::string::npos) << bad.body;
}

TEST_F(McpHttpTest, AllocateMonitorReleaseAndToolErrors) {
  Start();
  const std::string s = Open();
  Json a = Tool(s, "resource_allocate",
                {{"requirements", Coder("w1")}, {"priority", "high"}});
  ASSERT_EQ(a["isError"], false) << a.dump();
  const std::string id = a["structuredContent"]["allocation_id"];
  EXPECT_EQ(a["structuredContent"]["status"], "active");
  EXPECT_EQ(StatusOf(id), "active");

  Json m = Tool(s, "resource_monitor", Json::object());
  ASSERT_EQ(m["isError"], false) << m.dump();
  bool listed = false;
  for (const Json& x : m["structuredContent"]["allocations"]) {
    listed |= x["allocation_id"] == id && x["status"] == "active";
  }
  EXPECT_TRUE(listed) << m.dump();
  EXPECT_EQ(
      m["structuredContent"]["status"]["resources"]["agents"]["allocated"], 1);

  Json r = Tool(s, "resource_release",
                {{"allocation_id", id},
                 {"usage", {{"tokens", 100}, {"outcome", "success"}}}});
  ASSERT_EQ(r["isError"], false) << r.dump();
  EXPECT_EQ(r["structuredContent"]["status"], "released");
  EXPECT_EQ(StatusOf(id), "released");

  Json invalid =
      Tool(s, "resource_allocate", {{"requirements", {{"workflow_id", "w"}}}});
  EXPECT_EQ(invalid["isError"], true);
  EXPECT_EQ(invalid["structuredContent"]["error"]["code"], "INVALID_REQUEST");
  EXPECT_NE(
      invalid["structuredContent"]["error"]["message"].get<std::string>().find(
          "agent_type"),
      std::string::npos)
      << invalid.dump();
  Json gone = Tool(s, "resource_release", {{"allocation_id", "alloc_999"}});
  EXPECT_EQ(gone["isError"], true);
  EXPECT_EQ(gone["structuredContent"]["error"]["code"], "NOT_FOUND");
}

TEST_F(McpHttpTest, SessionIdIsRequiredAndUnknownOnesAre404) {
  Start();
  Answer none = Post(Request(1, "tools/list"), "");
  EXPECT_EQ(none.status, 400) << none.body;
  EXPECT_EQ(none.json["error"]["code"], "INVALID_REQUEST");
  EXPECT_EQ(none.json["operation"], "mcp");
  EXPECT_NE(none.body.find("Mcp-Session-Id"), std::string::npos);

  Answer unknown = Post(Request(1, "tools/list"), "mcp-0123456789abcdef");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  EXPECT_EQ(unknown.json["error"]["code"], "NOT_FOUND");

  EXPECT_EQ(Http("GET", "", "", "").status, 400);
  EXPECT_EQ(Http("GET", "", "mcp-nope", "").status, 404);
  EXPECT_EQ(Http("DELETE", "", "", "").status, 400);
  EXPECT_EQ(Http("DELETE", "", "mcp-nope", "").status, 404);
  // Other methods are not served.
  EXPECT_EQ(Http("PUT", "{}", "", "").status, 405);
}

TEST_F(McpHttpTest, ProtocolVersionHeaderMustBeTheSessions) {
  Start();
  const std::string s = Open();
  Answer ok = Post(Request(1, "ping"), s);
  EXPECT_EQ(ok.status, 200) << ok.body;
  Answer absent =
      Post(Request(2, "ping"), s, "", {{"MCP-Protocol-Version", ""}});
  EXPECT_EQ(absent.status, 200) << absent.body;
  Answer unsupported =
      Post(Request(3, "ping"), s, "", {{"MCP-Protocol-Version", "1999-01-01"}});
  EXPECT_EQ(unsupported.status, 400) << unsupported.body;
  EXPECT_NE(unsupported.body.find("not supported"), std::string::npos);
  Answer other =
      Post(Request(4, "ping"), s, "", {{"MCP-Protocol-Version", "2025-03-26"}});
  EXPECT_EQ(other.status, 400) << other.body;

  // A 2025-03-26 session: its version, and batches.
  Answer old = Post(InitializeRequest("2025-03-26"), "");
  ASSERT_EQ(old.status, 200);
  EXPECT_EQ(old.json["result"]["protocolVersion"], "2025-03-26");
  Answer batch =
      Http("POST", Json::array({Request(5, "ping"), Request(6, "ping")}).dump(),
           old.session, "", {{"MCP-Protocol-Version", "2025-03-26"}});
  ASSERT_EQ(batch.status, 200) << batch.body;
  ASSERT_TRUE(batch.json.is_array()) << batch.body;
  EXPECT_EQ(batch.json.size(), 2u);
}

TEST_F(McpHttpTest, ContentNegotiation) {
  Start();
  Answer json_only =
      Post(InitializeRequest(), "", "", {{"Accept", "application/json"}});
  EXPECT_EQ(json_only.status, 200) << json_only.body;
  Answer html = Post(InitializeRequest(), "", "", {{"Accept", "text/html"}});
  EXPECT_EQ(html.status, 406) << html.body;
  Answer form = Post(InitializeRequest(), "", "",
                     {{"Content-Type", "application/x-www-form-urlencoded"}});
  EXPECT_EQ(form.status, 415) << form.body;
  const std::string s = Open();
  EXPECT_EQ(Http("GET", "", s, "", {{"Accept", "application/json"}}).status,
            406);
}

TEST_F(McpHttpTest, OriginsNotAllowedAre403) {
  Start();
  Answer evil =
      Post(InitializeRequest(), "", "", {{"Origin", "http://evil.example"}});
  EXPECT_EQ(evil.status, 403) << evil.body;
  EXPECT_EQ(evil.json["error"]["code"], "PERMISSION_DENIED");
  EXPECT_TRUE(evil.session.empty());
  // A page on another host that resolves to 127.0.0.1 (DNS rebinding)
  // still sends its own origin.
  EXPECT_EQ(Post(InitializeRequest(), "", "",
                 {{"Origin", "http://localhost.evil.example:7070"}})
                .status,
            403);
  EXPECT_EQ(
      Post(InitializeRequest(), "", "", {{"Origin", "http://localhost:5173"}})
          .status,
      200);
  EXPECT_EQ(Post(InitializeRequest(), "", "", {{"Origin", "http://127.0.0.1"}})
                .status,
            200);
  // Every request is checked, not only initialize.
  const std::string s = Open();
  EXPECT_EQ(Post(Request(1, "ping"), s, "", {{"Origin", "null"}}).status, 403);
  EXPECT_EQ(
      Http("DELETE", "", s, "", {{"Origin", "http://evil.example"}}).status,
      403);
  EXPECT_EQ(Post(Request(2, "ping"), s).status, 200);
}

TEST_F(McpHttpTest, AllowedOriginsComeFromTheConfigFile) {
  auto cfg = server::LoadServerConfigString(
      "server:\n  mcp:\n    allowed_origins: [\"https://app.example.com\", "
      "\"http://tools.internal:*\"]\n",
      "test");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  ASSERT_TRUE(cfg->mcp_allowed_origins.has_value());
  Start(*cfg);
  auto origin = [&](const std::string& o) {
    return Post(InitializeRequest(), "", "", {{"Origin", o}}).status;
  };
  EXPECT_EQ(origin("https://app.example.com"), 200);
  EXPECT_EQ(origin("https://APP.example.com"), 200);
  EXPECT_EQ(origin("http://tools.internal:8080"), 200);
  EXPECT_EQ(origin("http://app.example.com"), 403);
  EXPECT_EQ(origin("https://app.example.com:8443"), 403);
  EXPECT_EQ(origin("http://localhost:5173"), 403);       // the list replaces
  EXPECT_EQ(Post(InitializeRequest(), "").status, 200);  // no Origin

  // Bad entries are refused with the key named.
  for (const char* bad :
       {"server: {mcp: {allowed_origins: localhost}}",
        "server: {mcp: {allowed_origins: [\"localhost:3000\"]}}",
        "server: {mcp: {allowed_origins: [\"http://x/\"]}}",
        "server: {mcp: {origins: []}}"}) {
    auto r = server::LoadServerConfigString(bad, "test");
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("server.mcp."), std::string::npos)
        << r.status().ToString();
  }
  auto none = server::LoadServerConfigString("server: {}\n", "test");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->mcp_allowed_origins.has_value());
}

TEST(OriginAllowedTest, Patterns) {
  const std::vector<std::string> d = DefaultAllowedOrigins();
  EXPECT_TRUE(OriginAllowed("http://localhost:3000", d));
  EXPECT_TRUE(OriginAllowed("http://localhost", d));
  EXPECT_TRUE(OriginAllowed("http://[::1]:8080", d));
  EXPECT_TRUE(OriginAllowed("https://127.0.0.1:443", d));
  EXPECT_FALSE(OriginAllowed("http://localhost:3000x", d));
  EXPECT_FALSE(OriginAllowed("http://localhost:", d));
  EXPECT_FALSE(OriginAllowed("http://127.0.0.1.nip.io:80", d));
  EXPECT_FALSE(OriginAllowed("null", d));
  EXPECT_TRUE(OriginAllowed("http://anything", {"*"}));
  EXPECT_FALSE(OriginAllowed("http://anything", {}));
}

TEST_F(McpHttpTest, TokensAreRequiredAndAgentsSeeOnlyTheirProducts) {
  Start(Tokens());
  // No token, an unknown one: 401, as on /v1.
  Answer none = Post(InitializeRequest(), "");
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_EQ(none.json["error"]["code"], "UNAUTHENTICATED");
  EXPECT_EQ(Post(InitializeRequest(), "", "qm_wrong").status, 401);

  const std::string web = Open(kWebToken);
  const std::string api = Open(kApiToken);
  // A session belongs to the token that opened it.
  EXPECT_EQ(Post(Request(1, "ping"), web, kApiToken).status, 404);
  EXPECT_EQ(Post(Request(1, "ping"), web, "").status, 401);
  EXPECT_EQ(Post(Request(1, "ping"), web, kWebToken).status, 200);

  // The api agent's allocation, and the admin's in another product.
  Json mine = Tool(api, "resource_allocate",
                   {{"requirements", Coder("api-w", "api")}}, kApiToken);
  ASSERT_EQ(mine["isError"], false) << mine.dump();
  const std::string api_id = mine["structuredContent"]["allocation_id"];

  // The web agent cannot allocate in api, see api's allocation, or
  // release it.
  Json cross = Tool(web, "resource_allocate",
                    {{"requirements", Coder("x", "api")}}, kWebToken);
  EXPECT_EQ(cross["isError"], true) << cross.dump();
  EXPECT_EQ(cross["structuredContent"]["error"]["code"], "PERMISSION_DENIED");
  Json seen =
      Tool(web, "resource_monitor",
           {{"filters", {{"status", {"active", "queued"}}}}}, kWebToken);
  ASSERT_EQ(seen["isError"], false) << seen.dump();
  for (const Json& x : seen["structuredContent"]["allocations"]) {
    EXPECT_NE(x["allocation_id"], api_id) << seen.dump();
  }
  Json steal =
      Tool(web, "resource_release", {{"allocation_id", api_id}}, kWebToken);
  EXPECT_EQ(steal["isError"], true);
  EXPECT_EQ(steal["structuredContent"]["error"]["code"], "NOT_FOUND");
  EXPECT_EQ(StatusOf(api_id, kAdminToken), "active");

  // Within its product it works, and the api agent does not see that one.
  Json own = Tool(web, "resource_allocate",
                  {{"requirements", Coder("web-w", "web")}}, kWebToken);
  ASSERT_EQ(own["isError"], false) << own.dump();
  const std::string web_id = own["structuredContent"]["allocation_id"];
  Json api_view = Tool(api, "resource_monitor", Json::object(), kApiToken);
  ASSERT_EQ(api_view["isError"], false);
  bool saw_api = false;
  for (const Json& x : api_view["structuredContent"]["allocations"]) {
    EXPECT_NE(x["allocation_id"], web_id);
    saw_api |= x["allocation_id"] == api_id;
  }
  EXPECT_TRUE(saw_api) << api_view.dump();
  // Operator-only tools are refused to an agent, as on /v1.
  Json metrics =
      Tool(web, "resource_monitor", {{"format", "metrics"}}, kWebToken);
  EXPECT_EQ(metrics["isError"], true);
  EXPECT_EQ(metrics["structuredContent"]["error"]["code"], "PERMISSION_DENIED");
}

TEST_F(McpHttpTest, DeleteEndsTheSessionAndGivesBackItsAllocations) {
  Start();
  const std::string s = Open();
  const std::string other = Open();
  std::vector<std::string> active;
  for (const char* w : {"d1", "d2"}) {
    Json a = Tool(s, "resource_allocate", {{"requirements", Coder(w)}});
    ASSERT_EQ(a["structuredContent"]["status"], "active") << a.dump();
    active.push_back(a["structuredContent"]["allocation_id"]);
  }
  Json q = Tool(s, "resource_allocate", {{"requirements", Coder("d3")}});
  ASSERT_EQ(q["structuredContent"]["status"], "queued") << q.dump();
  const std::string queued = q["structuredContent"]["allocation_id"];
  // Released through the session already: not given back twice.
  Json r = Tool(s, "resource_release", {{"allocation_id", active[0]}});
  ASSERT_EQ(r["isError"], false);
  // (The queued one is granted the freed slot.)
  EXPECT_EQ(StatusOf(queued), "active");

  Answer del = Http("DELETE", "", s, "");
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.json["session_id"], s);
  EXPECT_EQ(del.json["released"].size(), 2u) << del.body;
  EXPECT_EQ(del.json["cancelled"].size(), 0u) << del.body;
  EXPECT_EQ(StatusOf(active[1]), "released");
  EXPECT_EQ(StatusOf(queued), "released");
  // The session is gone; another one is not touched.
  EXPECT_EQ(Post(Request(1, "ping"), s).status, 404);
  EXPECT_EQ(Http("DELETE", "", s, "").status, 404);
  EXPECT_EQ(Post(Request(2, "ping"), other).status, 200);

  // A queued allocation is cancelled.
  Api("POST", "/v1/allocations", R"({"workflow_id": "h1", "agent_type": "x"})");
  Api("POST", "/v1/allocations", R"({"workflow_id": "h2", "agent_type": "x"})");
  Json waiting =
      Tool(other, "resource_allocate", {{"requirements", Coder("d4")}});
  ASSERT_EQ(waiting["structuredContent"]["status"], "queued") << waiting.dump();
  Answer del2 = Http("DELETE", "", other, "");
  ASSERT_EQ(del2.status, 200) << del2.body;
  EXPECT_EQ(del2.json["cancelled"],
            Json::array({waiting["structuredContent"]["allocation_id"]}));
  EXPECT_EQ(StatusOf(waiting["structuredContent"]["allocation_id"]),
            "cancelled");
}

TEST_F(McpHttpTest, IdleSessionsExpireAndGiveBackTheirAllocations) {
  Start({}, [](server::ServeOptions& o) {
    o.mcp.idle_timeout = std::chrono::seconds(1);
    o.mcp.poll_interval = std::chrono::milliseconds(100);
  });
  const std::string s = Open();
  Json a = Tool(s, "resource_allocate", {{"requirements", Coder("idle")}});
  const std::string id = a["structuredContent"]["allocation_id"];
  ASSERT_EQ(StatusOf(id), "active");
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (StatusOf(id) == "active" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(StatusOf(id), "released");
  EXPECT_EQ(Post(Request(1, "ping"), s).status, 404);
}

TEST_F(McpHttpTest, ALongToolCallHoldsUpNothingElse) {
  Start();
  for (const char* w : {"h1", "h2"}) {
    Api("POST", "/v1/allocations",
        std::string(R"({"workflow_id": ")") + w + R"(", "agent_type": "x"})");
  }
  const std::string s = Open();
  // More waiting allocates than the server has I/O threads.
  std::vector<std::thread> waiting;
  std::mutex mu;
  std::vector<Json> results;
  for (int i = 0; i < 4; ++i) {
    waiting.emplace_back([&, i] {
      Json r = Tool(s, "resource_allocate",
                    {{"requirements", Coder("wait-" + std::to_string(i))},
                     {"timeout", 4}});
      std::lock_guard<std::mutex> lock(mu);
      results.push_back(r["structuredContent"]);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(Post(Request(1, "ping"), s).status, 200);
  EXPECT_EQ(Post(Request(2, "tools/list"), s).status, 200);
  EXPECT_EQ(Api("GET", "/v1/status")["status"], "success");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(results.empty());
  }
  // Freeing the slots grants two of the waiters at once.
  Json list = Api("GET", "/v1/allocations?status=active");
  ASSERT_EQ(list["result"]["allocations"].size(), 2u) << list.dump();
  for (const Json& a : list["result"]["allocations"]) {
    Api("POST", "/v1/allocations/" + a["allocation_id"].get<std::string>() +
                    "/release");
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(3);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (results.size() >= 2 || std::chrono::steady_clock::now() > deadline) {
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(results.size(), 2u);
    for (const Json& r : results) EXPECT_EQ(r["status"], "active") << r.dump();
  }
  // The session ends while two still wait: the granted ones are released
  // now; the waiting ones, whose ids the session learns only from their
  // answers, are cancelled when their wait ends.
  Answer del = Http("DELETE", "", s, "");
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(del.json["released"].size(), 2u) << del.body;
  for (auto& t : waiting) t.join();
  ASSERT_EQ(results.size(), 4u);
  for (const Json& r : results) {
    const std::string id = r["allocation_id"];
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while ((StatusOf(id) == "active" || StatusOf(id) == "queued") &&
           std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const std::string status = StatusOf(id);
    EXPECT_TRUE(status == "released" || status == "cancelled")
        << id << " " << status;
  }
}

TEST_F(McpHttpTest, TheGetStreamCarriesResourceNotifications) {
  Start();
  const std::string s = Open();
  Answer sub =
      Post(Request(1, "resources/subscribe", {{"uri", "qm://status"}}), s);
  ASSERT_EQ(sub.status, 200) << sub.body;
  std::string message;
  std::thread reader([&] {
    HttpClient c = server::testing::ClientOf(url_);
    Status st = c.Stream("/mcp",
                         [&](const std::string&, const std::string& event,
                             const std::string& data) {
                           if (event != "message" || data.empty()) return true;
                           message = data;
                           return false;
                         },
                         std::chrono::seconds(15),
                         {{"Accept", "text/event-stream"},
                          {"Mcp-Session-Id", s},
                          {"MCP-Protocol-Version", "2025-06-18"}});
    EXPECT_TRUE(st.ok()) << st.ToString();
  });
  // The stream is open once the session says so (no event before).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Api("POST", "/v1/allocations", R"({"workflow_id": "n", "agent_type": "x"})");
  reader.join();
  const Json n = Json::parse(message, nullptr, false);
  EXPECT_EQ(n["method"], "notifications/resources/updated") << message;
  EXPECT_EQ(n["params"]["uri"], "qm://status");
}

}  // namespace
}  // namespace qm::mcp::testing
