// Monitoring in the server: the sampler reads the machine (here a fixture
// tree whose memory the test changes), the engine rates it, and the API
// shows health, alerts and history; memory pressure holds new requests
// that ask for memory and asks low-priority holders to give back.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "qm/store.h"
#include "server/sampler.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint64_t kGiB = uint64_t{1} << 30;

// The container fixture: memory.max 2 GiB; memory.current set by the test.
class MonitorServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/root";
    std::filesystem::copy(std::string(QM_SOURCE_DIR) +
                              "/tests/sys/fixtures/container-cgroup-limited",
                          root_, std::filesystem::copy_options::recursive);
    SetMemoryUsed(0.25);
    // No task stalls on memory (the fixture's own figures would count as
    // pressure).
    std::ofstream(root_ + "/proc/pressure/memory")
        << "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
           "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    ServeOptions o;
    o.http.listen = "127.0.0.1:0";
    o.service.workers = 8;
    o.durable.store.location = dir_.path() + "/state";
    o.service.auth.detect.root = root_;
    o.service.auth.fixed_resources = {"memory_gb"};
    auto c = LoadConfigString(
        "resources:\n  memory_gb: 8\n"
        "resource_policies:\n  monitoring_intervals:\n"
        "    resource_check: 1s\n",
        "test");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    o.config = *c;
    auto app = App::Start(std::move(o));
    ASSERT_TRUE(app.ok()) << app.status().ToString();
    app_ = std::move(*app);
    url_ = "http://" + app_->address();
  }

  // The cgroup's memory.current as a share of its 2 GiB limit.
  void SetMemoryUsed(double share) {
    const std::string path = root_ + "/sys/fs/cgroup/memory.current";
    std::ofstream(path + ".tmp")
        << static_cast<uint64_t>(share * 2 * kGiB) << "\n";
    std::filesystem::rename(path + ".tmp", path);
  }

  Json Get(const std::string& target) {
    HttpClient client = testing::ClientOf(url_);
    auto r = client.Call("GET", target);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return Json();
    Json j = Json::parse(r->body, nullptr, false);
    EXPECT_EQ(r->status, 200) << r->body;
    return j.is_object() && j.contains("result") ? j["result"] : Json();
  }

  Json Post(const std::string& target, const Json& body) {
    HttpClient client = testing::ClientOf(url_);
    auto r = client.Call("POST", target, body.dump());
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return Json();
    Json j = Json::parse(r->body, nullptr, false);
    return j.is_object() && j.contains("result") ? j["result"] : j;
  }

  // Polls `done` every 50 ms for up to 10 s.
  template <typename F>
  bool WaitFor(F done) {
    for (int i = 0; i < 200; ++i) {
      if (done()) return true;
      std::this_thread::sleep_for(milliseconds(50));
    }
    return done();
  }

  testing::TempDir dir_;
  std::string root_;
  std::unique_ptr<App> app_;
  std::string url_;
};

