// End-to-end tests of `qm serve` in this process: the real App (durable
// engine on SQLite in a temporary directory, HTTP on port 0) driven over
// HTTP with the project's client.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "qm/config_loader.h"
#include "server/app.h"
#include "server/http_client.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

using testing::TempDir;

// Seed 001's concurrency example: at most 5 agents, 2 backend engineers.
constexpr const char* kSeed001 = R"(
max_concurrent:
  total: 5
  per_type:
    backend-engineer: 2
    frontend-engineer: 2
)";

class ServerTest : public ::testing::Test {
 protected:
  void Start(const std::string& yaml = kSeed001) {
    app_ = testing::StartApp(dir_.path(), yaml);
    ASSERT_TRUE(app_);
    url_ = "http://" + app_->address();
  }
  void TearDown() override {
    if (app_) {
      EXPECT_TRUE(app_->Stop(std::chrono::seconds(5)).ok());
    }
  }

  HttpClient Client() { return testing::ClientOf(url_); }
  // Sends a request and parses the envelope; `status` is the HTTP status.
  Json Call(const std::string& method, const std::string& target,
            const std::string& body = "", int* status = nullptr) {
    HttpClient c = Client();
    auto r = c.Call(method, target, body, std::chrono::seconds(30));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return Json();
    if (status) *status = r->status;
    Json j = Json::parse(r->body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r->body;
    return j;
  }
  Json Allocate(const std::string& type, const std::string& extra = "") {
    return Call("POST", "/v1/allocations",
                R"({"workflow_id": "task-graph", "product": "analytics",)"
                R"( "agent_type": ")" +
                    type + "\"" + extra + "}");
  }

  TempDir dir_;
  std::unique_ptr<App> app_;
  std::string url_;
};

TEST_F(ServerTest, AllocateGetReleaseRoundTrip) {
  Start();
  int status = 0;
  Json a = Call("POST", "/v1/allocations",
                R"({"workflow_id": "w1", "agent_type": "backend-engineer"})",
                &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(a["status"], "success");
  EXPECT_EQ(a["operation"], "allocate");
  const std::string id = a["result"]["allocation_id"];
  EXPECT_EQ(a["result"]["status"], "active");
  EXPECT_GT(a["result"]["fencing_token"].get<int>(), 0);

  Json g = Call("GET", "/v1/allocations/" + id);
  EXPECT_EQ(g["result"]["allocation_id"], id);
  EXPECT_EQ(g["result"]["status"], "active");

  Json r = Call("POST", "/v1/allocations/" + id + "/release",
                R"({"usage": {"tokens": 1200, "outcome": "success"}})");
  EXPECT_EQ(r["status"], "success");
  EXPECT_EQ(r["result"]["status"], "released");

  // A retried release (the answer was lost, say) answers the same.
  Json again = Call("POST", "/v1/allocations/" + id + "/release", "", &status);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(again["result"]["status"], "released");
  // Renewing a released allocation clashes with its state.
  Json renew = Call("POST", "/v1/allocations/" + id + "/renew", "", &status);
  EXPECT_EQ(status, 409) << renew.dump();
  EXPECT_EQ(renew["error"]["code"], "CONFLICT");

  Json list = Call("GET", "/v1/allocations?status=released");
  ASSERT_EQ(list["result"]["allocations"].size(), 1u);
  EXPECT_EQ(list["result"]["allocations"][0]["allocation_id"], id);
}

// Seed 001: five ready tasks, 2 backend engineers at most: the third
// backend task queues with the reason, and starts when one finishes.
TEST_F(ServerTest, Seed001ConcurrencyExample) {
  Start();
  std::vector<std::string> backend;
  for (int i = 0; i < 3; ++i) {
    Json a = Allocate("backend-engineer", R"(, "estimated_minutes": 30)");
    backend.push_back(a["result"]["allocation_id"]);
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Allocate("frontend-engineer")["result"]["status"], "active");
  }
  Json third = Call("GET", "/v1/allocations/" + backend[2]);
  EXPECT_EQ(third["result"]["status"], "queued");
  const std::string reason = third["result"]["reason_queued"];
  EXPECT_NE(reason.find("backend-engineer"), std::string::npos) << reason;

  Json q = Call("GET", "/v1/queue");
  ASSERT_EQ(q["result"]["queue"].size(), 1u);
  EXPECT_EQ(q["result"]["queue"][0]["allocation_id"], backend[2]);

  Call("POST", "/v1/allocations/" + backend[0] + "/release");
  EXPECT_EQ(Call("GET", "/v1/allocations/" + backend[2])["result"]["status"],
            "active");
  Json s = Call("GET", "/v1/status");
  EXPECT_EQ(s["result"]["resources"]["agents"]["allocated"], 4.0);
}

