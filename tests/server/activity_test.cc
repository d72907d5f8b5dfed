// The activity reports (server/activity.h) over a scripted workload run by
// the real engine on a manual clock: every figure checked here was worked
// out by hand from the script below.
#include "server/activity.h"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qm/config_loader.h"
#include "qm/engine.h"

namespace qm::server {
namespace {

using Json = nlohmann::ordered_json;
using std::chrono::minutes;

const Time kT0(Duration(1769428800000LL));  // 2026-01-26T12:00:00Z

// 4 agents: writers (at most 2 at once), reviewers (at most 1) and testers
// (no limit of their own).
constexpr const char* kConfig = R"(
max_concurrent:
  total: 4
  per_type:
    writer: 2
    reviewer: 1
)";

class ActivityTest : public ::testing::Test {
 protected:
  void Start(const std::string& extra_yaml = "") {
    auto c = LoadConfigString(std::string(kConfig) + extra_yaml, "test");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    clock_.Set(kT0);
    auto e = Engine::Create(*c, &clock_);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(*e);
  }

  void At(int minute) { clock_.Set(kT0 + minutes(minute)); }

  // Asks for one agent; checks whether it was granted at once.
  std::string Allocate(const std::string& workflow, const std::string& type,
                       const std::string& product, bool granted,
                       const std::string& metadata = "",
                       ResourceAmounts resources = {},
                       std::optional<int64_t> estimated_tokens = std::nullopt,
                       std::optional<double> estimated_minutes = std::nullopt) {
    AllocationRequest r;
    r.workflow_id = workflow;
    r.agent_type = type;
    r.product = product;
    r.metadata = metadata;
    r.resources = std::move(resources);
    r.estimated_tokens = estimated_tokens;
    r.estimated_minutes = estimated_minutes;
    r.ttl = std::chrono::hours(2);
    auto got = engine_->Allocate(r);
    EXPECT_TRUE(got.ok()) << got.status().ToString();
    if (!got.ok()) return "";
    EXPECT_EQ(got->allocation.status,
              granted ? AllocStatus::kActive : AllocStatus::kQueued)
        << got->allocation.id;
    return got->allocation.id;
  }

