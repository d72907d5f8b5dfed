// The machine's capacities as the config's defaults (server.detect).
#include "server/capacity.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "qm/config_loader.h"
#include "server/app.h"
#include "server/server_config.h"
#include "tests/server/test_util.h"

namespace qm::server {
namespace {

std::string Fixture(const std::string& name) {
  return std::string(QM_SOURCE_DIR) + "/tests/sys/fixtures/" + name;
}

double Capacity(const Config& c, const std::string& name) {
  const ResourceSpec* r = c.FindResource(name);
  return r ? r->capacity : -1;
}

TEST(CapacityTest, ACgroupLimitedContainerMinusBuffers) {
  DetectConfig d;
  d.memory_gb_buffer = 0.5;
  d.cpu_cores_buffer = 0.25;
  CapacityDetector detector(d, "", Fixture("container-cgroup-limited"));
  auto got = detector.Detect();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  // cpu.max 150000/100000 = 1.5 cores of 8, minus 0.25, down to 0.1.
  ASSERT_TRUE(got->cpu_cores.has_value());
  EXPECT_DOUBLE_EQ(*got->cpu_cores, 1.2);
  // memory.max 2 GiB (under MemTotal's 15.6 GiB), minus 0.5.
  ASSERT_TRUE(got->memory_gb.has_value());
  EXPECT_DOUBLE_EQ(*got->memory_gb, 1.5);
  EXPECT_FALSE(got->storage_gb.has_value());  // no path given
  EXPECT_NE(got->summary.find("cgroup"), std::string::npos) << got->summary;
  // A buffer larger than the machine leaves 0, not a negative capacity.
  d.memory_gb_buffer = 64;
  CapacityDetector big(d, "", Fixture("container-cgroup-limited"));
  EXPECT_DOUBLE_EQ(*big.Detect()->memory_gb, 0);
}

TEST(CapacityTest, ResourcesTheFileSetsAreNotReplaced) {
  DetectedCapacities d;
  d.cpu_cores = 2;
  d.memory_gb = 21.5;
  d.storage_gb = 100;
  Config c = WithDetected(Config::Defaults(), d, {"memory_gb"});
  EXPECT_EQ(Capacity(c, "cpu_cores"), 2);
  EXPECT_EQ(Capacity(c, "memory_gb"), 16);  // the file's (here: default)
  EXPECT_EQ(Capacity(c, "storage_gb"), 100);
  EXPECT_EQ(Capacity(c, "agents"), 5);
}

TEST(CapacityTest, TheServerSectionSaysWhatIsFixedAndTheBuffers) {
  auto sc = LoadServerConfigString(
      "resources:\n  cpu_cores: 3\n  tool.web: 4\n"
      "server:\n  detect:\n    interval: 5s\n"
      "    buffers: {memory_gb: 1.5}\n",
      "test.yml");
  ASSERT_TRUE(sc.ok()) << sc.status().ToString();
  EXPECT_EQ(sc->fixed_resources, std::vector<std::string>{"cpu_cores"});
  EXPECT_TRUE(sc->detect.enabled);
  EXPECT_EQ(sc->detect.interval, std::chrono::seconds(5));
  EXPECT_EQ(sc->detect.memory_gb_buffer, 1.5);
  for (const char* bad : {"server:\n  detect:\n    interval: 10ms\n",
                          "server:\n  detect:\n    buffers: {memory_gb: -1}\n",
                          "server:\n  detect:\n    buffers: {gpus: 1}\n",
                          "server:\n  detect:\n    enabled: maybe\n"}) {
    auto r = LoadServerConfigString(bad, "test.yml");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
    EXPECT_NE(r.status().message().find("server.detect"), std::string::npos)
        << r.status().message();
  }
}

// A server without the capacities in its file runs with the machine's;
// one the file sets stays.
TEST(CapacityTest, TheServerRunsWithTheMachinesCapacities) {
  testing::TempDir dir;
  ServeOptions o;
  o.http.listen = "127.0.0.1:0";
  o.service.workers = 4;
  o.durable.store.location = dir.path();
  auto c = LoadConfigString("resources:\n  cpu_cores: 3\n", "test");
  ASSERT_TRUE(c.ok());
  o.config = *c;
  o.service.auth.fixed_resources = {"cpu_cores"};
  auto app = App::Start(std::move(o));
  ASSERT_TRUE(app.ok()) << app.status().ToString();
  CapacityDetector same(DetectConfig{}, dir.path());
  auto machine = same.Detect();
  ASSERT_TRUE(machine.ok());
  const Config running = (*app)->engine().config();
  EXPECT_EQ(Capacity(running, "cpu_cores"), 3);
  EXPECT_EQ(Capacity(running, "memory_gb"), *machine->memory_gb);
  EXPECT_EQ(Capacity(running, "storage_gb"), *machine->storage_gb);
  EXPECT_NE((*app)->DetectedSummary().find("memory_gb"), std::string::npos);
}

// The machine changes while the server runs (here: the container's CPU
// quota is raised): the capacity follows, as a config reload.
TEST(CapacityTest, TheCapacityFollowsTheMachine) {
  testing::TempDir dir;
  const std::string root = dir.path() + "/root";
  std::filesystem::copy(Fixture("container-cgroup-limited"), root,
                        std::filesystem::copy_options::recursive);
  ServeOptions o;
  o.http.listen = "127.0.0.1:0";
  o.service.workers = 4;
  o.durable.store.location = dir.path() + "/state";
  o.service.auth.detect.root = root;
  o.service.auth.detect.interval = std::chrono::seconds(1);
  auto app = App::Start(std::move(o));
  ASSERT_TRUE(app.ok()) << app.status().ToString();
  EXPECT_EQ(Capacity((*app)->engine().config(), "cpu_cores"), 1.5);
  std::ofstream(root + "/sys/fs/cgroup/cpu.max") << "300000 100000\n";
  double cpu = 0;
  for (int i = 0; i < 100 && cpu != 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cpu = Capacity((*app)->engine().config(), "cpu_cores");
  }
  EXPECT_EQ(cpu, 3);
  ASSERT_TRUE((*app)->Stop(std::chrono::seconds(5)).ok());
}

}  // namespace
}  // namespace qm::server
