// GET /v1/status/{resource} and GET /v1/usage/{workflow_id} through the
// service: a durable engine on a manual clock, driven by the API's own
// routes (in process, with tokens), so the figures are known exactly; and
// the `qm status` / `qm usage` commands against a running server.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "qm/config_loader.h"
#include "qm/durable_engine.h"
#include "server/events.h"
#include "server/metrics.h"
#include "server/service.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::ordered_json;
using std::chrono::minutes;

const Time kT0(Duration(1769428800000LL));  // 2026-01-26T12:00:00Z

constexpr const char* kAdmin = "qm_reports_admin";
constexpr const char* kWeb = "qm_reports_agent_web";
constexpr const char* kApi = "qm_reports_agent_api";

// A service over a durable engine whose clock the test moves, answering
// calls made in this process.
class ReportsServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    clock_.Set(kT0);
    auto config = LoadConfigString(
        "max_concurrent:\n  total: 3\n  per_type:\n    coder: 1\n", "test");
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    DurableOptions o;
    o.store.location = dir_.path();
    o.store.sync = SyncMode::kNormal;
    auto engine = DurableEngine::Open(o, *config, &clock_, &hub_);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(*engine);
    ServiceOptions so;
    so.workers = 2;
    so.clock = &clock_;
    so.auth.tokens = {
        {"root", Sha256Hex(kAdmin), Role::kAdmin, {}},
        {"web-agent", Sha256Hex(kWeb), Role::kAgent, {"web"}},
        {"api-agent", Sha256Hex(kApi), Role::kAgent, {"api"}},
    };
    service_ = std::make_unique<Service>(engine_.get(), &hub_, &metrics_, so);
  }
  void TearDown() override {
    service_.reset();
    if (engine_) {
      EXPECT_TRUE(engine_->Close().ok());
    }
  }

  // The HTTP status and the envelope of one call as `token`.
  std::pair<int, Json> Call(const std::string& token, const std::string& method,
                            const std::string& target,
                            const std::string& body = "") {
    HttpRequest r;
    r.method = method;
    SetTarget(&r, target);
    r.headers.emplace_back("authorization", "Bearer " + token);
    r.body = body;
    r.remote_address = "127.0.0.1";
    r.remote_is_loopback = true;
    std::promise<HttpResponse> answered;
    auto done = answered.get_future();
    service_->Call(std::move(r),
                   [&answered](HttpResponse a) { answered.set_value(a); });
    const HttpResponse a = done.get();
    return {a.status, Json::parse(a.body, nullptr, false)};
  }
  Json Result(const std::string& token, const std::string& target) {
    auto [status, j] = Call(token, "GET", target);
    EXPECT_EQ(status, 200) << target << ": " << j.dump();
    return j.is_object() ? j["result"] : Json();
  }
  std::string Allocate(const std::string& token, const std::string& body,
                       const std::string& want_status) {
    auto [status, j] = Call(token, "POST", "/v1/allocations", body);
    EXPECT_EQ(status, 200) << j.dump();
    EXPECT_EQ(j["result"]["status"], want_status) << j.dump();
    return j["result"].value("allocation_id", "");
  }
  void Release(const std::string& token, const std::string& id,
               const std::string& usage) {
    auto [status, j] = Call(token, "POST", "/v1/allocations/" + id + "/release",
                            R"({"usage": )" + usage + "}");
    EXPECT_EQ(status, 200) << j.dump();
  }

  // 12:00: web's coder A (w-web) starts, web's coder B queues behind it
  // (one coder at a time), api's tester C (w-api) starts with 2 cpu cores.
  // 12:10: A completes (100 tokens); B starts after 600 s. Now 12:20.
  void Script() {
    a_ = Allocate(kWeb,
                  R"({"workflow_id": "w-web", "product": "web",)"
                  R"( "agent_type": "coder", "ttl": "2h",)"
                  R"( "metadata": {"phase": "build"}})",
                  "active");
    b_ = Allocate(kWeb,
                  R"({"workflow_id": "w-web", "product": "web",)"
                  R"( "agent_type": "coder", "ttl": "2h"})",
                  "queued");
    c_ = Allocate(kApi,
                  R"({"workflow_id": "w-api", "product": "api",)"
                  R"( "agent_type": "tester", "ttl": "2h",)"
                  R"( "resources": {"cpu_cores": 2}})",
                  "active");
    clock_.Set(kT0 + minutes(10));
    Release(kWeb, a_, R"({"tokens": 100, "cost_usd": 0.01})");
    clock_.Set(kT0 + minutes(20));
  }

  testing::TempDir dir_;
  ManualClock clock_;
  EventHub hub_;
  ServerMetrics metrics_;
  std::unique_ptr<DurableEngine> engine_;
  std::unique_ptr<Service> service_;
  std::string a_, b_, c_;
};