TEST_F(MonitorServerTest, MemoryPressureIsSeenHeldAndEased) {
  // Healthy at first: 25% of the cgroup's 2 GiB.
  ASSERT_TRUE(WaitFor([&] { return Get("/v1/status")["system"].is_object(); }));
  Json status = Get("/v1/status");
  EXPECT_EQ(status["health"]["memory_status"], "healthy");
  EXPECT_EQ(status["health"]["memory_pressure"], false);
  EXPECT_NEAR(status["system"]["memory_utilization_percent"].get<double>(), 25,
              0.5);

  // A low-priority holder of memory, watched through the event stream.
  Json low = Post("/v1/allocations", {{"workflow_id", "batch"},
                                      {"agent_type", "indexer"},
                                      {"priority", "low"},
                                      {"ttl", "1h"},
                                      {"resources", {{"memory_gb", 2}}}});
  ASSERT_EQ(low["status"], "active") << low.dump();
  const std::string low_id = low["allocation_id"];
  std::vector<Json> events;
  std::mutex mu;
  std::thread reader([&] {
    HttpClient client = testing::ClientOf(url_);
    client.Stream(
        // From the first event kept: nothing is missed however quickly
        // the sampler fires after the stream was asked for.
        "/v1/events?after=0&types=alert,reclaim_requested",
        [&](const std::string&, const std::string&, const std::string& data) {
          Json e = Json::parse(data, nullptr, false);
          // Other alerts (this machine's disk, say) are not this test's.
          if (e.contains("alert") && e["alert"]["type"] != "memory_pressure") {
            return true;
          }
          std::lock_guard<std::mutex> lock(mu);
          events.push_back(std::move(e));
          return events.size() < 3;
        },
        seconds(20));
  });

  // 97% used: pressure (over 0.8) and the gc trigger (over 0.9).
  SetMemoryUsed(0.97);
  ASSERT_TRUE(WaitFor(
      [&] { return Get("/v1/status")["health"]["memory_pressure"] == true; }));
  status = Get("/v1/status");
  EXPECT_EQ(status["health"]["memory_status"], "critical");
  EXPECT_EQ(status["health"]["overall_status"], "critical");
  bool alerted = false;
  for (const Json& a : status["alerts"]) {
    alerted |= a["type"] == "memory_pressure" && a["state"] == "firing";
  }
  EXPECT_TRUE(alerted) << status["alerts"].dump();
  // The low-priority holder is asked to give back.
  ASSERT_TRUE(WaitFor([&] {
    return Get("/v1/allocations/" + low_id)["status"] == "preempted";
  }));
  // A new request for memory waits, saying why; one without memory runs.
  Json held = Post("/v1/allocations", {{"workflow_id", "w2"},
                                       {"agent_type", "dev"},
                                       {"ttl", "1h"},
                                       {"resources", {{"memory_gb", 1}}}});
  ASSERT_EQ(held["status"], "queued") << held.dump();
  EXPECT_NE(held["reason_queued"].get<std::string>().find("memory pressure"),
            std::string::npos)
      << held.dump();
  Json other =
      Post("/v1/allocations",
           {{"workflow_id", "w3"}, {"agent_type", "dev"}, {"ttl", "1h"}});
  EXPECT_EQ(other["status"], "active") << other.dump();

  // Back to 30%: the held request starts and the alert clears.
  SetMemoryUsed(0.3);
  const std::string held_id = held["allocation_id"];
  ASSERT_TRUE(WaitFor(
      [&] { return Get("/v1/allocations/" + held_id)["status"] == "active"; }));
  EXPECT_EQ(Get("/v1/status")["health"]["memory_pressure"], false);
  reader.join();
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(events.size(), 3u);
  // Fired, asked back, cleared: once each.
  EXPECT_EQ(events[0]["type"], "alert");
  EXPECT_EQ(events[0]["alert"]["type"], "memory_pressure");
  EXPECT_EQ(events[0]["alert"]["state"], "firing");
  EXPECT_EQ(events[1]["type"], "reclaim_requested");
  EXPECT_EQ(events[1]["allocation_id"], low_id);
  EXPECT_EQ(events[2]["alert"]["state"], "resolved");
}

TEST_F(MonitorServerTest, MonitorSystemShowsTheMachineAndItsHistory) {
  ASSERT_TRUE(WaitFor(
      [&] { return Get("/v1/monitor/system")["history"].size() >= 3; }));
  Json m =
      Get("/v1/monitor/"
          "system?time_range=10m&include_trends=true&detail_level=full");
  // The fixture's figures: a 2 GiB cgroup limit, 1.5 cores of quota.
  EXPECT_DOUBLE_EQ(m["system"]["memory"]["cgroup_limit_gb"].get<double>(), 2);
  EXPECT_DOUBLE_EQ(m["system"]["cpu"]["cgroup_quota_cores"].get<double>(), 1.5);
  EXPECT_TRUE(m["system"]["pressure"]["memory"].is_object());
  EXPECT_EQ(m["time_range"], "10m");
  EXPECT_EQ(m["sample_interval"], "1s");
  const Json& h = m["history"];
  ASSERT_GE(h.size(), 3u);
  EXPECT_NEAR(h.back()["memory_utilization"].get<double>(), 25, 0.5);
  EXPECT_EQ(h.back()["agents_limit"], 5);
  EXPECT_EQ(m["trends"]["memory_utilization"]["direction"], "steady");
  EXPECT_EQ(m["health"]["memory_status"], "healthy");
  EXPECT_TRUE(m["capacity_utilization"].contains("projected_24h"));

  HttpClient client = testing::ClientOf(url_);
  for (const char* bad : {"/v1/monitor/system?time_range=soon",
                          "/v1/monitor/system?include_trends=yes",
                          "/v1/monitor/system?detail_level=everything",
                          "/v1/monitor/system?export_format=xml",
                          "/v1/monitor/system?colour=blue"}) {
    auto r = client.Call("GET", bad);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, 400) << bad << ": " << r->body;
  }
}