  void Release(const std::string& id, int64_t tokens, double cost,
               Outcome outcome = Outcome::kSuccess) {
    UsageReport u;
    u.tokens = tokens;
    u.cost_usd = cost;
    u.outcome = outcome;
    auto r = engine_->Release(id, u);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  AllocationInfo Get(const std::string& id) {
    auto a = engine_->Get(id);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? *a : AllocationInfo();
  }

  ActivityInput Input(
      std::optional<std::vector<std::string>> visible = std::nullopt) {
    engine_->Tick();
    ActivityInput in;
    in.snapshot = engine_->GetSnapshot();
    in.now = clock_.Now();
    in.history_limit = engine_->config().scheduling.history_limit;
    in.visible_products = std::move(visible);
    AllocationFilter f;
    f.limit = 10000;
    auto list = engine_->List(f);
    EXPECT_TRUE(list.ok());
    if (list.ok()) in.allocations = list->allocations;
    return in;
  }

  // The script (minutes after 12:00), ending at 12:40:
  //   0  W1, W2 writers of w1 (web) start, W3 queues (writers full);
  //      R1 reviewer of w2 (api) and X1 tester of w3 (web) start.
  //   5  X1 completes: 1000 tokens, $0.05.
  //  10  W1 completes (1000 tokens, $0.10); W3 starts (waited 600 s).
  //  15  R2 reviewer of w2 queues (reviewers full).
  //  20  R1 fails (500 tokens, $0.05); R2 starts (waited 300 s).
  //  30  W2 completes (3000 tokens, $0.30).
  //  35  W4 writer of w1 starts; R3 reviewer of w2 queues.
  //  38  W3 reports 200 tokens, $0.02 so far.
  // W1, W2 and W3 are in phase "implement" (metadata); W4 has no phase.
  // cpu_cores: W1 2, W3 1, W4 3; R3 asks for 2.
  void Script() {
    Start();
    const std::string implement = R"({"phase": "implement", "ticket": 7})";
    w1_ = Allocate("w1", "writer", "web", true, implement, {{"cpu_cores", 2}},
                   800, 20);
    w2_ = Allocate("w1", "writer", "web", true, implement, {}, 2000, 20);
    w3_ = Allocate("w1", "writer", "web", false, implement, {{"cpu_cores", 1}});
    r1_ = Allocate("w2", "reviewer", "api", true);
    x1_ = Allocate("w3", "tester", "web", true);
    At(5);
    Release(x1_, 1000, 0.05);
    At(10);
    Release(w1_, 1000, 0.10);
    ASSERT_EQ(Get(w3_).status, AllocStatus::kActive);
    At(15);
    r2_ = Allocate("w2", "reviewer", "api", false);
    At(20);
    Release(r1_, 500, 0.05, Outcome::kFailure);
    ASSERT_EQ(Get(r2_).status, AllocStatus::kActive);
    At(30);
    Release(w2_, 3000, 0.30);
    At(35);
    w4_ = Allocate("w1", "writer", "web", true, "not json", {{"cpu_cores", 3}});
    r3_ = Allocate("w2", "reviewer", "api", false, "", {{"cpu_cores", 2}});
    At(38);
    UsageReport u;
    u.report_id = "mid";
    u.tokens = 200;
    u.cost_usd = 0.02;
    ASSERT_TRUE(engine_->ReportUsage(w3_, u).ok());
    At(40);
  }

  static StatusQuery Query(const QueryParams& params,
                           const std::string& resource = "agents") {
    auto q = ParseStatusQuery(resource, params);
    EXPECT_TRUE(q.ok()) << q.status().ToString();
    return q.ok() ? *q : StatusQuery();
  }

  Json Status(const ActivityInput& in, const QueryParams& params,
              const std::string& resource = "agents") {
    auto r = ResourceStatusReport(in, resource, Query(params, resource));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->result : Json();
  }

  Json Usage(const ActivityInput& in, const std::string& workflow,
             UsageQuery q = {true, true, true}) {
    auto r = WorkflowUsageReport(in, workflow, q);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->result : Json();
  }

  static const Json& Group(const Json& report, const std::string& name) {
    for (const Json& g : report["groups"]) {
      if (g["name"] == name) return g;
    }
    ADD_FAILURE() << "no group " << name << " in " << report.dump();
    static const Json kNone;
    return kNone;
  }

  ManualClock clock_;
  std::unique_ptr<Engine> engine_;
  std::string w1_, w2_, w3_, w4_, r1_, r2_, r3_, x1_;
};

TEST_F(ActivityTest, AgentsNowPerGroupMostRunningFirst) {
  Script();
  const Json r = Status(Input(), {});
  EXPECT_EQ(r["resource"], "agents");
  EXPECT_EQ(r["time"], "2026-01-26T12:40:00Z");
  EXPECT_EQ(r["time_range"], "1h");
  EXPECT_EQ(r["since"], "2026-01-26T11:40:00Z");
  EXPECT_EQ(r["until"], "2026-01-26T12:40:00Z");
  EXPECT_EQ(r["group_by"], "agent_type");
  const Json& t = r["totals"];
  EXPECT_EQ(t["active_agents"], 3);  // W3, W4, R2
  EXPECT_EQ(t["active_allocations"], 3);
  EXPECT_EQ(t["max_agents"], 4);
  EXPECT_EQ(t["available_agents"], 1);
  EXPECT_EQ(t["queued"], 1);  // R3: reviewers are full
  EXPECT_EQ(t["utilization_percent"], 75);
  EXPECT_FALSE(t.contains("performance"));
  // Writers (2 running) before reviewers (1) before testers (0), although
  // that is not name order.
  ASSERT_EQ(r["groups"].size(), 3u) << r.dump();
  EXPECT_EQ(r["groups"][0]["name"], "writer");
  EXPECT_EQ(r["groups"][1]["name"], "reviewer");
  EXPECT_EQ(r["groups"][2]["name"], "tester");
  const Json& writer = Group(r, "writer");
  EXPECT_EQ(writer["active_agents"], 2);
  EXPECT_EQ(writer["max_agents"], 2);
  EXPECT_EQ(writer["queued"], 0);
  EXPECT_EQ(writer["utilization_percent"], 100);
  const Json& reviewer = Group(r, "reviewer");
  EXPECT_EQ(reviewer["active_agents"], 1);
  EXPECT_EQ(reviewer["max_agents"], 1);
  EXPECT_EQ(reviewer["queued"], 1);
  EXPECT_TRUE(Group(r, "tester")["max_agents"].is_null());
  EXPECT_TRUE(r["history_complete"].get<bool>());
  EXPECT_TRUE(r["history_since"].is_null());
}

TEST_F(ActivityTest, AgentPerformanceOverTheLastHour) {
  Script();
  auto report = ResourceStatusReport(Input(), "agents",
                                     Query({{"time_range", "1h"},
                                            {"group_by", "specialization"},
                                            {"include_performance", "true"}}));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const Json& r = report->result;
  EXPECT_EQ(r["group_by"], "agent_type");

  const Json& w = Group(r, "writer")["performance"];
  EXPECT_EQ(w["tasks_started"], 4);
  EXPECT_EQ(w["completed"], 2);
  EXPECT_EQ(w["failed"], 0);
  EXPECT_EQ(w["success_rate_percent"], 100);
  // Grants waited 0, 0, 600 (W3) and 0 s.
  EXPECT_EQ(w["queue_wait_seconds"]["count"], 4);
  EXPECT_EQ(w["queue_wait_seconds"]["mean"], 150);
  EXPECT_EQ(w["queue_wait_seconds"]["p50"], 0);
  EXPECT_EQ(w["queue_wait_seconds"]["p95"], 600);
  EXPECT_EQ(w["queue_wait_seconds"]["max"], 600);
  // Runs that ended: W1 10 min, W2 30 min.
  EXPECT_EQ(w["run_minutes"]["count"], 2);
  EXPECT_EQ(w["run_minutes"]["mean"], 20);
  EXPECT_EQ(w["run_minutes"]["p50"], 10);
  EXPECT_EQ(w["run_minutes"]["p95"], 30);
  // W1 10 + W2 30 + W3 30 + W4 5 agent-minutes, of 2 agents x 60 min.
  EXPECT_EQ(w["agent_minutes"], 75);
  EXPECT_EQ(w["average_active_agents"], 1.25);
  EXPECT_EQ(w["average_utilization_percent"], 62.5);
  // Reported by the tasks that ran: 1000 + 3000 + 200 (W3 so far).
  EXPECT_EQ(w["tokens"], 4200);
  EXPECT_DOUBLE_EQ(w["cost_usd"].get<double>(), 0.42);
  // Per completed task: what the tasks that ended spent (4000, $0.40) / 2.
  EXPECT_EQ(w["tokens_per_completed_task"], 2000);
  EXPECT_DOUBLE_EQ(w["cost_per_completed_task_usd"].get<double>(), 0.2);

  const Json& rv = Group(r, "reviewer")["performance"];
  EXPECT_EQ(rv["tasks_started"], 2);
  EXPECT_EQ(rv["completed"], 0);
  EXPECT_EQ(rv["failed"], 1);
  EXPECT_EQ(rv["success_rate_percent"], 0);
  EXPECT_EQ(rv["queue_wait_seconds"]["mean"], 150);  // 0 and 300
  EXPECT_EQ(rv["queue_wait_seconds"]["max"], 300);
  EXPECT_EQ(rv["run_minutes"]["mean"], 20);
  EXPECT_EQ(rv["agent_minutes"], 40);  // R1 20 + R2 20
  EXPECT_NEAR(rv["average_utilization_percent"].get<double>(), 66.6667, 1e-4);
  EXPECT_TRUE(rv["tokens_per_completed_task"].is_null());

  const Json& tp = r["totals"]["performance"];
  EXPECT_EQ(tp["tasks_started"], 7);
  EXPECT_EQ(tp["completed"], 3);  // W1, W2, X1
  EXPECT_EQ(tp["failed"], 1);     // R1
  EXPECT_EQ(tp["success_rate_percent"], 75);
  // 0, 0, 0, 0, 0, 300, 600 s.
  EXPECT_NEAR(tp["queue_wait_seconds"]["mean"].get<double>(), 128.5714, 1e-4);
  EXPECT_EQ(tp["queue_wait_seconds"]["p50"], 0);
  EXPECT_EQ(tp["queue_wait_seconds"]["p95"], 600);
  // 5, 10, 20, 30 min.
  EXPECT_EQ(tp["run_minutes"]["mean"], 16.25);
  EXPECT_EQ(tp["run_minutes"]["p50"], 10);
  // 75 + 40 + X1 5 = 120 agent-minutes of 4 agents x 60 min.
  EXPECT_EQ(tp["agent_minutes"], 120);
  EXPECT_EQ(tp["average_active_agents"], 2);
  EXPECT_EQ(tp["average_utilization_percent"], 50);
  EXPECT_EQ(tp["tokens"], 5700);
  // Ended: 1000 + 3000 + 500 + 1000 tokens, $0.50, over 3 completed.
  EXPECT_NEAR(tp["tokens_per_completed_task"].get<double>(), 1833.3333, 1e-4);
  EXPECT_NEAR(tp["cost_per_completed_task_usd"].get<double>(), 0.166667, 1e-6);
  // Reviewers are at their limit with one waiting: said so.
  bool said = false;
  for (const std::string& s : report->recommendations) {
    if (s ==
        "agent_type reviewer: 1 of 1 agent busy and 1 request "
        "queued; raise its limit or expect waits") {
      said = true;
    }
  }
  EXPECT_TRUE(said) << Json(report->recommendations).dump();
}

TEST_F(ActivityTest, AShorterRangeCountsOnlyWhatHappenedInIt) {
  Script();
  // 12:25 to 12:40.
  const Json r =
      Status(Input(), {{"time_range", "15m"}, {"include_performance", "true"}});
  EXPECT_EQ(r["since"], "2026-01-26T12:25:00Z");
  const Json& w = Group(r, "writer")["performance"];
  EXPECT_EQ(w["tasks_started"], 1);  // W4
  EXPECT_EQ(w["completed"], 1);      // W2 at 12:30
  // W2 25-30, W3 25-40, W4 35-40.
  EXPECT_EQ(w["agent_minutes"], 25);
  EXPECT_EQ(w["run_minutes"]["max"], 30);  // W2's whole run
  const Json& rv = Group(r, "reviewer")["performance"];
  EXPECT_EQ(rv["tasks_started"], 0);
  EXPECT_EQ(rv["failed"], 0);
  EXPECT_EQ(rv["agent_minutes"], 15);
  // Testers did nothing in the range and hold nothing: not listed.
  for (const Json& g : r["groups"]) EXPECT_NE(g["name"], "tester");
}

TEST_F(ActivityTest, GroupsByWorkflowProductModelAndRequester) {
  Script();
  const ActivityInput in = Input();
  Json r = Status(in, {{"group_by", "workflow"}});
  EXPECT_EQ(r["group_by"], "workflow");
  ASSERT_EQ(r["groups"].size(), 3u);
  EXPECT_EQ(r["groups"][0]["name"], "w1");
  EXPECT_EQ(r["groups"][0]["active_agents"], 2);
  EXPECT_TRUE(r["groups"][0]["max_agents"].is_null());
  EXPECT_EQ(r["groups"][1]["name"], "w2");
  EXPECT_EQ(r["groups"][1]["queued"], 1);
  r = Status(in, {{"group_by", "product"}});
  EXPECT_EQ(Group(r, "web")["active_agents"], 2);
  EXPECT_EQ(Group(r, "api")["active_agents"], 1);
  r = Status(in, {{"group_by", "model"}});
  ASSERT_EQ(r["groups"].size(), 1u);
  EXPECT_EQ(r["groups"][0]["name"], "(none)");  // no pricing configured
  EXPECT_EQ(r["groups"][0]["active_agents"], 3);
  r = Status(in, {{"group_by", "requester"}});
  EXPECT_EQ(r["groups"][0]["name"], "(none)");
}

TEST_F(ActivityTest, AnAgentCallerSeesOnlyItsProducts) {
  Script();
  const ActivityInput in = Input(std::vector<std::string>{"api"});
  Json r = Status(in, {{"include_performance", "true"}});
  EXPECT_EQ(r["products"], Json::array({"api"}));
  ASSERT_EQ(r["groups"].size(), 1u) << r.dump();
  EXPECT_EQ(r["groups"][0]["name"], "reviewer");
  EXPECT_EQ(r["totals"]["active_agents"], 1);
  EXPECT_EQ(r["totals"]["performance"]["tasks_started"], 2);
  r = Status(in, {{"group_by", "product"}});
  ASSERT_EQ(r["groups"].size(), 1u) << r.dump();
  EXPECT_EQ(r["groups"][0]["name"], "api");
  r = Status(in, {}, "cpu_cores");
  EXPECT_EQ(r["holders"].size(), 0u);  // W3 and W4 are web's
  EXPECT_EQ(r["holders_total"], 0);
  EXPECT_EQ(r["queued_demand"]["requests"], 1);  // R3
  // Another product's workflow does not exist for it; its own has no
  // baseline, the other workflows being web's.
  auto hidden = WorkflowUsageReport(in, "w1", {});
  EXPECT_EQ(hidden.status().code(), Code::kNotFound);
  const Json u = Usage(in, "w2");
  EXPECT_TRUE(u["baseline_comparison"]["baseline"].is_null());
}

TEST_F(ActivityTest, OneResourceNowItsHoldersAndItsQueue) {
  Script();
  const Json r = Status(Input(), {{"time_range", "1h"}}, "cpu_cores");
  EXPECT_EQ(r["resource"], "cpu_cores");
  EXPECT_EQ(r["capacity"], 8);
  EXPECT_EQ(r["allocated"], 4);  // W3 1 + W4 3
  EXPECT_EQ(r["available"], 4);
  EXPECT_EQ(r["utilization_percent"], 50);
  ASSERT_EQ(r["holders"].size(), 2u);
  EXPECT_EQ(r["holders"][0]["allocation_id"], w4_);  // the biggest first
  EXPECT_EQ(r["holders"][0]["amount"], 3);
  EXPECT_EQ(r["holders"][0]["workflow_id"], "w1");
  EXPECT_EQ(r["holders"][1]["allocation_id"], w3_);
  EXPECT_EQ(r["holders_total"], 2);
  EXPECT_EQ(r["queued_demand"]["requests"], 1);
  EXPECT_EQ(r["queued_demand"]["amount"], 2);
  // W1 2 x 10 + W3 1 x 30 + W4 3 x 5 = 65 core-minutes in the hour.
  EXPECT_NEAR(r["average_allocated"].get<double>(), 1.0833, 1e-4);
  EXPECT_NEAR(r["average_utilization_percent"].get<double>(), 13.5417, 1e-4);
  // Without a time_range: the state now only. Seed 000's short name works.
  const Json now = Status(Input(), {}, "cpu");
  EXPECT_EQ(now["resource"], "cpu_cores");
  EXPECT_FALSE(now.contains("average_allocated"));
}

TEST_F(ActivityTest, UnknownResourcesAndBadParametersAreRefused) {
  Start();
  const ActivityInput in = Input();
  auto unknown = ResourceStatusReport(in, "gpus", {});
  ASSERT_EQ(unknown.status().code(), Code::kNotFound);
  EXPECT_NE(unknown.status().message().find(
                "agents, workflows, cpu_cores, memory_gb"),
            std::string::npos)
      << unknown.status().message();
  const struct {
    std::string resource;
    QueryParams params;
    std::string names;  // the start of the message
  } bad[] = {
      {"agents", {{"time_range", "soon"}}, "time_range: a duration"},
      {"agents", {{"time_range", "0s"}}, "time_range: a duration"},
      {"agents", {{"time_range", "91d"}}, "time_range: a duration"},
      {"agents", {{"group_by", "colour"}}, "group_by: agent_type"},
      {"agents", {{"include_performance", "yes"}}, "include_performance: true"},
      {"agents", {{"colour", "blue"}}, "colour: unknown parameter"},
      {"agents",
       {{"time_range", "1h"}, {"time_range", "2h"}},
       "time_range: given twice"},
      {"cpu_cores", {{"group_by", "product"}}, "group_by: unknown parameter"},
  };
  for (const auto& c : bad) {
    auto q = ParseStatusQuery(c.resource, c.params);
    ASSERT_FALSE(q.ok()) << c.names;
    EXPECT_EQ(q.status().code(), Code::kInvalidRequest);
    EXPECT_EQ(q.status().message().rfind(c.names, 0), 0u)
        << q.status().message();
  }
  // The accepted values are named.
  auto q = ParseStatusQuery("agents", {{"group_by", "colour"}});
  EXPECT_NE(q.status().message().find("specialization"), std::string::npos);
  auto u = ParseUsageQuery({{"compare_baseline", "1"}});
  EXPECT_EQ(u.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(u.status().message().rfind("compare_baseline: true or false", 0),
            0u);
  u = ParseUsageQuery({{"breakdown_by_phase", "true"}, {"verbose", "true"}});
  EXPECT_NE(u.status().message().find("verbose: unknown parameter for usage "
                                      "(breakdown_by_phase, "
                                      "include_efficiency, compare_baseline)"),
            std::string::npos)
      << u.status().message();
}

TEST_F(ActivityTest, WorkflowUsageTotalsAndAgentTypes) {
  Script();
  auto report = WorkflowUsageReport(Input(), "w1", {});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const Json& r = report->result;
  EXPECT_EQ(r["workflow_id"], "w1");
  const Json& t = r["totals"];
  EXPECT_EQ(t["allocations"], 4);
  EXPECT_EQ(t["by_status"]["active"], 2);
  EXPECT_EQ(t["by_status"]["released"], 2);
  EXPECT_EQ(t["by_status"]["failed"], 0);
  EXPECT_EQ(t["completed"], 2);
  EXPECT_EQ(t["active_now"], 2);
  EXPECT_EQ(t["queued_now"], 0);
  EXPECT_EQ(t["first_queued_at"], "2026-01-26T12:00:00Z");
  EXPECT_EQ(t["last_ended_at"], "2026-01-26T12:30:00Z");
  EXPECT_FALSE(t["finished"].get<bool>());
  EXPECT_EQ(t["wall_minutes"], 40);  // still running: up to now
  EXPECT_EQ(t["agent_minutes"], 75);
  EXPECT_EQ(t["tokens"], 4200);
  EXPECT_DOUBLE_EQ(t["cost_usd"].get<double>(), 0.42);
  EXPECT_EQ(t["queue_wait_seconds_mean"], 150);  // (0 + 0 + 600 + 0) / 4
  ASSERT_EQ(r["agent_types"].size(), 1u);
  EXPECT_EQ(r["agent_types"][0]["agent_type"], "writer");
  EXPECT_FALSE(r.contains("phases"));
  EXPECT_FALSE(r.contains("efficiency"));
  EXPECT_FALSE(r.contains("baseline_comparison"));
  EXPECT_TRUE(r["history_complete"].get<bool>());
}

TEST_F(ActivityTest, WorkflowPhasesEfficiencyAndBaseline) {
  Script();
  auto report = WorkflowUsageReport(Input(), "w1", {true, true, true});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const Json& r = report->result;

  // metadata.phase where the metadata has one; W4's is not JSON, so its
  // agent type. By first start.
  ASSERT_EQ(r["phases"].size(), 2u) << r["phases"].dump();
  const Json& impl = r["phases"][0];
  EXPECT_EQ(impl["phase"], "implement");
  EXPECT_EQ(impl["source"], "metadata.phase");
  EXPECT_EQ(impl["allocations"], 3);
  EXPECT_EQ(impl["by_status"]["released"], 2);
  EXPECT_EQ(impl["by_status"]["active"], 1);
  EXPECT_EQ(impl["started_at"], "2026-01-26T12:00:00Z");
  EXPECT_EQ(impl["span_minutes"], 40);
  EXPECT_EQ(impl["agent_minutes"], 70);
  EXPECT_EQ(impl["tokens"], 4200);
  EXPECT_EQ(impl["queue_wait_seconds_mean"], 200);
  const Json& rest = r["phases"][1];
  EXPECT_EQ(rest["phase"], "writer");
  EXPECT_EQ(rest["source"], "agent_type");
  EXPECT_EQ(rest["started_at"], "2026-01-26T12:35:00Z");
  EXPECT_EQ(rest["span_minutes"], 5);
  EXPECT_EQ(rest["agent_minutes"], 5);

  const Json& e = r["efficiency"];
  EXPECT_EQ(e["completed"], 2);
  // The finished tasks' 4000 tokens and $0.40 over 2 completed.
  EXPECT_EQ(e["tokens_per_completed_task"], 2000);
  EXPECT_DOUBLE_EQ(e["cost_per_completed_task_usd"].get<double>(), 0.2);
  EXPECT_EQ(e["success_rate_percent"], 100);
  // W1 estimated 800 tokens / 20 min, used 1000 / 10; W2 2000 / 20, used
  // 3000 / 30.
  EXPECT_EQ(e["estimate_accuracy"]["tokens"]["tasks"], 2);
  EXPECT_EQ(e["estimate_accuracy"]["tokens"]["estimated"], 2800);
  EXPECT_EQ(e["estimate_accuracy"]["tokens"]["actual"], 4000);
  EXPECT_NEAR(
      e["estimate_accuracy"]["tokens"]["actual_to_estimated"].get<double>(),
      1.4286, 1e-4);
  EXPECT_EQ(e["estimate_accuracy"]["minutes"]["actual_to_estimated"], 1);
  // 75 agent-minutes over 40 minutes of wall time.
  EXPECT_EQ(e["parallelism"], 1.875);
  // 600 s waited against 75 min (4500 s) run.
  EXPECT_NEAR(e["wait_share_percent"].get<double>(), 11.7647, 1e-4);

  // The other workflows' finished allocations: R1 (failed, 500 tokens,
  // $0.05, 20 min) and X1 (completed, 1000 tokens, $0.05, 5 min).
  const Json& c = r["baseline_comparison"];
  EXPECT_EQ(c["workflow"]["allocations"], 2);
  EXPECT_EQ(c["workflow"]["tokens_per_completed_task"], 2000);
  EXPECT_EQ(c["workflow"]["run_minutes_mean"], 20);
  EXPECT_EQ(c["baseline"]["allocations"], 2);
  EXPECT_EQ(c["baseline"]["workflows"], 2);
  EXPECT_EQ(c["baseline"]["tokens_per_completed_task"], 1500);
  EXPECT_DOUBLE_EQ(c["baseline"]["cost_per_completed_task_usd"].get<double>(),
                   0.1);
  EXPECT_EQ(c["baseline"]["success_rate_percent"], 50);
  EXPECT_EQ(c["baseline"]["run_minutes_mean"], 12.5);
  EXPECT_NEAR(
      c["difference_percent"]["tokens_per_completed_task"].get<double>(),
      33.3333, 1e-4);
  EXPECT_EQ(c["difference_percent"]["cost_per_completed_task_usd"], 100);
  EXPECT_EQ(c["difference_percent"]["success_rate_percent"], 100);
  EXPECT_EQ(c["difference_percent"]["run_minutes_mean"], 60);
  // Nobody waited in the baseline: no percentage of 0.
  EXPECT_TRUE(c["difference_percent"]["queue_wait_seconds_mean"].is_null());
  bool said = false;
  for (const std::string& s : report->recommendations) {
    if (s.find("tokens_per_completed_task is 33% above") != std::string::npos) {
      said = true;
    }
  }
  EXPECT_TRUE(said) << Json(report->recommendations).dump();
}

TEST_F(ActivityTest, AWorkflowWithNothingKnownIsNotFound) {
  Script();
  auto r = WorkflowUsageReport(Input(), "never", {});
  ASSERT_EQ(r.status().code(), Code::kNotFound);
  EXPECT_NE(r.status().message().find("last 10000 finished"), std::string::npos)
      << r.status().message();
  // Alone in the history: nothing to compare with, and it says so.
  Start();
  const std::string id = Allocate("solo", "writer", "web", true);
  At(10);
  Release(id, 10, 0.01);
  const Json u = Usage(Input(), "solo");
  EXPECT_TRUE(u["baseline_comparison"]["baseline"].is_null());
  EXPECT_NE(u["baseline_comparison"]["message"].get<std::string>().find(
                "no baseline"),
            std::string::npos);
  EXPECT_TRUE(u["totals"]["finished"].get<bool>());
  EXPECT_EQ(u["totals"]["wall_minutes"], 10);
}

// The engine keeps the last 2 finished allocations here: of the four that
// end at 12:05, 12:10, 12:20 and 12:30, the first two are gone.
TEST_F(ActivityTest, SaysWhenTheHistoryIsIncomplete) {
  Start("scheduling: {history_limit: 2}\n");
  const std::string a = Allocate("w1", "writer", "web", true);    // 12:10
  const std::string b = Allocate("w3", "tester", "web", true);    // 12:05
  const std::string c = Allocate("w2", "reviewer", "api", true);  // 12:20
  const std::string d = Allocate("w1", "writer", "web", true);    // 12:30
  At(5);
  Release(b, 1, 0);
  At(10);
  Release(a, 1, 0);
  At(20);
  Release(c, 1, 0, Outcome::kFailure);
  At(30);
  Release(d, 1, 0);
  At(40);
  const ActivityInput in = Input();
  auto hour = ResourceStatusReport(in, "agents",
                                   Query({{"include_performance", "true"}}));
  ASSERT_TRUE(hour.ok());
  EXPECT_FALSE(hour->result["history_complete"].get<bool>());
  EXPECT_EQ(hour->result["history_since"], "2026-01-26T12:20:00Z");
  // Only R1 and W2 are left to count.
  EXPECT_EQ(hour->result["totals"]["performance"]["failed"], 1);
  EXPECT_EQ(hour->result["totals"]["performance"]["completed"], 1);
  bool said = false;
  for (const std::string& s : hour->recommendations) {
    if (s.find("scheduling.history_limit") != std::string::npos) said = true;
  }
  EXPECT_TRUE(said);
  // From 12:25 on nothing is missing.
  const Json quarter = Status(in, {{"time_range", "15m"}});
  EXPECT_TRUE(quarter["history_complete"].get<bool>());
  // A workflow's usage can always have lost finished allocations then.
  EXPECT_FALSE(Usage(in, "w1", {})["history_complete"].get<bool>());
}

}  // namespace
}  // namespace qm::server
