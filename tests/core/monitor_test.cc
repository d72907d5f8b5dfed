// Engine::ObserveSystem: health from the machine's readings, alerts that
// fire and clear once (hysteresis), the memory pressure hold and the
// reclaim above gc_trigger_threshold.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "qm/engine.h"
#include "tests/core/engine_test_util.h"

namespace qm {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using testing_util::Harness;
using testing_util::Req;

Config Pool(double agents = 4) {
  Config c = Config::Defaults();
  c.resources[0].capacity = agents;
  c.allocation_limits.max_agents_per_workflow.reset();
  c.allocation_limits.max_memory_per_workflow.reset();
  return c;
}

SystemReading Cpu(double v) {
  SystemReading r;
  r.cpu_utilization = v;
  return r;
}

SystemReading Memory(double used, double total_gb = 16) {
  SystemReading r;
  r.memory_utilization = used;
  r.memory_total_gb = total_gb;
  return r;
}

AllocationRequest WithMemory(std::string wf, double gb,
                             std::string priority = "") {
  AllocationRequest r = Req(std::move(wf), "dev", std::move(priority));
  r.resources = {{"memory_gb", gb}};
  r.ttl = hours(2);
  return r;
}

// The id of a request that must have been taken (queued or granted).
std::string IdOf(const StatusOr<AllocateResult>& r) {
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? r->allocation.id : "";
}

std::vector<Alert> Alerts(const Harness& h) {
  std::vector<Alert> out;
  for (const Event& e : h.events) {
    if (e.type == EventType::kAlert) {
      EXPECT_TRUE(e.alert.has_value());
      if (e.alert) out.push_back(*e.alert);
    }
  }
  return out;
}

TEST(MonitorTest, HealthRatesEachFigureAgainstTheThresholds) {
  Harness h(Pool());
  Snapshot s = h.engine->GetSnapshot();
  EXPECT_FALSE(s.system.has_value());
  EXPECT_FALSE(s.health.cpu.has_value());  // not measured is not healthy
  EXPECT_EQ(s.health.overall, HealthStatus::kHealthy);

  SystemReading r;
  r.cpu_utilization = 0.85;
  r.memory_utilization = 0.5;
  r.storage_utilization = 0.2;
  ASSERT_TRUE(h.engine->ObserveSystem(r).ok());
  s = h.engine->GetSnapshot();
  ASSERT_TRUE(s.system.has_value());
  EXPECT_EQ(*s.system, r);
  EXPECT_EQ(s.system_time, h.clock.Now());
  EXPECT_EQ(s.health.cpu, HealthStatus::kWarning);
  EXPECT_EQ(s.health.memory, HealthStatus::kHealthy);
  EXPECT_EQ(s.health.storage, HealthStatus::kHealthy);
  EXPECT_EQ(s.health.overall, HealthStatus::kWarning);

  r.storage_utilization = 0.97;
  ASSERT_TRUE(h.engine->ObserveSystem(r).ok());
  s = h.engine->GetSnapshot();
  EXPECT_EQ(s.health.storage, HealthStatus::kCritical);
  EXPECT_EQ(s.health.overall, HealthStatus::kCritical);
}

TEST(MonitorTest, AnAlertFiresOnceAndClearsOnceBelowTheHysteresis) {
  Harness h(Pool());
  // Default warning 0.8, critical 0.95, hysteresis 0.05.
  for (double v : {0.5, 0.82, 0.85, 0.79, 0.81, 0.76}) {
    ASSERT_TRUE(h.engine->ObserveSystem(Cpu(v)).ok());
  }
  std::vector<Alert> a = Alerts(h);
  ASSERT_EQ(a.size(), 1u);  // 0.79 and 0.76 are within the hysteresis
  EXPECT_EQ(a[0].type, "capacity_warning");
  EXPECT_EQ(a[0].resource, "cpu");
  EXPECT_EQ(a[0].severity, "medium");
  EXPECT_TRUE(a[0].firing);
  EXPECT_EQ(a[0].message, "CPU utilization at 82% (threshold 80%)");
  EXPECT_FALSE(a[0].recommended_action.empty());
  ASSERT_EQ(h.engine->GetSnapshot().alerts.size(), 1u);
  EXPECT_DOUBLE_EQ(h.engine->GetSnapshot().alerts[0].value, 0.76);

  ASSERT_TRUE(h.engine->ObserveSystem(Cpu(0.74)).ok());
  a = Alerts(h);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_FALSE(a[1].firing);
  EXPECT_EQ(a[1].resource, "cpu");
  EXPECT_TRUE(h.engine->GetSnapshot().alerts.empty());

  // Critical raises the severity once; it drops back only under
  // critical - hysteresis, and clears under warning - hysteresis.
  for (double v : {0.96, 0.97, 0.91, 0.85, 0.86, 0.5}) {
    ASSERT_TRUE(h.engine->ObserveSystem(Cpu(v)).ok());
  }
  a = Alerts(h);
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(a[2].severity, "high");
  EXPECT_TRUE(a[2].firing);
  EXPECT_EQ(a[3].severity, "medium");  // at 0.85
  EXPECT_TRUE(a[3].firing);
  EXPECT_FALSE(a[4].firing);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(MonitorTest, TheAgentPoolWarnsOnlyWhileWorkWaitsForIt) {
  Config c = Pool(5);
  c.per_type_limits["dev"] = 4;
  Harness h(c);
  for (int i = 0; i < 4; ++i) {
    auto r = Req("w" + std::to_string(i), "dev");
    r.ttl = hours(1);
    IdOf(h.engine->Allocate(r));
  }
  ASSERT_TRUE(h.engine->ObserveSystem(SystemReading{}).ok());
  EXPECT_TRUE(Alerts(h).empty());  // 4 of 5, but nobody waits
  EXPECT_EQ(h.engine->GetSnapshot().health.agent_pool, HealthStatus::kHealthy);
  // A fifth dev waits for its type's limit: 80% of the pool with work
  // waiting is a warning.
  auto waiting = Req("w9", "dev");
  waiting.ttl = hours(1);
  auto queued = h.engine->Allocate(waiting);
  ASSERT_TRUE(queued.ok());
  ASSERT_EQ(queued->allocation.status, AllocStatus::kQueued);
  EXPECT_EQ(h.engine->GetSnapshot().health.agent_pool, HealthStatus::kWarning);
  ASSERT_TRUE(h.engine->ObserveSystem(SystemReading{}).ok());
  std::vector<Alert> a = Alerts(h);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].resource, "agents");
  EXPECT_EQ(a[0].severity, "medium");
  // The last agent taken: 100%, critical, and the alert says so once.
  auto ops = Req("ops", "ops");
  ops.ttl = hours(1);
  IdOf(h.engine->Allocate(ops));
  EXPECT_EQ(h.engine->GetSnapshot().health.agent_pool, HealthStatus::kCritical);
  ASSERT_TRUE(h.engine->ObserveSystem(SystemReading{}).ok());
  ASSERT_TRUE(h.engine->ObserveSystem(SystemReading{}).ok());
  a = Alerts(h);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[1].severity, "high");
  // Past the normal level's max wait (60 min): starvation, critical too.
  h.clock.Advance(minutes(61));
  h.engine->Tick();
  EXPECT_EQ(h.engine->GetSnapshot().health.agent_pool, HealthStatus::kCritical);
  EXPECT_EQ(h.engine->GetSnapshot().health.overall, HealthStatus::kCritical);
}

