// Crash recovery on the SQLite store, the hard way: a driver process
// (crash_driver.cc) runs a durable engine under a random stream of
// operations and is killed with SIGKILL at a random moment, 50 times on the
// same state directory. After each kill the state is opened again, as the
// next start would, and checked against what the driver acknowledged:
//   - it opens (no damage), and the engine's invariants hold;
//   - every acknowledged allocation is there, once: no id and no fencing
//     token acknowledged in one round is handed out again in a later one;
//   - an acknowledged grant keeps its fencing token, an acknowledged
//     release or cancel stands;
//   - leases that ran out while the driver was dead are expired at start.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "qm/durable_engine.h"
#include "tests/store/crash_common.h"

namespace qm {
namespace {

constexpr int64_t kDayMs = 24LL * 3600 * 1000;

struct DriverRun {
  std::string out;  // the driver's stdout up to the kill
  int status = 0;   // waitpid status
};

// Starts the driver, kills it `kill_after` after it reported READY (or
// after a deadline), and returns what it printed.
DriverRun RunDriver(const std::string& dir, uint64_t seed, int64_t offset_ms,
                    std::chrono::milliseconds kill_after) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    const std::string seed_s = std::to_string(seed);
    const std::string off_s = std::to_string(offset_ms);
    execl(QM_CRASH_DRIVER, QM_CRASH_DRIVER, dir.c_str(), seed_s.c_str(),
          off_s.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  DriverRun run;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::optional<std::chrono::steady_clock::time_point> kill_at;
  char buf[65536];
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if ((kill_at && now >= *kill_at) || now >= deadline) break;
    timeval tv{0, 2000};
    fd_set set;
    FD_ZERO(&set);
    FD_SET(fds[0], &set);
    if (select(fds[0] + 1, &set, nullptr, nullptr, &tv) > 0) {
      const ssize_t n = read(fds[0], buf, sizeof buf);
      if (n <= 0) break;  // it exited
      run.out.append(buf, static_cast<size_t>(n));
      if (!kill_at && run.out.find("READY\n") != std::string::npos) {
        kill_at = now + kill_after;
      }
    }
  }
  kill(pid, SIGKILL);
  // What it wrote before dying is still in the pipe.
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    run.out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  waitpid(pid, &run.status, 0);
  return run;
}

TEST(CrashTest, FiftyKillsLoseNoAcknowledgedChange) {
  char tmpl[] = "/tmp/qm-crash-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  std::mt19937_64 rng(20261121);
  std::set<std::string> ids_seen;
  std::set<uint64_t> tokens_seen;
  uint64_t acked_total = 0, expired_at_start = 0;
  for (int round = 0; round < 50; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int64_t offset = round * 2 * kDayMs;
    const auto kill_after = std::chrono::milliseconds(
        std::uniform_int_distribution<int>(0, 300)(rng));
    DriverRun run = RunDriver(dir, round + 1, offset, kill_after);
    ASSERT_TRUE(WIFSIGNALED(run.status))
        << "the driver exited on its own: " << run.out.substr(0, 500);
    ASSERT_NE(run.out.find("READY\n"), std::string::npos)
        << "the driver did not open the state";

    // What it acknowledged (a line cut by the kill was not written whole,
    // so it was never printed: it is ignored).
    struct Ack {
      std::string status;
      uint64_t token = 0;
      bool requeue = false;  // a preemption puts it back in the queue
    };
    std::map<std::string, Ack> granted;
    std::set<std::string> released, cancelled;
    std::istringstream lines(run.out.substr(0, run.out.rfind('\n') + 1));
    for (std::string line; std::getline(lines, line);) {
      std::istringstream f(line);
      std::string kind, id;
      f >> kind >> id;
      if (kind == "G") {
        std::string status, requeue;
        uint64_t token = 0;
        f >> status >> token >> requeue;
        granted[id] = {status, token, requeue == "requeue"};
        ASSERT_TRUE(ids_seen.insert(id).second)
            << id << " was acknowledged in an earlier round: handed out twice";
        if (token != 0) {
          ASSERT_TRUE(tokens_seen.insert(token).second)
              << "fencing token " << token << " acknowledged twice";
        }
      } else if (kind == "R") {
        released.insert(id);
      } else if (kind == "C") {
        cancelled.insert(id);
      }
    }
    acked_total += granted.size();

    // The next start, a day later: every lease of the round has run out.
    crash::OffsetClock later(offset + kDayMs);
    DurableOptions options;
    options.store.location = dir;
    auto d = DurableEngine::Open(options, crash::DriverConfig(), &later);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_TRUE((*d)->CheckInvariants().ok());
    const Time restart = later.Now();
    for (const auto& [id, ack] : granted) {
      auto a = (*d)->Get(id);
      ASSERT_TRUE(a.ok()) << id << ": " << a.status().ToString();
      if (ack.status == "active") {
        // The grant stands with its token; one that a preemption put back
        // in the queue may have been granted again since, with a new one.
        if (ack.requeue) {
          EXPECT_GE(a->fencing_token, ack.token) << id;
        } else {
          EXPECT_EQ(a->fencing_token, ack.token) << id;
        }
      }
      if (released.count(id)) {
        // (Releasing a preempted allocation in its grace period ends it as
        // preempted.)
        EXPECT_TRUE(a->status == AllocStatus::kReleased ||
                    a->status == AllocStatus::kPreempted)
            << id << " " << AllocStatusName(a->status);
      } else if (cancelled.count(id)) {
        EXPECT_EQ(a->status, AllocStatus::kCancelled) << id;
      } else if (a->status == AllocStatus::kActive) {
        // Every lease granted before the crash ran out during the day of
        // downtime: only work that started then (as expiries freed room,
        // at their times) may still run.
        ASSERT_TRUE(a->granted_at.has_value());
        EXPECT_GE(*a->granted_at, restart - std::chrono::hours(2)) << id;
      } else if (a->status == AllocStatus::kExpired) {
        ++expired_at_start;
      }
    }
    ASSERT_TRUE((*d)->Close().ok());
  }
  std::filesystem::remove_all(dir);
  // The test exercised something: grants were acknowledged and leases ran
  // out during the downtime.
  EXPECT_GT(acked_total, 500u);
  EXPECT_GT(expired_at_start, 50u);
  RecordProperty("acknowledged_allocations", static_cast<int>(acked_total));
}

}  // namespace
}  // namespace qm