// The sampler's tiers: raw samples for the raw range, 5-minute averages
// beyond it (a manual clock drives it; the fixture is read each time).
TEST(SamplerTest, KeepsRawSamplesAndFiveMinuteAverages) {
  testing::TempDir dir;
  ManualClock clock(Time(Duration(1769436000000LL)));
  auto app = testing::StartApp(dir.path() + "/state", "");
  ASSERT_NE(app, nullptr);
  SamplerOptions o;
  o.clock = &clock;
  o.root = std::string(QM_SOURCE_DIR) +
           "/tests/sys/fixtures/container-cgroup-limited";
  o.storage_path = dir.path();
  o.raw_range = std::chrono::minutes(30);
  Sampler sampler(o, &app->engine());
  for (int i = 0; i < 120; ++i) {  // an hour, every 30 s
    ASSERT_TRUE(sampler.SampleOnce().ok());
    clock.Advance(seconds(30));
  }
  EXPECT_EQ(sampler.samples_taken(), 120);
  // The last 30 minutes raw: 60 samples.
  EXPECT_EQ(sampler.History(std::chrono::minutes(30)).size(), 60u);
  // The hour in 5-minute averages: 12 buckets of 10 samples.
  const std::vector<Sample> hour = sampler.History(std::chrono::hours(1));
  ASSERT_EQ(hour.size(), 12u);
  EXPECT_EQ(hour.front().count, 10);
  ASSERT_TRUE(hour.front().memory_utilization.has_value());
  EXPECT_GT(*hour.front().memory_utilization, 0);
  ASSERT_TRUE(sampler.Latest().ok());
}

// Samplers over the fixture tree, on a manual clock that starts on a bucket
// boundary long ago (so the history is nothing a server sampling the real
// clock would load or prune).
SamplerOptions FixtureSampling(ManualClock* clock, const std::string& dir) {
  SamplerOptions o;
  o.clock = clock;
  o.root = std::string(QM_SOURCE_DIR) +
           "/tests/sys/fixtures/container-cgroup-limited";
  o.storage_path = dir;
  o.raw_range = std::chrono::minutes(30);
  return o;
}
const Time kLongAgo(Duration(999999900000LL));  // 2001-09-09T01:45:00Z

// What a user would compare between two histories.
void ExpectSameSamples(const std::vector<Sample>& got,
                       const std::vector<Sample>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE("sample " + std::to_string(i));
    EXPECT_EQ(got[i].time, want[i].time);
    EXPECT_EQ(got[i].count, want[i].count);
    EXPECT_EQ(got[i].memory_utilization.has_value(),
              want[i].memory_utilization.has_value());
    if (got[i].memory_utilization && want[i].memory_utilization) {
      EXPECT_DOUBLE_EQ(*got[i].memory_utilization, *want[i].memory_utilization);
    }
    EXPECT_EQ(got[i].cpu_utilization.has_value(),
              want[i].cpu_utilization.has_value());
    EXPECT_DOUBLE_EQ(got[i].agents_limit, want[i].agents_limit);
    EXPECT_DOUBLE_EQ(got[i].queued, want[i].queued);
  }
}