TEST(MonitorTest, MemoryPressureHoldsRequestsThatAskForMemoryUntilItEases) {
  Harness h(Pool(8));
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.85)).ok());
  Snapshot s = h.engine->GetSnapshot();
  EXPECT_TRUE(s.health.memory_pressure);
  EXPECT_EQ(s.health.memory, HealthStatus::kWarning);
  std::vector<Alert> a = Alerts(h);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].type, "memory_pressure");

  auto held = h.engine->Allocate(WithMemory("a", 2));
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  EXPECT_EQ(held->allocation.status, AllocStatus::kQueued);
  EXPECT_NE(held->allocation.reason_queued.find("memory pressure (85% of "
                                                "memory in use"),
            std::string::npos)
      << held->allocation.reason_queued;
  EXPECT_FALSE(held->allocation.expected_start.has_value());
  // Work that asks no memory goes on.
  auto other = Req("b", "dev");
  other.ttl = hours(1);
  auto started = h.engine->Allocate(other);
  ASSERT_TRUE(started.ok());
  EXPECT_EQ(started->allocation.status, AllocStatus::kActive);
  // A dry run says the same.
  auto check = h.engine->CheckConflicts(WithMemory("c", 1), Duration(0));
  ASSERT_TRUE(check.ok());
  EXPECT_EQ(check->outcome, "queue");
  EXPECT_NE(check->reason.find("memory pressure"), std::string::npos);

  // Within the hysteresis it stays held; under it the request starts.
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.77)).ok());
  EXPECT_EQ(h.StatusOf(held->allocation.id), AllocStatus::kQueued);
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.7)).ok());
  EXPECT_EQ(h.StatusOf(held->allocation.id), AllocStatus::kActive);
  EXPECT_FALSE(h.engine->GetSnapshot().health.memory_pressure);
  a = Alerts(h);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_FALSE(a[1].firing);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