TEST_F(ServerTest, BadInputIsRefusedWithTheFieldNamed) {
  Start();
  int status = 0;
  Json j = Call("POST", "/v1/allocations", "{not json", &status);
  EXPECT_EQ(status, 400);
  EXPECT_EQ(j["error"]["code"], "INVALID_REQUEST");

  j = Call("POST", "/v1/allocations",
           R"({"workflow_id": "w", "priority": "urgent-ish"})", &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("priority"),
            std::string::npos)
      << j.dump();

  j = Call("POST", "/v1/allocations", R"({"workflow_id": "w", "wait": -1})",
           &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("wait"),
            std::string::npos);

  std::string deep = R"({"workflow_id": "w", "metadata": )";
  for (int i = 0; i < 70; ++i) deep += "[";
  for (int i = 0; i < 70; ++i) deep += "]";
  deep += "}";
  j = Call("POST", "/v1/allocations", deep, &status);
  EXPECT_EQ(status, 400);
  EXPECT_NE(j["error"]["message"].get<std::string>().find("nested"),
            std::string::npos);

  j = Call("GET", "/v1/allocations/alloc_999", "", &status);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(j["error"]["code"], "NOT_FOUND");

  j = Call("GET", "/v1/nothing-here", "", &status);
  EXPECT_EQ(status, 404);

  j = Call("DELETE", "/v1/allocations", "", &status);
  EXPECT_EQ(status, 405);

  j = Call("GET", "/v1/allocations?status=sleeping", "", &status);
  EXPECT_EQ(status, 400);

  // None of that changed anything.
  Json s = Call("GET", "/v1/status");
  EXPECT_EQ(s["result"]["resources"]["agents"]["allocated"], 0.0);

  // A body over 1 MiB is refused before it is parsed.
  std::string big = R"({"workflow_id": "w", "metadata": ")" +
                    std::string(size_t{1} << 20, 'x') + "\"}";
  j = Call("POST", "/v1/allocations", big, &status);
  EXPECT_EQ(status, 413);
  EXPECT_EQ(j["status"], "error");
}

// A waiting allocate is answered by the release that frees its slot:
// pushed, not polled.
TEST_F(ServerTest, WaitingAllocateIsHandedTheReleasedSlot) {
  Start();
  const std::string first =
      Allocate("backend-engineer")["result"]["allocation_id"];
  Allocate("backend-engineer");
  std::atomic<bool> answered{false};
  Json waited;
  std::thread waiter([&] {
    waited = Allocate("backend-engineer", R"(, "wait": 20)");
    answered = true;
  });
  // The waiter is queued and holds its request open.
  for (int i = 0; i < 200; ++i) {
    Json q = Call("GET", "/v1/queue");
    if (q["result"]["queued"] == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(answered);
  const auto released = std::chrono::steady_clock::now();
  Call("POST", "/v1/allocations/" + first + "/release");
  waiter.join();
  const auto took = std::chrono::steady_clock::now() - released;
  EXPECT_EQ(waited["status"], "success");
  EXPECT_EQ(waited["result"]["status"], "active");
  EXPECT_LT(took, std::chrono::seconds(2));
}

// When the wait ends first, the answer is the queued allocation with its
// position; waiting again on its id picks up the grant.
TEST_F(ServerTest, WaitEndsQueuedThenWaitingAgainOnTheId) {
  Start();
  const std::string first =
      Allocate("backend-engineer")["result"]["allocation_id"];
  Allocate("backend-engineer");
  const auto t0 = std::chrono::steady_clock::now();
  Json q = Allocate("backend-engineer", R"(, "wait": 0.3)");
  EXPECT_GE(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(250));
  ASSERT_EQ(q["status"], "success") << q.dump();
  EXPECT_EQ(q["result"]["status"], "queued");
  EXPECT_EQ(q["result"]["queue_position"], 1);
  EXPECT_FALSE(q["recommendations"].empty());
  const std::string id = q["result"]["allocation_id"];

  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    Call("POST", "/v1/allocations/" + first + "/release");
  });
  Json g = Call("GET", "/v1/allocations/" + id + "?wait=20");
  releaser.join();
  EXPECT_EQ(g["result"]["status"], "active");
}