// The history is in the store: a new sampler after a restart on the same
// state directory answers with what the old one recorded, raw samples and
// 5-minute averages alike, and goes on filling the bucket that was open.
TEST(SamplerTest, HistorySurvivesARestartInBothTiers) {
  testing::TempDir dir;
  ManualClock clock(kLongAgo);
  const SamplerOptions o = FixtureSampling(&clock, dir.path());
  std::vector<Sample> raw_before, hour_before;
  {
    auto app = testing::StartApp(dir.path() + "/state", "");
    ASSERT_NE(app, nullptr);
    Sampler sampler(o, &app->engine());
    EXPECT_TRUE(sampler.History(std::chrono::hours(1)).empty());
    for (int i = 0; i < 120; ++i) {  // an hour, every 30 s
      ASSERT_TRUE(sampler.SampleOnce().ok());
      clock.Advance(seconds(30));
    }
    raw_before = sampler.History(std::chrono::minutes(30));
    hour_before = sampler.History(std::chrono::hours(1));
    ASSERT_EQ(raw_before.size(), 60u);
    ASSERT_EQ(hour_before.size(), 12u);
    ASSERT_TRUE(app->Stop(seconds(5)).ok());
  }

  auto app = testing::StartApp(dir.path() + "/state", "");
  ASSERT_NE(app, nullptr);
  Sampler sampler(o, &app->engine());
  EXPECT_EQ(sampler.samples_taken(), 0);
  // The raw tier: the last 30 minutes, as they were.
  ExpectSameSamples(sampler.History(std::chrono::minutes(30)), raw_before);
  // The averaged tier: the first half hour is older than the raw range,
  // so only the stored averages can answer for it; the open bucket (the
  // last 10 samples) was rebuilt from the raw ones.
  const std::vector<Sample> hour = sampler.History(std::chrono::hours(1));
  ExpectSameSamples(hour, hour_before);
  ASSERT_EQ(hour.size(), 12u);
  EXPECT_EQ(hour.front().time, kLongAgo);
  EXPECT_EQ(hour.front().count, 10);
  EXPECT_EQ(hour.back().count, 10);

  // The next sample closes the rebuilt bucket with all its 10 samples, and
  // its average is stored: yet another sampler finds 12 closed buckets.
  ASSERT_TRUE(sampler.SampleOnce().ok());
  const std::vector<Sample> after = sampler.History(std::chrono::hours(2));
  ASSERT_EQ(after.size(), 13u);
  EXPECT_EQ(after[11].count, 10);
  EXPECT_EQ(after[12].count, 1);
  Sampler another(o, &app->engine());
  const std::vector<Sample> stored = another.History(std::chrono::hours(2));
  ASSERT_EQ(stored.size(), 13u);
  EXPECT_EQ(stored[11].time, kLongAgo + std::chrono::minutes(55));
  EXPECT_EQ(stored[11].count, 10);

  // What falls out of a tier's range is pruned from the store too: 30
  // minutes later only the raw samples of the last half hour are stored.
  for (int i = 0; i < 61; ++i) {
    clock.Advance(seconds(30));
    ASSERT_TRUE(sampler.SampleOnce().ok());
  }
  auto raw_stored = app->engine().ReadHistory(0, 0, 1000);
  ASSERT_TRUE(raw_stored.ok()) << raw_stored.status().ToString();
  ASSERT_FALSE(raw_stored->empty());
  EXPECT_GE(
      raw_stored->front().time_ms,
      (clock.Now() - std::chrono::minutes(35)).time_since_epoch().count());
}

// Damaged records in the stored history are skipped with a message; the
// rest loads and sampling goes on.
TEST(SamplerTest, DamagedStoredHistoryIsSkippedWithALog) {
  testing::TempDir dir;
  ManualClock clock(kLongAgo);
  const SamplerOptions o = FixtureSampling(&clock, dir.path());
  const std::string state = dir.path() + "/state";
  {
    auto app = testing::StartApp(state, "");
    ASSERT_NE(app, nullptr);
    Sampler sampler(o, &app->engine());
    for (int i = 0; i < 20; ++i) {  // two buckets, the second still open
      ASSERT_TRUE(sampler.SampleOnce().ok());
      clock.Advance(seconds(30));
    }
  }
  {
    StoreOptions so;
    so.location = state;
    auto store = Store::Open(so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    const int64_t t = kLongAgo.time_since_epoch().count();
    ASSERT_TRUE((*store)
                    ->AppendHistory({
                        {0, t + 1000, "not json"},
                        {0, t + 2000,
                         R"({"v":1,"agents":1,"limit":2,)"
                         R"("queued":0,"tokens":0,"cost":0,)"
                         R"("n":"many"})"},
                        {0, t + 3000, "[1,2,3]"},
                        {0, t + 4000, std::string("\xff\xfe\0{", 4)},
                        {0, t + 5000, R"({"v":1,"cpu":"high"})"},
                        {1, t, R"({"v":99})"},
                    })
                    .ok());
  }
  auto app = testing::StartApp(state, "");
  ASSERT_NE(app, nullptr);
  ::testing::internal::CaptureStderr();
  Sampler sampler(o, &app->engine());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("skipped 6 damaged usage history record(s)"),
            std::string::npos)
      << log;
  const std::vector<Sample> raw = sampler.History(std::chrono::minutes(30));
  ASSERT_EQ(raw.size(), 20u);
  for (const Sample& s : raw) EXPECT_EQ(s.count, 1);
  const std::vector<Sample> hour = sampler.History(std::chrono::hours(1));
  ASSERT_EQ(hour.size(), 2u);
  EXPECT_EQ(hour[0].count, 10);
  EXPECT_EQ(hour[1].count, 10);
  EXPECT_TRUE(sampler.SampleOnce().ok());
  EXPECT_EQ(sampler.History(std::chrono::minutes(30)).size(), 21u);
}