TEST(MonitorTest, MemoryStallsAloneCountAsPressure) {
  Harness h(Pool());
  SystemReading r;
  r.memory_pressure = 0.12;  // PSI some avg10 12%, threshold 10%
  ASSERT_TRUE(h.engine->ObserveSystem(r).ok());
  EXPECT_TRUE(h.engine->GetSnapshot().health.memory_pressure);
  auto held = h.engine->Allocate(WithMemory("a", 1));
  ASSERT_TRUE(held.ok());
  EXPECT_NE(held->allocation.reason_queued.find("tasks stalled on memory 12%"),
            std::string::npos)
      << held->allocation.reason_queued;
  r.memory_pressure = 0.01;
  ASSERT_TRUE(h.engine->ObserveSystem(r).ok());
  EXPECT_EQ(h.StatusOf(held->allocation.id), AllocStatus::kActive);
}

TEST(MonitorTest, AboveTheGcTriggerLowPriorityHoldersAreAskedToGiveBack) {
  Harness h(Pool(8));
  // 16 GB machine: three low-priority holders of 2 GB each, one that may
  // not be preempted, one at normal priority.
  std::vector<std::string> low;
  for (int i = 0; i < 3; ++i) {
    low.push_back(IdOf(
        h.engine->Allocate(WithMemory("low" + std::to_string(i), 2, "low"))));
    h.clock.Advance(seconds(1));
  }
  auto pinned = WithMemory("pinned", 2, "low");
  pinned.preemptible = false;
  const std::string pinned_id = IdOf(h.engine->Allocate(pinned));
  const std::string normal_id =
      IdOf(h.engine->Allocate(WithMemory("normal", 2)));

  // 95% of 16 GiB: 2.4 GiB over the pressure threshold: two holders of 2 GB,
  // the most recently granted first.
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.95)).ok());
  EXPECT_EQ(h.StatusOf(low[2]), AllocStatus::kPreempted);
  EXPECT_EQ(h.StatusOf(low[1]), AllocStatus::kPreempted);
  EXPECT_EQ(h.StatusOf(low[0]), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(pinned_id), AllocStatus::kActive);
  EXPECT_EQ(h.StatusOf(normal_id), AllocStatus::kActive);
  const Event* notice = h.Find(EventType::kReclaimRequested, low[2]);
  ASSERT_NE(notice, nullptr);
  EXPECT_NE(notice->reason.find("reclaim requested: memory at 95% of 16 GiB"),
            std::string::npos)
      << notice->reason;
  EXPECT_EQ(h.Find(EventType::kPreemptionNotice, low[2]), nullptr);

  // The same reading again asks nobody else: what is being given back
  // counts.
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.95)).ok());
  EXPECT_EQ(h.StatusOf(low[0]), AllocStatus::kActive);

  // After the grace the holders that did not give back are preempted.
  h.clock.Advance(minutes(10));
  h.engine->Tick();
  EXPECT_NE(h.Find(EventType::kPreempted, low[2]), nullptr);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// Held requests claim nothing: work behind one in the same lane (same