TEST_F(ReportsServiceTest, AgentsStatusWithPerformance) {
  Script();
  auto [status, j] = Call(kAdmin, "GET",
                          "/v1/status/agents?time_range=1h&group_by="
                          "specialization&include_performance=true");
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["status"], "success");
  EXPECT_EQ(j["operation"], "resource_status");
  EXPECT_TRUE(j["recommendations"].is_array());
  const Json& r = j["result"];
  EXPECT_EQ(r["time"], "2026-01-26T12:20:00Z");
  EXPECT_EQ(r["since"], "2026-01-26T11:20:00Z");
  EXPECT_EQ(r["group_by"], "agent_type");
  EXPECT_TRUE(r["products"].is_null());
  EXPECT_EQ(r["totals"]["active_agents"], 2);
  EXPECT_EQ(r["totals"]["max_agents"], 3);
  // A 10 + B 10 + C 20 agent-minutes of 3 agents over the hour.
  EXPECT_EQ(r["totals"]["performance"]["agent_minutes"], 40);
  EXPECT_NEAR(
      r["totals"]["performance"]["average_utilization_percent"].get<double>(),
      22.2222, 1e-4);
  ASSERT_EQ(r["groups"].size(), 2u) << r.dump();
  const Json& coder = r["groups"][0];
  EXPECT_EQ(coder["name"], "coder");
  EXPECT_EQ(coder["active_agents"], 1);
  EXPECT_EQ(coder["max_agents"], 1);
  const Json& p = coder["performance"];
  EXPECT_EQ(p["tasks_started"], 2);
  EXPECT_EQ(p["completed"], 1);
  EXPECT_EQ(p["queue_wait_seconds"]["mean"], 300);  // 0 and 600
  EXPECT_EQ(p["queue_wait_seconds"]["max"], 600);
  EXPECT_EQ(p["run_minutes"]["mean"], 10);
  EXPECT_EQ(p["agent_minutes"], 20);
  EXPECT_NEAR(p["average_utilization_percent"].get<double>(), 33.3333, 1e-4);
  EXPECT_EQ(p["tokens"], 100);
  EXPECT_EQ(r["groups"][1]["name"], "tester");
}

TEST_F(ReportsServiceTest, AgentTokensSeeOnlyTheirProducts) {
  Script();
  Json r = Result(kApi, "/v1/status/agents?include_performance=true");
  EXPECT_EQ(r["products"], Json::array({"api"}));
  ASSERT_EQ(r["groups"].size(), 1u) << r.dump();
  EXPECT_EQ(r["groups"][0]["name"], "tester");
  EXPECT_EQ(r["totals"]["active_agents"], 1);
  EXPECT_EQ(r["totals"]["performance"]["tasks_started"], 1);
  r = Result(kApi, "/v1/status/cpu_cores");
  ASSERT_EQ(r["holders"].size(), 1u);
  EXPECT_EQ(r["holders"][0]["allocation_id"], c_);
  r = Result(kWeb, "/v1/status/cpu_cores");
  EXPECT_EQ(r["holders"].size(), 0u);
  // Another product's workflow is as unknown as a workflow that never was.
  auto [status, j] = Call(kApi, "GET", "/v1/usage/w-web");
  EXPECT_EQ(status, 404);
  EXPECT_EQ(j["error"]["code"], "NOT_FOUND");
  EXPECT_EQ(j["operation"], "workflow_usage");
  r = Result(kWeb, "/v1/usage/w-web?compare_baseline=true");
  EXPECT_EQ(r["totals"]["allocations"], 2);
  // w-api is api's: no baseline for web.
  EXPECT_TRUE(r["baseline_comparison"]["baseline"].is_null());
  // Nor for an admin yet: C, w-api's only allocation, has not finished.
  r = Result(kAdmin, "/v1/usage/w-web?compare_baseline=true");
  EXPECT_TRUE(r["baseline_comparison"]["baseline"].is_null());
}