// The stored form: round trips, and anything else is refused, not guessed.
TEST(SamplerTest, StoredSamplesRoundTripAndGarbageIsRefused) {
  Sample s;
  s.time = kLongAgo;
  s.cpu_utilization = 0.123456789;
  s.memory_pressure = 0;
  s.agents_active = 3;
  s.agents_limit = 8;
  s.queued = 1.5;
  s.tokens_today = 123456789;
  s.cost_today_usd = 0.1 + 0.2;
  s.count = 7;
  auto back = DecodeSample(kLongAgo, EncodeSample(s));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->time, kLongAgo);
  ASSERT_TRUE(back->cpu_utilization.has_value());
  EXPECT_EQ(*back->cpu_utilization, 0.123456789);
  EXPECT_FALSE(back->memory_utilization.has_value());
  ASSERT_TRUE(back->memory_pressure.has_value());
  EXPECT_EQ(*back->memory_pressure, 0.0);
  EXPECT_FALSE(back->storage_utilization.has_value());
  EXPECT_EQ(back->agents_active, 3);
  EXPECT_EQ(back->agents_limit, 8);
  EXPECT_EQ(back->queued, 1.5);
  EXPECT_EQ(back->tokens_today, 123456789);
  EXPECT_EQ(back->cost_today_usd, 0.1 + 0.2);
  EXPECT_EQ(back->count, 7);
  for (const std::string& bad :
       {std::string(), std::string("null"), std::string("{}"),
        std::string(R"({"v":2})"), std::string(R"({"v":"1"})"),
        EncodeSample(s).substr(0, 20), std::string("\0\0\0", 3),
        std::string(R"({"v":1,"agents":0,"limit":0,"queued":0,"tokens":0,)"
                    R"("cost":0,"n":0})"),
        std::string(R"({"v":1,"agents":0,"limit":0,"queued":0,"tokens":0,)"
                    R"("cost":0})"),
        std::string(R"({"v":1,"agents":[],"limit":0,"queued":0,"tokens":0,)"
                    R"("cost":0,"n":1})")}) {
    auto r = DecodeSample(kLongAgo, bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kDataLoss) << bad;
  }
}

TEST(SamplerTest, TrendsFitALine) {
  std::vector<Sample> s;
  const Time t0(Duration(1769436000000LL));
  for (int i = 0; i <= 60; ++i) {
    Sample x;
    x.time = t0 + std::chrono::minutes(i);
    x.cpu_utilization = 0.2 + 0.005 * i;  // +0.3 per hour
    s.push_back(x);
  }
  Trend t = TrendOf(s, [](const Sample& x) {
    return x.cpu_utilization ? std::optional<double>(*x.cpu_utilization * 100)
                             : std::nullopt;
  });
  EXPECT_EQ(t.samples, 61);
  EXPECT_NEAR(t.slope_per_hour, 30, 1e-6);
  EXPECT_EQ(t.direction, "rising");
  EXPECT_NEAR(t.min, 20, 1e-9);
  EXPECT_NEAR(t.max, 50, 1e-9);
  EXPECT_NEAR(t.average, 35, 1e-9);
  EXPECT_EQ(TrendOf({}, [](const Sample&) { return std::optional<double>(); })
                .direction,
            "unknown");
}

}  // namespace
}  // namespace qm::server