// product, type and level) that asks no memory still starts.
TEST(MonitorTest, WorkBehindAHeldRequestInItsLaneStillStarts) {
  Harness h(Pool(2));
  std::vector<std::string> busy;
  for (int i = 0; i < 2; ++i) {
    auto r = Req("busy" + std::to_string(i), "dev");
    r.ttl = hours(1);
    auto a = h.engine->Allocate(r);
    ASSERT_TRUE(a.ok());
    busy.push_back(a->allocation.id);
  }
  auto mem = h.engine->Allocate(WithMemory("mem", 1));
  ASSERT_TRUE(mem.ok());
  h.clock.Advance(seconds(1));
  auto plain_req = Req("plain", "dev");
  plain_req.ttl = hours(1);
  auto plain = h.engine->Allocate(plain_req);
  ASSERT_TRUE(plain.ok());
  ASSERT_EQ(plain->allocation.status, AllocStatus::kQueued);
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.85)).ok());
  ASSERT_TRUE(h.engine->Release(busy[0], UsageReport{}).ok());
  EXPECT_EQ(h.StatusOf(mem->allocation.id), AllocStatus::kQueued);
  EXPECT_EQ(h.StatusOf(plain->allocation.id), AllocStatus::kActive);
  EXPECT_TRUE(h.engine->CheckInvariants().ok());
}

// An all-or-nothing batch is granted now or refused (nothing queues): under
// pressure one that asks for memory is refused, saying why.
TEST(MonitorTest, AnAllOrNothingBatchAskingMemoryIsRefusedUnderPressure) {
  Harness h(Pool(4));
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.85)).ok());
  auto batch = h.engine->AllocateBatch({Req("b2", "dev"), WithMemory("b1", 1)},
                                       /*all_or_nothing=*/true);
  ASSERT_FALSE(batch.ok());
  EXPECT_EQ(batch.status().code(), Code::kUnavailable);
  EXPECT_NE(batch.status().message().find("requests[1]"), std::string::npos);
  EXPECT_NE(batch.status().message().find("memory pressure"), std::string::npos)
      << batch.status().message();
  Snapshot s = h.engine->GetSnapshot();
  EXPECT_EQ(s.active + s.queued, 0);  // nothing granted, nothing queued
  // Without memory it goes through.
  auto plain = h.engine->AllocateBatch({Req("b3", "dev"), Req("b4", "dev")},
                                       /*all_or_nothing=*/true);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
}

// The hold follows the memory_gb resource when a reload moves counters
// (here: a resource listed before it is removed).
TEST(MonitorTest, TheHoldFollowsMemoryAcrossAReload) {
  Config c = Pool(4);
  c.resources.insert(c.resources.begin() + 1, ResourceSpec{"tool.x", 3, false});
  Harness h(c);
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.85)).ok());
  Config next = Pool(4);
  auto reloaded = h.engine->Reconfigure(next, Actor{"test", "drop tool.x"});
  ASSERT_TRUE(reloaded.ok()) << reloaded.status().ToString();
  AllocationRequest cpu = Req("cpu", "dev");
  cpu.resources = {{"cpu_cores", 1}};
  auto a = h.engine->Allocate(cpu);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->allocation.status, AllocStatus::kActive);
  auto m = h.engine->Allocate(WithMemory("mem", 1));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->allocation.status, AllocStatus::kQueued);
  // And after a save and restore.
  ManualClock clock(h.clock.Now());
  auto restored = Engine::Restore(next, &clock, nullptr, h.engine->SaveState());
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  AllocationRequest cpu2 = Req("cpu2", "dev");
  cpu2.resources = {{"cpu_cores", 1}};
  auto b = (*restored)->Allocate(cpu2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->allocation.status, AllocStatus::kActive);
}

// Leak detection: an allocation taken back says why - its heartbeats
// stopped, or it outlived its max_duration (renewing cannot help then).
TEST(MonitorTest, ExpiriesNameWhyTheAllocationWasTakenBack) {
  Harness h(Pool());
  AllocationRequest silent = Req("silent", "dev");
  silent.ttl = minutes(10);
  const std::string silent_id = IdOf(h.engine->Allocate(silent));
  AllocationRequest capped = Req("capped", "dev");
  capped.ttl = minutes(30);
  capped.max_duration = minutes(45);
  const std::string capped_id = IdOf(h.engine->Allocate(capped));
  // The capped one renews faithfully, up to its max_duration.
  for (int i = 0; i < 4; ++i) {
    h.clock.Advance(minutes(10));
    h.engine->Tick();
    ASSERT_TRUE(h.engine->Renew(capped_id).ok());
  }
  h.clock.Advance(hours(1));
  h.engine->Tick();
  const Event* a = h.Find(EventType::kExpired, silent_id);
  ASSERT_NE(a, nullptr);
  EXPECT_NE(a->reason.find("no heartbeat: lease expired at"), std::string::npos)
      << a->reason;
  const Event* b = h.Find(EventType::kExpired, capped_id);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(b->reason.find("reached its max_duration of 45m"),
            std::string::npos)
      << b->reason;
  const Event* warn = h.Find(EventType::kLeaseExpiring, capped_id);
  ASSERT_NE(warn, nullptr);
  EXPECT_NE(warn->reason.find("reached its max_duration"), std::string::npos);
}