TEST_F(ReportsServiceTest, WorkflowUsageWithPhasesAndEfficiency) {
  Script();
  auto [status, j] = Call(kAdmin, "GET",
                          "/v1/usage/w-web?breakdown_by_phase=true&"
                          "include_efficiency=true&compare_baseline=false");
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["operation"], "workflow_usage");
  const Json& r = j["result"];
  EXPECT_EQ(r["workflow_id"], "w-web");
  EXPECT_EQ(r["totals"]["allocations"], 2);
  EXPECT_EQ(r["totals"]["completed"], 1);
  EXPECT_EQ(r["totals"]["active_now"], 1);
  EXPECT_EQ(r["totals"]["agent_minutes"], 20);
  EXPECT_EQ(r["totals"]["wall_minutes"], 20);
  EXPECT_EQ(r["totals"]["queue_wait_seconds_mean"], 300);
  ASSERT_EQ(r["phases"].size(), 2u);
  EXPECT_EQ(r["phases"][0]["phase"], "build");
  EXPECT_EQ(r["phases"][0]["source"], "metadata.phase");
  EXPECT_EQ(r["phases"][1]["phase"], "coder");
  EXPECT_EQ(r["phases"][1]["source"], "agent_type");
  EXPECT_EQ(r["efficiency"]["parallelism"], 1);  // 20 agent-min in 20 min
  EXPECT_EQ(r["efficiency"]["tokens_per_completed_task"], 100);
  EXPECT_FALSE(r.contains("baseline_comparison"));
}

// A workflow id holding '/' is reached with it encoded in the path
// ("%2F"), as the CLI sends it.
TEST_F(ReportsServiceTest, WorkflowIdWithASlashIsReachedEncoded) {
  Allocate(kAdmin,
           R"({"workflow_id": "team-a/w-1", "product": "web",)"
           R"( "agent_type": "tester"})",
           "active");
  auto [status, j] = Call(kAdmin, "GET", "/v1/usage/team-a%2Fw-1");
  ASSERT_EQ(status, 200) << j.dump();
  EXPECT_EQ(j["result"]["workflow_id"], "team-a/w-1");
  EXPECT_EQ(j["result"]["totals"]["allocations"], 1);
  // Unencoded, it is another path: no such route.
  std::tie(status, j) = Call(kAdmin, "GET", "/v1/usage/team-a/w-1");
  EXPECT_EQ(status, 404) << j.dump();
}

TEST_F(ReportsServiceTest, BadInputIsRefusedNamingIt) {
  Script();
  const struct {
    std::string target;
    int status;
    std::string code, says;
  } cases[] = {
      {"/v1/status/agents?group_by=colour", 400, "INVALID_REQUEST",
       "group_by: agent_type (or specialization), product, workflow"},
      {"/v1/status/agents?time_range=soon", 400, "INVALID_REQUEST",
       "time_range: a duration such as 15m, 1h, 24h or 7d"},
      {"/v1/status/agents?include_performance=1", 400, "INVALID_REQUEST",
       "include_performance: true or false"},
      {"/v1/status/agents?colour=blue", 400, "INVALID_REQUEST",
       "colour: unknown parameter for status agents (time_range, group_by, "
       "include_performance)"},
      {"/v1/status/memory_gb?group_by=product", 400, "INVALID_REQUEST",
       "group_by: unknown parameter for status memory_gb (time_range)"},
      {"/v1/status/gpus", 404, "NOT_FOUND",
       "no resource \"gpus\" (known: agents, workflows, cpu_cores"},
      {"/v1/usage/w-web?compare_baseline=maybe", 400, "INVALID_REQUEST",
       "compare_baseline: true or false"},
      {"/v1/usage/nobody", 404, "NOT_FOUND",
       "no allocation of workflow \"nobody\" is known"},
  };
  for (const auto& c : cases) {
    auto [status, j] = Call(kAdmin, "GET", c.target);
    EXPECT_EQ(status, c.status) << c.target << ": " << j.dump();
    EXPECT_EQ(j["error"]["code"], c.code) << c.target;
    EXPECT_NE(j["error"]["message"].get<std::string>().find(c.says),
              std::string::npos)
        << c.target << ": " << j["error"]["message"];
  }
  // Reads only: a refused report changed nothing.
  EXPECT_EQ(Result(kAdmin, "/v1/status/agents")["totals"]["active_agents"], 2);
}

// ---------------------------------------------------------------- the CLI

struct CliAnswer {
  int code = -1;
  Json envelope;
};

// Runs the qm binary with `args` against `url`; its exit code and the
// envelope it printed.
CliAnswer Qm(const std::vector<std::string>& args, const std::string& url) {
  std::string cmd = "env -u QM_TOKEN QM_SERVER='" + url + "' '" +
                    std::string(QM_BINARY) + "'";
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " 2>/dev/null";
  CliAnswer out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  out.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  out.envelope = Json::parse(text, nullptr, false);
  return out;
}

