// HolderWatch: allocations are reclaimed when the process holding them
// exits, and only then.
#include "server/holders.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Clock = std::chrono::steady_clock;

// Records reclaims; Wait blocks until `n` arrived or 5 s passed.
struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::pair<std::string, std::string>> got;
  HolderWatch::Reclaim Callback() {
    return [this](const std::string& id, const std::string& why) {
      std::lock_guard<std::mutex> lock(mu);
      got.emplace_back(id, why);
      cv.notify_all();
    };
  }
  bool Wait(size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(5),
                       [&] { return got.size() >= n; });
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu);
    return got.size();
  }
};

// A child that sleeps until killed.
pid_t Sleeper() {
  const pid_t pid = fork();
  if (pid == 0) {
    pause();
    _exit(0);
  }
  return pid;
}

HolderProcess HolderOf(pid_t pid) {
  HolderProcess h;
  h.pid = pid;
  auto start = ProcessStartTime(pid);
  EXPECT_TRUE(start.ok()) << start.status().ToString();
  h.start_time = start.ok() ? *start : 0;
  h.boot_id = BootId();
  return h;
}

// Watch's answer, false on error.
bool Watched(HolderWatch& w, const std::string& id, const HolderProcess& h) {
  auto r = w.Watch(id, h);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() && *r;
}

TEST(HoldersTest, AnExitedHolderIsReclaimedAtOnce) {
  Recorder rec;
  auto w = HolderWatch::Start(rec.Callback());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const pid_t child = Sleeper();
  ASSERT_TRUE(Watched(**w, "alloc_1", HolderOf(child)));
  ASSERT_TRUE(Watched(**w, "alloc_2", HolderOf(child)));
  EXPECT_EQ((*w)->size(), 2u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(rec.size(), 0u);  // alive: nothing
  const auto killed = Clock::now();
  kill(child, SIGKILL);
  ASSERT_TRUE(rec.Wait(2));
  const auto took = Clock::now() - killed;
  waitpid(child, nullptr, 0);
  EXPECT_LT(took, std::chrono::seconds(1))
      << std::chrono::duration_cast<std::chrono::microseconds>(took).count()
      << " us";
  EXPECT_EQ(rec.got[0].second,
            "holder process " + std::to_string(child) + " exited");
  EXPECT_EQ((*w)->size(), 0u);
}

TEST(HoldersTest, ForgottenAllocationsAreNotReclaimed) {
  Recorder rec;
  auto w = HolderWatch::Start(rec.Callback());
  ASSERT_TRUE(w.ok());
  const pid_t child = Sleeper();
  ASSERT_TRUE(Watched(**w, "alloc_1", HolderOf(child)));
  ASSERT_TRUE(Watched(**w, "alloc_2", HolderOf(child)));
  (*w)->Forget("alloc_1");
  kill(child, SIGKILL);
  ASSERT_TRUE(rec.Wait(1));
  waitpid(child, nullptr, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(rec.size(), 1u);
  EXPECT_EQ(rec.got[0].first, "alloc_2");
}

TEST(HoldersTest, GoneOrReusedPidsAreReclaimedAndOtherHostsIgnored) {
  Recorder rec;
  auto w = HolderWatch::Start(rec.Callback());
  ASSERT_TRUE(w.ok());
  // The pid is alive but started at another time: another process.
  HolderProcess reused = HolderOf(getpid());
  reused.start_time += 1;
  ASSERT_TRUE(Watched(**w, "alloc_1", reused));
  // Exited before the watch began.
  const pid_t child = Sleeper();
  const HolderProcess gone = HolderOf(child);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  ASSERT_TRUE(Watched(**w, "alloc_2", gone));
  ASSERT_TRUE(rec.Wait(2));
  EXPECT_NE(rec.got[0].second.find("had exited"), std::string::npos);
  // Another host: not watched.
  HolderProcess remote = HolderOf(getpid());
  remote.boot_id = "00000000-0000-0000-0000-000000000000";
  EXPECT_FALSE(Watched(**w, "alloc_3", remote));
  EXPECT_EQ((*w)->Watch("alloc_4", HolderProcess{}).status().code(),
            Code::kInvalidRequest);
}

TEST(HoldersTest, StartTimeIsReadPastACommandNameWithSpacesAndParens) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/proc/42");
  std::ofstream(dir.path() + "/proc/42/stat")
      << "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 "
         "0 987654 1000 10 18446744073709551615\n";
  auto start = ProcessStartTime(42, dir.path());
  ASSERT_TRUE(start.ok()) << start.status().ToString();
  EXPECT_EQ(*start, 987654u);
  EXPECT_EQ(ProcessStartTime(43, dir.path()).status().code(), Code::kNotFound);
  std::ofstream(dir.path() + "/proc/42/stat") << "42 (x) S 1 2\n";
  EXPECT_EQ(ProcessStartTime(42, dir.path()).status().code(), Code::kDataLoss);
}

}  // namespace
}  // namespace qm::server