TEST(MonitorTest, BadReadingsAreRefusedAndChangeNothing) {
  Harness h(Pool());
  ASSERT_TRUE(h.engine->ObserveSystem(Cpu(0.9)).ok());
  const std::string before = h.engine->StateDigest();
  const size_t events = h.events.size();
  SystemReading r = Cpu(1.5);
  Status s = h.engine->ObserveSystem(r);
  EXPECT_EQ(s.code(), Code::kInvalidRequest);
  EXPECT_NE(s.message().find("cpu_utilization"), std::string::npos);
  r = Memory(-0.1);
  EXPECT_NE(h.engine->ObserveSystem(r).message().find("memory_utilization"),
            std::string::npos);
  r = SystemReading{};
  r.storage_utilization = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(h.engine->ObserveSystem(r).code(), Code::kInvalidRequest);
  r = SystemReading{};
  r.memory_total_gb = -1;
  EXPECT_NE(h.engine->ObserveSystem(r).message().find("memory_total_gb"),
            std::string::npos);
  EXPECT_EQ(h.engine->StateDigest(), before);
  EXPECT_EQ(h.events.size(), events);
}

TEST(MonitorTest, ThresholdsOutOfOrderAreRefused) {
  Config c = Pool();
  c.monitoring.critical_threshold = 0.7;  // below warning 0.8
  ManualClock clock;
  auto e = Engine::Create(c, &clock, nullptr);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("monitoring.critical_threshold"),
            std::string::npos);
  c = Pool();
  c.monitoring.pressure_threshold = 0;
  e = Engine::Create(c, &clock, nullptr);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("monitoring.pressure_threshold"),
            std::string::npos);
}

TEST(MonitorTest, SaveAndRestoreKeepReadingPressureAndAlerts) {
  Harness h(Pool());
  ASSERT_TRUE(h.engine->ObserveSystem(Cpu(0.9)).ok());
  ASSERT_TRUE(h.engine->ObserveSystem(Memory(0.85)).ok());
  const std::string held = IdOf(h.engine->Allocate(WithMemory("a", 1)));
  const std::string state = h.engine->SaveState();
  ManualClock clock(h.clock.Now());
  std::vector<Event> events;
  testing_util::RecordingSink sink(&events);
  auto restored = Engine::Restore(Pool(), &clock, &sink, state);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ((*restored)->StateDigest(), h.engine->StateDigest());
  Snapshot s = (*restored)->GetSnapshot();
  EXPECT_TRUE(s.health.memory_pressure);
  EXPECT_EQ(s.alerts.size(), h.engine->GetSnapshot().alerts.size());
  // The restored engine clears the pressure as the live one would.
  ASSERT_TRUE((*restored)->ObserveSystem(Memory(0.5)).ok());
  auto after = (*restored)->Get(held);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status, AllocStatus::kActive);
}

}  // namespace
}  // namespace qm