TEST(ReportsCliTest, StatusAndUsageCommandsReachTheReports) {
  testing::TempDir dir;
  auto app = testing::StartApp(dir.path(), "max_concurrent: {total: 4}\n");
  ASSERT_TRUE(app);
  const std::string url = "http://" + app->address();
  HttpClient client = testing::ClientOf(url);
  auto a = client.Call("POST", "/v1/allocations",
                       R"({"workflow_id": "workflow_123", "agent_type":)"
                       R"( "coder", "resources": {"cpu_cores": 1},)"
                       R"( "metadata": {"phase": "plan"}})");
  ASSERT_TRUE(a.ok() && a->status == 200) << (a.ok() ? a->body : "");

  CliAnswer r = Qm({"status", "agents",
                    R"({"time_range": "1h", "group_by": "specialization",)"
                    R"( "include_performance": true})"},
                   url);
  ASSERT_EQ(r.code, 0) << r.envelope.dump();
  EXPECT_EQ(r.envelope["operation"], "resource_status");
  EXPECT_EQ(r.envelope["result"]["group_by"], "agent_type");
  EXPECT_EQ(r.envelope["result"]["time_range"], "1h");
  EXPECT_EQ(r.envelope["result"]["groups"][0]["name"], "coder");
  EXPECT_EQ(r.envelope["result"]["groups"][0]["performance"]["tasks_started"],
            1);

  r = Qm({"status", "cpu_cores"}, url);
  ASSERT_EQ(r.code, 0) << r.envelope.dump();
  EXPECT_EQ(r.envelope["result"]["resource"], "cpu_cores");
  EXPECT_EQ(r.envelope["result"]["holders"].size(), 1u);

  // The reports that were there before stay where they were.
  EXPECT_EQ(Qm({"status"}, url).envelope["operation"], "status");
  EXPECT_EQ(Qm({"status", "costs"}, url).envelope["operation"], "costs");
  EXPECT_EQ(Qm({"status", "queue"}, url).envelope["operation"], "queue");
  EXPECT_EQ(Qm({"usage"}, url).envelope["operation"], "costs");

  r = Qm({"usage", "workflow_123",
          R"({"breakdown_by_phase": true, "include_efficiency": true,)"
          R"( "compare_baseline": true})"},
         url);
  ASSERT_EQ(r.code, 0) << r.envelope.dump();
  EXPECT_EQ(r.envelope["operation"], "workflow_usage");
  EXPECT_EQ(r.envelope["result"]["workflow_id"], "workflow_123");
  EXPECT_EQ(r.envelope["result"]["phases"][0]["phase"], "plan");
  EXPECT_TRUE(r.envelope["result"].contains("efficiency"));
  EXPECT_TRUE(r.envelope["result"].contains("baseline_comparison"));
  r = Qm({"usage", R"({"workflow_id": "workflow_123"})"}, url);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.envelope["result"]["totals"]["allocations"], 1);
  // A workflow id holding '/' (the CLI encodes it in the path).
  a = client.Call("POST", "/v1/allocations",
                  R"({"workflow_id": "team/wf", "agent_type": "coder"})");
  ASSERT_TRUE(a.ok() && a->status == 200) << (a.ok() ? a->body : "");
  r = Qm({"usage", "team/wf"}, url);
  ASSERT_EQ(r.code, 0) << r.envelope.dump();
  EXPECT_EQ(r.envelope["result"]["workflow_id"], "team/wf");

  // Errors come back in the envelope, exit 1.
  r = Qm({"status", "agents", R"({"group_by": "colour"})"}, url);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.envelope["error"]["code"], "INVALID_REQUEST");
  r = Qm({"usage", "nobody"}, url);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.envelope["error"]["code"], "NOT_FOUND");
  r = Qm({"status", R"({"time_range": "1h"})"}, url);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.envelope["error"]["code"], "INVALID_REQUEST");
  // Without a server, the envelope names the report's operation.
  r = Qm({"usage", "workflow_123"}, "http://127.0.0.1:1");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.envelope["operation"], "workflow_usage");
  EXPECT_EQ(r.envelope["error"]["code"], "UNAVAILABLE");
  EXPECT_TRUE(app->Stop(std::chrono::seconds(5)).ok());
}

}  // namespace
}  // namespace qm::server
