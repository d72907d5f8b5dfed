// McpServer against a real `qm serve` in this process: the lifecycle and
// version negotiation, the tool list and its schemas, the tools end to end
// (allocate, monitor, release, waiting, errors), the resources and their
// subscriptions, and cancellation.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <set>
#include <string>
#include <thread>

#include "mcp/json_schema.h"
#include "mcp/tools.h"
#include "tests/mcp/mcp_test_util.h"

namespace qm::mcp::testing {
namespace {

// The text of a tool result's first content block.
std::string Text(const Json& result) {
  if (!result.contains("content") || result["content"].empty()) return "";
  return result["content"][0].value("text", "");
}

Json Allocations(const Json& monitor_result) {
  return monitor_result["structuredContent"]["allocations"];
}

bool Lists(const Json& allocations, const std::string& id) {
  for (const Json& a : allocations) {
    if (a["allocation_id"] == id) return true;
  }
  return false;
}

// ---------------------------------------------------------------- lifecycle

TEST_F(McpTest, InitializeAnswersCapabilitiesAndTheAskedVersion) {
  Json r = Initialize();
  ASSERT_TRUE(r.contains("result")) << r.dump();
  EXPECT_EQ(r["id"], 0);
  const Json& res = r["result"];
  EXPECT_EQ(res["protocolVersion"], "2025-06-18");
  EXPECT_EQ(res["serverInfo"]["name"], "qm");
  EXPECT_TRUE(res["serverInfo"]["version"].is_string());
  EXPECT_EQ(res["capabilities"]["tools"]["listChanged"], false);
  EXPECT_EQ(res["capabilities"]["resources"]["subscribe"], true);
  EXPECT_EQ(res["capabilities"]["resources"]["listChanged"], false);
  EXPECT_TRUE(mcp_->initialized());
  EXPECT_EQ(mcp_->protocol_version(), "2025-06-18");
}

TEST_F(McpTest, VersionNegotiation) {
  auto s = NewSession();
  EXPECT_EQ(Initialize(*s, "2025-03-26")["result"]["protocolVersion"],
            "2025-03-26");
  // Versions we do not speak, older or newer: our latest.
  for (const char* v : {"2024-11-05", "2025-11-25", "1999-01-01", ""}) {
    auto t = NewSession();
    EXPECT_EQ(Initialize(*t, v)["result"]["protocolVersion"], "2025-06-18")
        << v;
  }
}

TEST_F(McpTest, InitializeTwiceOrWithoutAVersionIsRefused) {
  Json bad = Send(Request(1, "initialize", {{"capabilities", Json::object()}}));
  EXPECT_EQ(bad["error"]["code"], kInvalidParams) << bad.dump();
  EXPECT_FALSE(mcp_->initialized());
  Initialize();
  Json again =
      Send(Request(2, "initialize", {{"protocolVersion", "2025-06-18"}}));
  EXPECT_EQ(again["error"]["code"], kInvalidRequest) << again.dump();
  EXPECT_EQ(again["id"], 2);
}

TEST_F(McpTest, RequestsBeforeInitializeAreRefusedButPingWorks) {
  for (const char* method :
       {"tools/list", "tools/call", "resources/list", "resources/read"}) {
    Json r = Send(Request("a", method));
    EXPECT_EQ(r["error"]["code"], kInvalidRequest) << method;
    EXPECT_EQ(r["id"], "a");
  }
  Json ping = Send(Request(7, "ping"));
  EXPECT_EQ(ping["result"], Json::object());
  EXPECT_EQ(ping["id"], 7);
  Initialize();
  EXPECT_TRUE(Send(Request(8, "tools/list")).contains("result"));
}

// ---------------------------------------------------------------- tool list

TEST_F(McpTest, ToolsListHasEveryToolWithStrictSchemas) {
  Initialize();
  Json r = Send(Request(1, "tools/list"));
  ASSERT_TRUE(r.contains("result")) << r.dump();
  std::set<std::string> names;
  for (const Json& t : r["result"]["tools"]) {
    const std::string name = t["name"];
    names.insert(name);
    EXPECT_FALSE(t.value("description", "").empty()) << name;
    const Json& in = t["inputSchema"];
    EXPECT_EQ(in["type"], "object") << name;
    EXPECT_EQ(in["additionalProperties"], false) << name;
    EXPECT_TRUE(in["properties"].is_object()) << name;
    const Json& out = t["outputSchema"];
    EXPECT_EQ(out["type"], "object") << name;
    EXPECT_TRUE(out["properties"].contains("error")) << name;
    std::string bad;
    EXPECT_TRUE(SchemaKeywordsSupported(in, &bad)) << name << ": " << bad;
    EXPECT_TRUE(SchemaKeywordsSupported(out, &bad)) << name << ": " << bad;
    EXPECT_TRUE(t["annotations"].contains("readOnlyHint")) << name;
  }
  EXPECT_EQ(names, (std::set<std::string>{
                       "resource_allocate", "resource_release",
                       "resource_renew", "resource_monitor",
                       "resource_check_conflicts", "resource_reserve",
                       "resource_optimize", "resource_analytics"}));

  const Tool* allocate = FindTool("resource_allocate");
  ASSERT_NE(allocate, nullptr);
  EXPECT_EQ(allocate->input_schema["required"], Json::array({"requirements"}));
  const Json& req = allocate->input_schema["properties"]["requirements"];
  EXPECT_EQ(req["required"], Json::array({"workflow_id", "agent_type"}));
  EXPECT_EQ(req["additionalProperties"], false);
  EXPECT_TRUE(req["properties"].contains("ttl_seconds"));
  EXPECT_TRUE(allocate->input_schema["properties"].contains("timeout"));
  EXPECT_TRUE(allocate->input_schema["properties"].contains("priority"));
  EXPECT_EQ(FindTool("resource_release")->input_schema["required"],
            Json::array({"allocation_id"}));
  EXPECT_EQ(FindTool("resource_monitor")
                ->input_schema["properties"]["format"]["enum"],
            Json::array({"json", "metrics", "dashboard"}));
}

// Every success and error result of the tools matches the output schema
// the tool declares (as the SDK checks).
void ExpectMatchesOutputSchema(const std::string& tool, const Json& result) {
  const Tool* t = FindTool(tool);
  ASSERT_NE(t, nullptr);
  Status s = ValidateJson(t->output_schema, result["structuredContent"],
                          "structuredContent");
  EXPECT_TRUE(s.ok()) << tool << ": " << s.message() << "\n"
                      << result["structuredContent"].dump();
}

// ---------------------------------------------------------------- tools

TEST_F(McpTest, AllocateMonitorRelease) {
  Initialize();
  Json a =
      CallTool("resource_allocate", {{"requirements",
                                      {{"workflow_id", "w1"},
                                       {"agent_type", "coder"},
                                       {"product", "web"},
                                       {"ttl_seconds", 300},
                                       {"estimated_tokens", 5000},
                                       {"exclusive_access", {"src/app.ts"}}}},
                                     {"priority", "high"}});
  ASSERT_FALSE(a["isError"].get<bool>()) << a.dump();
  ExpectMatchesOutputSchema("resource_allocate", a);
  const Json& alloc = a["structuredContent"];
  const std::string id = alloc["allocation_id"];
  EXPECT_EQ(alloc["status"], "active");
  EXPECT_EQ(alloc["priority"], "high");
  EXPECT_EQ(alloc["product"], "web");
  EXPECT_GT(alloc["fencing_token"].get<int>(), 0);
  EXPECT_TRUE(alloc["idempotency_key"].is_string());
  EXPECT_NE(Text(a).find(id + " is active"), std::string::npos) << Text(a);
  // The server agrees.
  Json got = Api("GET", "/v1/allocations/" + id);
  EXPECT_EQ(got["result"]["status"], "active");
  EXPECT_EQ(got["result"]["priority"], "high");

  Json m = CallTool("resource_monitor", Json::object());
  ASSERT_FALSE(m["isError"].get<bool>()) << m.dump();
  ExpectMatchesOutputSchema("resource_monitor", m);
  EXPECT_TRUE(Lists(Allocations(m), id)) << m.dump();
  const Json& status = m["structuredContent"]["status"];
  EXPECT_EQ(status["resources"]["agents"]["allocated"], 1.0);
  EXPECT_EQ(status["resources"]["agents"]["total"], 2.0);
  EXPECT_EQ(status["allocations"]["active"], 1);

  Json d = CallTool("resource_monitor", {{"format", "dashboard"}});
  ASSERT_FALSE(d["isError"].get<bool>()) << d.dump();
  ExpectMatchesOutputSchema("resource_monitor", d);
  EXPECT_NE(Text(d).find(id + " active coder w1 [web]"), std::string::npos)
      << Text(d);
  EXPECT_NE(Text(d).find("agents"), std::string::npos);
  EXPECT_EQ(d["structuredContent"]["dashboard"], Text(d));

  // Filters: another product lists nothing; the allocation by id.
  Json other =
      CallTool("resource_monitor", {{"filters", {{"product", "mobile"}}}});
  EXPECT_TRUE(Allocations(other).empty()) << other.dump();
  Json by_id =
      CallTool("resource_monitor", {{"filters", {{"allocation_id", id}}}});
  EXPECT_TRUE(Lists(Allocations(by_id), id));

  Json r = CallTool("resource_release", {{"allocation_id", id},
                                         {"usage",
                                          {{"input_tokens", 3000},
                                           {"output_tokens", 1000},
                                           {"outcome", "success"}}}});
  ASSERT_FALSE(r["isError"].get<bool>()) << r.dump();
  ExpectMatchesOutputSchema("resource_release", r);
  EXPECT_EQ(r["structuredContent"]["status"], "released");
  EXPECT_EQ(r["structuredContent"]["usage"]["outcome"], "success");
  EXPECT_EQ(Api("GET", "/v1/allocations/" + id)["result"]["status"],
            "released");

  Json after = CallTool("resource_monitor", Json::object());
  EXPECT_FALSE(Lists(Allocations(after), id));
  Json released =
      CallTool("resource_monitor", {{"filters", {{"status", {"released"}}}}});
  EXPECT_TRUE(Lists(Allocations(released), id));
}

TEST_F(McpTest, RenewExtendsTheLease) {
  Initialize();
  Json a = CallTool("resource_allocate",
                    {{"requirements", Coder("w")}, {"priority", 70}});
  ASSERT_FALSE(a["isError"].get<bool>()) << a.dump();
  const std::string id = a["structuredContent"]["allocation_id"];
  Json r = CallTool("resource_renew",
                    {{"allocation_id", id}, {"ttl_seconds", 3600}});
  ASSERT_FALSE(r["isError"].get<bool>()) << r.dump();
  ExpectMatchesOutputSchema("resource_renew", r);
  EXPECT_GT(r["structuredContent"]["expires_at"].get<std::string>(),
            a["structuredContent"]["expires_at"].get<std::string>());
  EXPECT_EQ(r["structuredContent"]["expires_at"],
            Api("GET", "/v1/allocations/" + id)["result"]["expires_at"]);
}

TEST_F(McpTest, AllocateQueuesThenWaitsForTheGrant) {
  Initialize();
  std::string held[2];
  for (int i = 0; i < 2; ++i) {
    Json a = CallTool("resource_allocate",
                      {{"requirements", Coder("w" + std::to_string(i))}});
    ASSERT_EQ(a["structuredContent"]["status"], "active") << a.dump();
    held[i] = a["structuredContent"]["allocation_id"];
  }
  // No timeout: answered at once, queued, with how to wait again.
  Json q = CallTool("resource_allocate", {{"requirements", Coder("w3")}});
  ASSERT_FALSE(q["isError"].get<bool>()) << q.dump();
  ExpectMatchesOutputSchema("resource_allocate", q);
  const Json& queued = q["structuredContent"];
  EXPECT_EQ(queued["status"], "queued");
  const std::string key = queued["idempotency_key"];
  EXPECT_NE(Text(q).find(key), std::string::npos) << Text(q);

  // Again with the same key and a timeout: waits until a release frees a
  // slot, then answers the grant of the same allocation.
  auto wait = std::async(std::launch::async, [&] {
    Json req = Coder("w3");
    req["idempotency_key"] = key;
    return CallTool("resource_allocate",
                    {{"requirements", req}, {"timeout", 20}});
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(wait.wait_for(std::chrono::seconds(0)),
            std::future_status::timeout);
  Api("POST", "/v1/allocations/" + held[0] + "/release");
  Json g = wait.get();
  ASSERT_FALSE(g["isError"].get<bool>()) << g.dump();
  EXPECT_EQ(g["structuredContent"]["status"], "active") << g.dump();
  EXPECT_EQ(g["structuredContent"]["allocation_id"], queued["allocation_id"]);
}

TEST_F(McpTest, AllocateTimeoutEndsStillQueued) {
  Initialize();
  for (int i = 0; i < 2; ++i) {
    CallTool("resource_allocate",
             {{"requirements", Coder("w" + std::to_string(i))}});
  }
  const auto t0 = std::chrono::steady_clock::now();
  Json q = CallTool("resource_allocate",
                    {{"requirements", Coder("w3")}, {"timeout", 1}});
  EXPECT_GE(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(900));
  ASSERT_FALSE(q["isError"].get<bool>()) << q.dump();
  EXPECT_EQ(q["structuredContent"]["status"], "queued");
  EXPECT_TRUE(q["structuredContent"].contains("queue_position"));
}

TEST_F(McpTest, InvalidArgumentsAreToolErrors) {
  Initialize();
  struct Case {
    std::string tool;
    Json args;
    std::string mentions;
  };
  const std::vector<Case> cases = {
      {"resource_allocate", Json::object(), "arguments.requirements"},
      {"resource_allocate",
       {{"requirements", {{"workflow_id", "w"}}}},
       "requirements.agent_type"},
      {"resource_allocate",
       {{"requirements", Coder("w")}, {"priority", "urgent"}},
       "arguments.priority"},
      {"resource_allocate",
       {{"requirements", Coder("w")}, {"priority", 101}},
       "arguments.priority"},
      {"resource_allocate",
       {{"requirements", Coder("w")}, {"timeout", -1}},
       "arguments.timeout"},
      {"resource_allocate",
       {{"requirements",
         {{"workflow_id", "w"}, {"agent_type", "coder"}, {"ttl_seconds", 0}}}},
       "ttl_seconds"},
      {"resource_allocate",
       {{"requirements",
         {{"workflow_id", "w"}, {"agent_type", "coder"}, {"cpu", 2}}}},
       "requirements.cpu: unknown field"},
      {"resource_allocate",
       {{"requirements",
         {{"workflow_id", "w"},
          {"agent_type", "coder"},
          {"resources", {{"cpu_cores", "two"}}}}}},
       "resources.cpu_cores"},
      {"resource_allocate",
       {{"requirements", Coder("w")}, {"bogus", 1}},
       "arguments.bogus"},
      {"resource_release", Json::object(), "allocation_id"},
      {"resource_release",
       {{"allocation_id", "alloc_1"}, {"usage", {{"tokens", -5}}}},
       "usage.tokens"},
      {"resource_release",
       {{"allocation_id", "alloc_1"}, {"usage", {{"outcome", "great"}}}},
       "usage.outcome"},
      {"resource_renew", {{"allocation_id", 7}}, "allocation_id"},
      {"resource_monitor", {{"format", "xml"}}, "arguments.format"},
      {"resource_monitor",
       {{"filters", {{"status", {"running"}}}}},
       "filters.status[0]"},
      {"resource_reserve",
       {{"start_time", "+1h"}, {"duration_seconds", 60}},
       "give workflow_id or product"},
      {"resource_analytics", {{"group_by", {"team"}}}, "group_by[0]"},
      {"resource_analytics",
       {{"time_range", {{"start", "yesterday"}}}},
       "time_range.start"},
      {"resource_optimize", {{"strategy", "fastest"}}, "arguments.strategy"},
  };
  for (const Case& c : cases) {
    Json r = CallTool(c.tool, c.args);
    ASSERT_TRUE(r.contains("isError")) << r.dump();
    EXPECT_TRUE(r["isError"].get<bool>()) << c.tool << " " << c.args.dump();
    const Json& e = r["structuredContent"]["error"];
    EXPECT_EQ(e["code"], "INVALID_REQUEST") << r.dump();
    EXPECT_NE(e.value("message", "").find(c.mentions), std::string::npos)
        << c.tool << " " << c.args.dump() << ": " << e.dump();
    EXPECT_NE(Text(r).find("INVALID_REQUEST"), std::string::npos);
    ExpectMatchesOutputSchema(c.tool, r);
  }
  // Nothing was allocated by any of them.
  EXPECT_EQ(Api("GET", "/v1/status")["result"]["allocations"]["active"], 0);
}

TEST_F(McpTest, ServerErrorsAreToolErrorsWithTheEnvelopeCode) {
  Initialize();
  Json r = CallTool("resource_release", {{"allocation_id", "alloc_404"}});
  EXPECT_TRUE(r["isError"].get<bool>());
  EXPECT_EQ(r["structuredContent"]["error"]["code"], "NOT_FOUND") << r.dump();
  EXPECT_NE(r["structuredContent"]["error"]["message"].get<std::string>().find(
                "alloc_404"),
            std::string::npos);
  ExpectMatchesOutputSchema("resource_release", r);

  Json a = CallTool("resource_allocate", {{"requirements", Coder("w")}});
  const std::string id = a["structuredContent"]["allocation_id"];
  CallTool("resource_release", {{"allocation_id", id}});
  Json renew = CallTool("resource_renew", {{"allocation_id", id}});
  EXPECT_TRUE(renew["isError"].get<bool>());
  EXPECT_EQ(renew["structuredContent"]["error"]["code"], "CONFLICT")
      << renew.dump();

  // More than a limit can ever allow.
  Json big =
      CallTool("resource_allocate", {{"requirements",
                                      {{"workflow_id", "w"},
                                       {"agent_type", "coder"},
                                       {"resources", {{"cpu_cores", 1000}}}}}});
  EXPECT_TRUE(big["isError"].get<bool>());
  EXPECT_EQ(big["structuredContent"]["error"]["code"], "RESOURCE_EXHAUSTED")
      << big.dump();
  // A resource the server does not know.
  Json unknown =
      CallTool("resource_allocate", {{"requirements",
                                      {{"workflow_id", "w"},
                                       {"agent_type", "coder"},
                                       {"resources", {{"gpu_unicorns", 1}}}}}});
  EXPECT_TRUE(unknown["isError"].get<bool>()) << unknown.dump();
}

TEST_F(McpTest, OptimizeReturnsTheServersRecommendationsAndAppliesNothing) {
  Initialize();
  Json r = CallTool("resource_optimize",
                    {{"strategy", "latency"},
                     {"target_metrics", {{"avg_wait_time_minutes", 5}}}});
  ASSERT_FALSE(r["isError"].get<bool>()) << r.dump();
  ExpectMatchesOutputSchema("resource_optimize", r);
  const Json& o = r["structuredContent"];
  Json server = Api("GET", "/v1/analytics")["result"];
  EXPECT_EQ(o["recommendations"], server["recommendations"]);
  EXPECT_EQ(o["applied"], false);
  EXPECT_EQ(o["figures"]["queue_performance"], server["queue_performance"]);
  EXPECT_FALSE(o["figures"].contains("cost_efficiency"));
  ASSERT_EQ(o["targets"].size(), 1u);
  EXPECT_EQ(o["targets"][0]["current"],
            server["queue_performance"]["avg_wait_time_minutes"]);
  EXPECT_EQ(o["targets"][0]["met"], true);

  Json apply = CallTool("resource_optimize", {{"apply", true}});
  EXPECT_TRUE(apply["isError"].get<bool>());
  EXPECT_EQ(apply["structuredContent"]["error"]["code"], "UNIMPLEMENTED");
  ExpectMatchesOutputSchema("resource_optimize", apply);
}

TEST_F(McpTest, AnalyticsComeFromTheServerAndSayWhatIsMissing) {
  Initialize();
  Json a = CallTool(
      "resource_allocate",
      {{"requirements",
        {{"workflow_id", "w"}, {"agent_type", "coder"}, {"product", "web"}}}});
  CallTool("resource_release",
           {{"allocation_id", a["structuredContent"]["allocation_id"]},
            {"usage", {{"tokens", 1200}, {"outcome", "success"}}}});
  Json r = CallTool("resource_analytics", Json::object());
  ASSERT_FALSE(r["isError"].get<bool>()) << r.dump();
  ExpectMatchesOutputSchema("resource_analytics", r);
  const Json& s = r["structuredContent"];
  Json costs = Api("GET", "/v1/costs")["result"];
  EXPECT_EQ(s["usage"]["tokens_used"], costs["tokens_used"]);
  EXPECT_EQ(s["usage"]["tokens_used"], 1200);
  EXPECT_EQ(s["costs"]["cost_usd"], costs["cost_usd"]);
  EXPECT_EQ(s["period"]["start"], costs["period_start"]);
  ASSERT_EQ(s["usage"]["by_agent_type"].size(), 1u);
  EXPECT_EQ(s["usage"]["by_agent_type"][0]["name"], "coder");
  EXPECT_EQ(s["usage"]["by_agent_type"][0]["tokens"], 1200);
  EXPECT_EQ(s["usage"]["by_product"][0]["name"], "web");
  EXPECT_TRUE(s["utilization"]["by_product"].contains("web"));
  EXPECT_EQ(s["trends"]["burn_rate"], costs["burn_rate"]);
  // No utilisation per model and no history: said so.
  std::set<std::string> missing;
  for (const Json& u : s["unavailable"]) missing.insert(u["what"]);
  EXPECT_TRUE(missing.count("utilization by model")) << s.dump();
  EXPECT_TRUE(missing.count("trends as a time series")) << s.dump();

  Json ranged = CallTool(
      "resource_analytics",
      {{"metrics", {"usage"}},
       {"group_by", {"product"}},
       {"time_range",
        {{"start", "2020-01-01T00:00:00Z"}, {"end", "2020-01-02T00:00:00Z"}}}});
  ASSERT_FALSE(ranged["isError"].get<bool>()) << ranged.dump();
  const Json& rs = ranged["structuredContent"];
  EXPECT_FALSE(rs.contains("costs"));
  EXPECT_FALSE(rs["usage"].contains("by_agent_type"));
  EXPECT_EQ(rs["time_range"]["covered"]["usage_and_costs"]["start"],
            costs["period_start"]);
  bool range_missing = false;
  for (const Json& u : rs["unavailable"]) {
    if (u["what"] == "figures for the requested time range") {
      range_missing = true;
    }
  }
  EXPECT_TRUE(range_missing) << rs.dump();
}

TEST_F(McpTest, CheckConflictsAndReserve) {
  Initialize();
  Json a =
      CallTool("resource_allocate", {{"requirements",
                                      {{"workflow_id", "w1"},
                                       {"agent_type", "coder"},
                                       {"exclusive_access", {"src/app.ts"}}}}});
  ASSERT_EQ(a["structuredContent"]["status"], "active") << a.dump();
  Json c = CallTool("resource_check_conflicts",
                    {{"requirements",
                      {{"workflow_id", "w2"},
                       {"agent_type", "coder"},
                       {"exclusive_access", {"src/app.ts"}}}}});
  ASSERT_FALSE(c["isError"].get<bool>()) << c.dump();
  ExpectMatchesOutputSchema("resource_check_conflicts", c);
  EXPECT_EQ(c["structuredContent"]["outcome"], "queue") << c.dump();
  EXPECT_GE(c["structuredContent"]["conflicts"].size(), 1u);
  EXPECT_EQ(c["structuredContent"]["conflicts"][0]["type"], "file_conflict");
  // A dry run: nothing queued.
  EXPECT_EQ(Api("GET", "/v1/status")["result"]["allocations"]["queued"], 0);

  Json r = CallTool("resource_reserve", {{"workflow_id", "w9"},
                                         {"start_time", "+2h"},
                                         {"duration_seconds", 3600},
                                         {"resources", {{"agents", 1}}}});
  ASSERT_FALSE(r["isError"].get<bool>()) << r.dump();
  ExpectMatchesOutputSchema("resource_reserve", r);
  const std::string rid = r["structuredContent"]["reservation_id"];
  EXPECT_EQ(r["structuredContent"]["status"], "scheduled");
  EXPECT_EQ(Api("GET", "/v1/reservations/" + rid)["result"]["workflow_id"],
            "w9");
}

TEST_F(McpTest, MonitorMetricsIsThePrometheusText) {
  Initialize();
  CallTool(
      "resource_allocate",
      {{"requirements",
        {{"workflow_id", "w"}, {"agent_type", "coder"}, {"product", "web"}}}});
  CallTool(
      "resource_allocate",
      {{"requirements",
        {{"workflow_id", "v"}, {"agent_type", "coder"}, {"product", "app"}}}});
  Json m = CallTool("resource_monitor", {{"format", "metrics"}});
  ASSERT_FALSE(m["isError"].get<bool>()) << m.dump();
  ExpectMatchesOutputSchema("resource_monitor", m);
  const std::string text = Text(m);
  EXPECT_NE(text.find("qm_allocations_active 2"), std::string::npos) << text;
  EXPECT_NE(text.find("product=\"app\""), std::string::npos);
  Json web = CallTool("resource_monitor", {{"format", "metrics"},
                                           {"filters", {{"product", "web"}}}});
  const std::string w = Text(web);
  EXPECT_NE(w.find("product=\"web\""), std::string::npos) << w;
  EXPECT_EQ(w.find("product=\"app\""), std::string::npos) << w;
  EXPECT_NE(w.find("qm_allocations_active 2"), std::string::npos);
}

TEST_F(McpTest, UnreachableServerIsAToolError) {
  McpServerOptions o;
  server::ClientOptions c;
  c.url = "http://127.0.0.1:1";  // nothing listens there
  McpServer s(NewHttpBackend(c), o);
  Initialize(s);
  Json r = Send(s, Request(1, "tools/call",
                           {{"name", "resource_monitor"},
                            {"arguments", Json::object()}}));
  ASSERT_TRUE(r.contains("result")) << r.dump();
  EXPECT_TRUE(r["result"]["isError"].get<bool>());
  EXPECT_EQ(r["result"]["structuredContent"]["error"]["code"], "UNAVAILABLE");
  EXPECT_NE(Text(r["result"]).find("qm serve"), std::string::npos);
  Json read = Send(s, Request(2, "resources/read", {{"uri", "qm://status"}}));
  EXPECT_EQ(read["error"]["code"], kInternalError) << read.dump();
}

// ---------------------------------------------------------------- resources

TEST_F(McpTest, ResourcesListAndRead) {
  Initialize();
  Json l = Send(Request(1, "resources/list"));
  std::set<std::string> uris;
  for (const Json& r : l["result"]["resources"]) {
    uris.insert(r["uri"]);
    EXPECT_EQ(r["mimeType"], "application/json");
    EXPECT_FALSE(r.value("name", "").empty());
  }
  EXPECT_EQ(uris, (std::set<std::string>{"qm://status", "qm://costs/today",
                                         "qm://config"}));
  const std::vector<std::pair<std::string, std::string>> reads = {
      {"qm://status", "/v1/status"},
      {"qm://costs/today", "/v1/costs"},
      {"qm://config", "/v1/config"}};
  for (const auto& [uri, route] : reads) {
    Json r = Send(Request(2, "resources/read", {{"uri", uri}}));
    ASSERT_TRUE(r.contains("result")) << r.dump();
    const Json& c = r["result"]["contents"][0];
    EXPECT_EQ(c["uri"], uri);
    EXPECT_EQ(c["mimeType"], "application/json");
    Json doc = Json::parse(c["text"].get<std::string>());
    Json server = Api("GET", route)["result"];
    if (uri == "qm://config") {
      EXPECT_EQ(doc, server);
    } else {
      EXPECT_EQ(doc.contains("time"), server.contains("time"));
    }
  }
  Json missing = Send(Request(3, "resources/read", {{"uri", "qm://nope"}}));
  EXPECT_EQ(missing["error"]["code"], kResourceNotFound);
  Json no_uri = Send(Request(4, "resources/read"));
  EXPECT_EQ(no_uri["error"]["code"], kInvalidParams);
}

TEST_F(McpTest, SubscribedResourcesNotifyWhenTheyChange) {
  Initialize();
  EXPECT_FALSE(mcp_->has_subscriptions());
  EXPECT_TRUE(mcp_->PollSubscriptions().empty());
  Json s = Send(Request(1, "resources/subscribe", {{"uri", "qm://status"}}));
  EXPECT_EQ(s["result"], Json::object()) << s.dump();
  EXPECT_TRUE(mcp_->has_subscriptions());
  // Nothing changed: nothing to say, however often it is asked.
  EXPECT_TRUE(mcp_->PollSubscriptions().empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_TRUE(mcp_->PollSubscriptions().empty());

  CallTool("resource_allocate", {{"requirements", Coder("w")}});
  std::vector<std::string> n = mcp_->PollSubscriptions();
  ASSERT_EQ(n.size(), 1u);
  Json note = Json::parse(n[0]);
  EXPECT_EQ(note["method"], "notifications/resources/updated");
  EXPECT_EQ(note["params"]["uri"], "qm://status");
  EXPECT_FALSE(note.contains("id"));
  EXPECT_TRUE(mcp_->PollSubscriptions().empty());

  Json u = Send(Request(2, "resources/unsubscribe", {{"uri", "qm://status"}}));
  EXPECT_EQ(u["result"], Json::object());
  EXPECT_FALSE(mcp_->has_subscriptions());
  CallTool("resource_allocate", {{"requirements", Coder("v")}});
  EXPECT_TRUE(mcp_->PollSubscriptions().empty());
  Json bad = Send(Request(3, "resources/subscribe", {{"uri", "qm://x"}}));
  EXPECT_EQ(bad["error"]["code"], kResourceNotFound);
}

// ---------------------------------------------------------------- cancel

TEST_F(McpTest, ACancelledAllocateIsNotAnsweredAndItsAllocationCancelled) {
  Initialize();
  for (int i = 0; i < 2; ++i) {
    CallTool("resource_allocate",
             {{"requirements", Coder("w" + std::to_string(i))}});
  }
  auto call = std::async(std::launch::async, [&] {
    Json req = Coder("late");
    req["idempotency_key"] = "cancel-me";
    return mcp_->Handle(
        Request("call-1", "tools/call",
                {{"name", "resource_allocate"},
                 {"arguments", {{"requirements", req}, {"timeout", 2}}}})
            .dump());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_TRUE(mcp_->Handle(R"({"jsonrpc": "2.0", "method":
      "notifications/cancelled", "params": {"requestId": "call-1",
      "reason": "user"}})")
                  .empty());
  EXPECT_TRUE(call.get().empty());
  Json list = Api("GET", "/v1/allocations?workflow_id=late&status=cancelled");
  ASSERT_EQ(list["result"]["count"], 1) << list.dump();
  EXPECT_EQ(list["result"]["allocations"][0]["idempotency_key"], "cancel-me");
}

}  // namespace
}  // namespace qm::mcp::testing