namespace qm {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// tests/core/testdata/state_v1.bin: a state saved by the qm before format
// version 2 (no monitoring section): 3 agents, five requests of 1 GB.
Config V1Config() {
  Config c = Config::Defaults();
  c.resources[0].capacity = 3;
  return c;
}

TEST(MonitorStateTest, AVersion1StateLoadsWithoutReadingsOrAlerts) {
  const std::string v1 = ReadFile(std::string(QM_SOURCE_DIR) +
                                  "/tests/core/testdata/state_v1.bin");
  ASSERT_GT(v1.size(), 5u);
  ASSERT_EQ(v1[4], 1);  // format version 1
  ManualClock clock(testing_util::TestStart() + std::chrono::seconds(5));
  std::vector<Event> events;
  testing_util::RecordingSink sink(&events);
  auto e = Engine::Restore(V1Config(), &clock, &sink, v1);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  Snapshot s = (*e)->GetSnapshot();
  EXPECT_EQ(s.active, 3);
  EXPECT_EQ(s.queued, 2);
  EXPECT_FALSE(s.system.has_value());
  EXPECT_TRUE(s.alerts.empty());
  // Saved again, it is the current version, and the engine goes on as
  // usual.
  EXPECT_EQ((*e)->SaveState()[4], 3);
  ASSERT_TRUE((*e)->ObserveSystem(Memory(0.9, 8)).ok());
  EXPECT_TRUE((*e)->GetSnapshot().health.memory_pressure);

  // Under thresholds other than the defaults it was saved under, it is
  // refused like any other config change.
  Config other = V1Config();
  other.monitoring.warning_threshold = 0.7;
  auto refused = Engine::Restore(other, &clock, &sink, v1);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("monitoring_thresholds"),
            std::string::npos)
      << refused.status().message();
}

// tests/core/testdata/state_v2.bin: a state saved by the qm before format
// version 3 (43ee68a; no grant waits, no degradation config part): the
// V1Config pool of 3 agents, five requests of 1 GB a second apart (three
// granted, two queued), then a reading of CPU 90% and memory 50% of 8 GB,
// which left two capacity_warning alerts (cpu, agents).
TEST(MonitorStateTest, AVersion2StateLoadsWithItsAlertsAndNoWaits) {
  const std::string v2 = ReadFile(std::string(QM_SOURCE_DIR) +
                                  "/tests/core/testdata/state_v2.bin");
  ASSERT_GT(v2.size(), 5u);
  ASSERT_EQ(v2[4], 2);  // format version 2
  ManualClock clock(testing_util::TestStart() + std::chrono::seconds(10));
  std::vector<Event> events;
  testing_util::RecordingSink sink(&events);
  auto e = Engine::Restore(V1Config(), &clock, &sink, v2);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  Snapshot s = (*e)->GetSnapshot();
  EXPECT_EQ(s.active, 3);
  EXPECT_EQ(s.queued, 2);
  ASSERT_TRUE(s.system.has_value());
  EXPECT_EQ(s.system->cpu_utilization, 0.9);
  ASSERT_EQ(s.alerts.size(), 2u);
  EXPECT_EQ(s.alerts[0].type, "capacity_warning");
  EXPECT_EQ((*e)->SaveState()[4], 3);
  ASSERT_TRUE((*e)->ObserveSystem(Cpu(0.1)).ok());
  EXPECT_EQ((*e)->GetSnapshot().alerts.size(), 1u);  // cpu cleared

  // Under degradation settings other than the defaults it was saved
  // under, it is refused like any other config change.
  Config other = V1Config();
  other.monitoring.degradation.window = std::chrono::minutes(5);
  auto refused = Engine::Restore(other, &clock, &sink, v2);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("monitoring.degradation"),
            std::string::npos)
      << refused.status().message();
}

// degraded_performance: the mean queue wait of the grants of the last
// window against the baseline before it.
class DegradationTest : public ::testing::Test {
 protected:
  static Config OneAgent() {
    Config c = Pool(1);
    c.monitoring.degradation.min_increase = std::chrono::seconds(5);
    return c;
  }
  DegradationTest() : h_(OneAgent()) {
    holder_ = IdOf(h_.engine->Allocate(Long("w0")));
  }
  static AllocationRequest Long(std::string wf) {
    AllocationRequest r = Req(std::move(wf), "dev");
    r.ttl = hours(4);
    return r;
  }
  // `n` grants that each waited `wait`: each request queues behind the one
  // holder, which releases after `wait`, so it is granted and holds next.
  void Grants(int n, Duration wait) {
    for (int i = 0; i < n; ++i) {
      const std::string next =
          IdOf(h_.engine->Allocate(Long("w" + std::to_string(++n_))));
      h_.clock.Advance(wait);
      ASSERT_TRUE(h_.engine->Release(holder_).ok());
      ASSERT_EQ(h_.StatusOf(next), AllocStatus::kActive);
      holder_ = next;
    }
  }
  std::vector<Alert> Degraded() const {
    std::vector<Alert> out;
    for (const Alert& a : Alerts(h_)) {
      if (a.type == "degraded_performance") out.push_back(a);
    }
    return out;
  }