// A request that queues with "wait": 0 is answered at once with its
// place in the queue, while other changes go on committing: the answer's
// queue lookup must not run on the journal's writer thread (a read there
// waits for commits only that thread makes, and the server would stop).
TEST_F(ServerTest, QueuedAnswersWithTheirPositionUnderConcurrentLoad) {
  Start();
  // backend-engineer allows 2: both taken, every request below queues.
  Allocate("backend-engineer");
  Allocate("backend-engineer");
  constexpr int kThreads = 8, kEach = 15;
  std::atomic<int> queued{0}, positioned{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      HttpClient c = Client();
      for (int i = 0; i < kEach; ++i) {
        auto r = c.Call("POST", "/v1/allocations",
                        R"({"workflow_id": "w", "product": "analytics",)"
                        R"( "agent_type": "backend-engineer", "wait": 0})",
                        std::chrono::seconds(20));
        if (!r.ok()) {
          ++failed;
          return;
        }
        Json j = Json::parse(r->body, nullptr, false);
        if (j.is_discarded() || j["status"] != "success") {
          ++failed;
          continue;
        }
        queued += j["result"]["status"] == "queued";
        positioned += j["result"].contains("queue_position");
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(queued.load(), kThreads * kEach);
  EXPECT_EQ(positioned.load(), kThreads * kEach);
  // And the server still takes changes.
  EXPECT_EQ(Allocate("frontend-engineer")["status"], "success");
}

// Events arrive as Server-Sent Events with the engine's seq as id; a
// client reconnecting with Last-Event-ID gets what followed, once.
TEST_F(ServerTest, EventStreamResumesFromLastEventId) {
  Start();
  for (int i = 0; i < 3; ++i) Allocate("frontend-engineer");  // 2 + 1 queued
  std::vector<std::pair<std::string, std::string>> seen;      // id, event
  HttpClient c = Client();
  Status s = c.Stream(
      "/v1/events?after=0",
      [&](const std::string& id, const std::string& event,
          const std::string& data) {
        if (id.empty()) return true;
        Json j = Json::parse(data);
        EXPECT_EQ(std::to_string(j["seq"].get<uint64_t>()), id);
        seen.emplace_back(id, event);
        return seen.size() < 3;
      },
      std::chrono::seconds(10));
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].second, "granted");
  EXPECT_EQ(seen[2].second, "queued");

  // More happens while the client is away.
  Allocate("backend-engineer");
  std::vector<std::string> resumed;
  Status s2 = c.Stream(
      "/v1/events",
      [&](const std::string& id, const std::string& event, const std::string&) {
        if (id.empty()) return true;
        resumed.push_back(id + ":" + event);
        return resumed.size() < 1;
      },
      std::chrono::seconds(10), {{"Last-Event-ID", seen.back().first}});
  ASSERT_TRUE(s2.ok()) << s2.ToString();
  ASSERT_EQ(resumed.size(), 1u);
  EXPECT_EQ(resumed[0],
            std::to_string(std::stoull(seen.back().first) + 1) + ":granted");

  // Filters: only this product's releases.
  std::atomic<bool> got{false};
  std::thread follower([&] {
    HttpClient f = Client();
    (void)f.Stream(
        "/v1/events?types=released&product=analytics",
        [&](const std::string& id, const std::string& event,
            const std::string&) {
          if (id.empty()) return true;
          EXPECT_EQ(event, "released");
          got = true;
          return false;
        },
        std::chrono::seconds(10));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Json list = Call("GET", "/v1/allocations?status=active&limit=1");
  Call(
      "POST",
      "/v1/allocations/" +
          list["result"]["allocations"][0]["allocation_id"].get<std::string>() +
          "/release");
  follower.join();
  EXPECT_TRUE(got);
}

// Everything acknowledged survives a restart on the same state directory.
TEST_F(ServerTest, RestartKeepsWhatWasAcknowledged) {
  Start();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(Allocate("backend-engineer")["result"]["allocation_id"]);
  }
  Call("POST", "/v1/allocations/" + ids[0] + "/release");
  ASSERT_TRUE(app_->Stop(std::chrono::seconds(5)).ok());
  app_.reset();
  Start();
  EXPECT_EQ(Call("GET", "/v1/allocations/" + ids[0])["result"]["status"],
            "released");
  EXPECT_EQ(Call("GET", "/v1/allocations/" + ids[1])["result"]["status"],
            "active");
  // The queued one was granted by the release, before the restart.
  EXPECT_EQ(Call("GET", "/v1/allocations/" + ids[2])["result"]["status"],
            "active");
}

TEST_F(ServerTest, MetricsHealthAndReadiness) {
  Start();
  Allocate("backend-engineer");
  HttpClient c = Client();
  auto m = c.Call("GET", "/metrics");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->status, 200);
  EXPECT_NE(m->body.find("qm_grants_total{level=\"normal\"} 1"),
            std::string::npos)
      << m->body.substr(0, 2000);
  EXPECT_NE(m->body.find("qm_http_requests_total{route=\"/v1/allocations\","
                         "method=\"POST\",code=\"200\"} 1"),
            std::string::npos);
  // Every commit is timed: at least the allocate's.
  const std::string count = "\nqm_journal_commit_duration_seconds_count ";
  const size_t at = m->body.find(count);
  ASSERT_NE(at, std::string::npos);
  EXPECT_GE(std::stod(m->body.substr(at + count.size())), 1.0);
  EXPECT_NE(m->body.find("qm_journal_commit_batch_size_bucket{le=\"1\"}"),
            std::string::npos);
  auto h = c.Call("GET", "/healthz");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->status, 200);
  auto r = c.Call("GET", "/readyz");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Json::parse(r->body)["role"], "leader");
}

TEST(ServerStartTest, RefusesANonLoopbackAddressWithoutTokens) {
  TempDir dir;
  ServeOptions o;
  o.http.listen = "0.0.0.0:0";
  o.durable.store.location = dir.path();
  auto app = App::Start(std::move(o));
  ASSERT_FALSE(app.ok());
  EXPECT_EQ(app.status().code(), Code::kInvalidRequest);
  EXPECT_NE(app.status().message().find("loopback"), std::string::npos);
}

}  // namespace
}  // namespace qm::server