  Harness h_;
  std::string holder_;
  int n_ = 0;
};

TEST_F(DegradationTest, FiresOnceWhenWaitsRiseAndClearsWhenTheyFall) {
  Grants(40, seconds(20));  // the baseline: 20 s each
  h_.clock.Advance(minutes(16));
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  EXPECT_TRUE(Degraded().empty());  // no recent grants: nothing to compare

  Grants(6, seconds(40));  // twice the baseline
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  std::vector<Alert> d = Degraded();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_TRUE(d[0].firing);
  EXPECT_EQ(d[0].resource, "queue_wait");
  // The baseline: 40 waits of 20 s and the first holder's of none.
  EXPECT_EQ(d[0].severity, "medium");  // +105%
  EXPECT_NEAR(d[0].value, 40.0 / (800.0 / 41) - 1, 1e-9);
  EXPECT_EQ(d[0].threshold, 0.25);
  EXPECT_EQ(d[0].message,
            "Queue wait increased by 105%: grants waited 40s on average over "
            "the last 15m, against 20s over the previous 1d");
  EXPECT_FALSE(d[0].recommended_action.empty());
  Snapshot s = h_.engine->GetSnapshot();
  bool listed = false;
  for (const Alert& a : s.alerts) listed |= a.type == "degraded_performance";
  EXPECT_TRUE(listed);

  // Still degraded: no second event.
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  EXPECT_EQ(Degraded().size(), 1u);

  // Waits back at the baseline for a whole window: it clears, once.
  h_.clock.Advance(minutes(15));
  Grants(45, seconds(20));
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  d = Degraded();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_FALSE(d[1].firing);
  EXPECT_NE(d[1].message.find("back to normal"), std::string::npos)
      << d[1].message;
  for (const Alert& a : h_.engine->GetSnapshot().alerts) {
    EXPECT_NE(a.type, "degraded_performance");
  }
}

TEST_F(DegradationTest, SmallOrUnderThresholdRisesDoNotFire) {
  Grants(40, seconds(2));
  h_.clock.Advance(minutes(16));
  Grants(6, seconds(6));  // +200%, but only 4 s more (min_increase 5 s)
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  EXPECT_TRUE(Degraded().empty());
}

TEST_F(DegradationTest, RisesUnderTheThresholdDoNotFire) {
  Grants(40, seconds(40));
  h_.clock.Advance(minutes(16));
  Grants(6, seconds(48));  // +20%: under the 25% threshold
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  EXPECT_TRUE(Degraded().empty());
  Grants(6, seconds(60));  // the window's mean is now 54 s: +35%
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  ASSERT_EQ(Degraded().size(), 1u);
  EXPECT_EQ(Degraded()[0].severity, "low");
}

TEST_F(DegradationTest, TooFewGrantsAreNotJudged) {
  // With the first holder's, 19 grants: under 4 x min_samples.
  Grants(18, seconds(20));
  h_.clock.Advance(minutes(16));
  Grants(6, seconds(60));
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  EXPECT_TRUE(Degraded().empty());
}

TEST_F(DegradationTest, SaveAndRestoreKeepTheWaits) {
  Grants(40, seconds(20));
  h_.clock.Advance(minutes(16));
  Grants(6, seconds(40));
  const std::string state = h_.engine->SaveState();
  ManualClock clock(h_.clock.Now());
  std::vector<Event> events;
  testing_util::RecordingSink sink(&events);
  auto restored = Engine::Restore(OneAgent(), &clock, &sink, state);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  EXPECT_EQ((*restored)->StateDigest(), h_.engine->StateDigest());
  ASSERT_TRUE((*restored)->ObserveSystem(Cpu(0.1)).ok());
  ASSERT_TRUE(h_.engine->ObserveSystem(Cpu(0.1)).ok());
  EXPECT_EQ((*restored)->StateDigest(), h_.engine->StateDigest());
  int fired = 0;
  for (const Event& e : events) {
    fired += e.type == EventType::kAlert && e.alert &&
             e.alert->type == "degraded_performance";
  }
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(Degraded().size(), 1u);
}

}  // namespace
}  // namespace qm
