// Tests of SystemProbe on the fixture trees under tests/sys/fixtures/ (see
// the README there), on temporary copies of them, and on the live machine.
#include "sys/system_probe.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/sys/sys_test_util.h"

namespace qm::sys {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kGiB = 1024 * 1024 * 1024;

SystemProbe FixtureProbe(const std::string& root) {
  ProbeOptions options;
  options.root = root;
  options.nvml_library = "";
  return SystemProbe(options);
}

// The message of a failed read, and a check that it names `path`.
void ExpectNamesFile(const Status& status, const std::string& path, Code code) {
  ASSERT_FALSE(status.ok()) << path;
  EXPECT_EQ(status.code(), code) << status.ToString();
  EXPECT_EQ(status.message().rfind(path + ": ", 0), 0u) << status.ToString();
  ASSERT_FALSE(status.context().empty());
  EXPECT_EQ(status.context()[0].first, "file");
  EXPECT_EQ(status.context()[0].second, path);
}

// This project's 2-core VM: hybrid cgroups (v2 line "0::/" without
// controllers, so no limit), PSI present.
TEST(SystemProbeTest, DebianVmFixture) {
  SystemProbe probe = FixtureProbe(FixturePath("debian12-vm"));
  StatusOr<SystemInfo> info = probe.Detect();
  ASSERT_TRUE(info.ok()) << info.status().ToString();

  EXPECT_TRUE(info->cgroup.available);
  EXPECT_EQ(info->cgroup.path, "/");

  const CpuInfo& cpu = info->cpu;
  EXPECT_EQ(cpu.online_cores, 2);
  EXPECT_FALSE(cpu.cgroup_quota_cores.has_value());
  EXPECT_EQ(cpu.effective_cores, 2.0);
  EXPECT_FALSE(cpu.utilisation.has_value());  // first sample
  EXPECT_TRUE(cpu.per_core.empty());
  EXPECT_EQ(cpu.load1, 9.79);
  EXPECT_EQ(cpu.load5, 3.27);
  EXPECT_EQ(cpu.load15, 1.56);

  const MemoryInfo& mem = info->memory;
  EXPECT_EQ(mem.total_bytes, 24684092 * kKiB);
  EXPECT_EQ(mem.available_bytes, 24174460 * kKiB);
  EXPECT_EQ(mem.swap_total_bytes, 0u);
  EXPECT_EQ(mem.swap_free_bytes, 0u);
  EXPECT_FALSE(mem.cgroup_limit_bytes.has_value());
  EXPECT_FALSE(mem.cgroup_current_bytes.has_value());
  EXPECT_EQ(mem.effective_total_bytes, mem.total_bytes);
  EXPECT_EQ(mem.effective_available_bytes, mem.available_bytes);

  const PressureInfo& psi = info->pressure;
  ASSERT_TRUE(psi.cpu.available);
  EXPECT_EQ(psi.cpu.some.avg10, 17.91);
  EXPECT_EQ(psi.cpu.some.avg60, 8.31);
  EXPECT_EQ(psi.cpu.some.avg300, 2.63);
  EXPECT_EQ(psi.cpu.some.total_us, 6807235708u);
  ASSERT_TRUE(psi.cpu.full.has_value());
  EXPECT_EQ(psi.cpu.full->avg10, 0.0);
  EXPECT_EQ(psi.cpu.full->total_us, 0u);
  ASSERT_TRUE(psi.io.available);
  EXPECT_EQ(psi.io.some.avg10, 1.55);
  EXPECT_EQ(psi.io.some.total_us, 262059194u);
  ASSERT_TRUE(psi.io.full.has_value());
  EXPECT_EQ(psi.io.full->avg10, 0.33);
  EXPECT_EQ(psi.io.full->avg60, 0.36);
  EXPECT_EQ(psi.io.full->avg300, 0.55);
  EXPECT_EQ(psi.io.full->total_us, 177064564u);
  ASSERT_TRUE(psi.memory.available);
  EXPECT_EQ(psi.memory.some.total_us, 0u);

  EXPECT_TRUE(info->disks.empty());
  EXPECT_TRUE(info->gpu.gpus.empty());
  EXPECT_EQ(info->gpu.note, "GPU detection is off");
}

TEST(SystemProbeTest, DebianVmUtilisationFromTwoSamples) {
  TempTree tree("debian12-vm");
  SystemProbe probe = FixtureProbe(tree.root());
  ASSERT_TRUE(probe.ReadCpu().ok());
  tree.Copy("/proc/stat.2", "/proc/stat");
  StatusOr<CpuInfo> cpu = probe.ReadCpu();
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  // Real samples one second apart: all cores 201 ticks, 9 idle.
  ASSERT_TRUE(cpu->utilisation.has_value());
  EXPECT_DOUBLE_EQ(*cpu->utilisation, 192.0 / 201.0);
  ASSERT_EQ(cpu->per_core.size(), 2u);
  EXPECT_EQ(cpu->per_core[0].cpu, 0);
  EXPECT_DOUBLE_EQ(cpu->per_core[0].utilisation, 96.0 / 100.0);
  EXPECT_EQ(cpu->per_core[1].cpu, 1);
  EXPECT_DOUBLE_EQ(cpu->per_core[1].utilisation, 96.0 / 101.0);

  // The same counters again: no tick passed, no utilisation.
  cpu = probe.ReadCpu();
  ASSERT_TRUE(cpu.ok());
  EXPECT_FALSE(cpu->utilisation.has_value());
  EXPECT_TRUE(cpu->per_core.empty());
}

TEST(SystemProbeTest, ContainerCgroupLimitsWin) {
  SystemProbe probe = FixtureProbe(FixturePath("container-cgroup-limited"));
  StatusOr<SystemInfo> info = probe.Detect();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_TRUE(info->cgroup.available);
  EXPECT_EQ(info->cgroup.path, "/");

  EXPECT_EQ(info->cpu.online_cores, 8);
  ASSERT_TRUE(info->cpu.cgroup_quota_cores.has_value());
  EXPECT_EQ(*info->cpu.cgroup_quota_cores, 1.5);
  EXPECT_EQ(info->cpu.effective_cores, 1.5);
  EXPECT_EQ(info->cpu.load1, 3.42);
  EXPECT_EQ(info->cpu.load5, 2.87);
  EXPECT_EQ(info->cpu.load15, 2.10);

  const MemoryInfo& mem = info->memory;
  EXPECT_EQ(mem.total_bytes, 16326432 * kKiB);
  EXPECT_EQ(mem.available_bytes, 9876544 * kKiB);
  EXPECT_EQ(mem.swap_total_bytes, 4194300 * kKiB);
  EXPECT_EQ(mem.swap_free_bytes, 4100092 * kKiB);
  EXPECT_EQ(mem.cgroup_limit_bytes, 2 * kGiB);
  EXPECT_EQ(mem.cgroup_current_bytes, 1288490188u);
  EXPECT_EQ(mem.effective_total_bytes, 2 * kGiB);
  EXPECT_EQ(mem.effective_available_bytes, 2 * kGiB - 1288490188u);

  ASSERT_TRUE(info->pressure.memory.available);
  EXPECT_EQ(info->pressure.memory.some.avg10, 12.5);
  EXPECT_EQ(info->pressure.memory.some.avg60, 8.75);
  EXPECT_EQ(info->pressure.memory.some.avg300, 4.2);
  EXPECT_EQ(info->pressure.memory.some.total_us, 55512345u);
  ASSERT_TRUE(info->pressure.memory.full.has_value());
  EXPECT_EQ(info->pressure.memory.full->avg10, 6.25);
  EXPECT_EQ(info->pressure.memory.full->total_us, 30123456u);
  EXPECT_EQ(info->pressure.cpu.some.avg10, 4.12);
  EXPECT_EQ(info->pressure.io.full->total_us, 3456789u);
}

TEST(SystemProbeTest, MemAvailableWinsWhenSmallerThanTheCgroupHeadroom) {
  TempTree tree("container-cgroup-limited");
  tree.Write("/sys/fs/cgroup/memory.max", "12884901888\n");  // 12 GiB
  tree.Write("/sys/fs/cgroup/memory.current", "1073741824\n");
  SystemProbe probe = FixtureProbe(tree.root());
  StatusOr<MemoryInfo> mem = probe.ReadMemory();
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  EXPECT_EQ(mem->cgroup_limit_bytes, 12 * kGiB);
  EXPECT_EQ(mem->effective_total_bytes, 12 * kGiB);           // < MemTotal
  EXPECT_EQ(mem->effective_available_bytes, 9876544 * kKiB);  // MemAvailable
}

TEST(SystemProbeTest, UsageOverTheLimitLeavesNothingAvailable) {
  TempTree tree("container-cgroup-limited");
  tree.Write("/sys/fs/cgroup/memory.current", "3000000000\n");
  SystemProbe probe = FixtureProbe(tree.root());
  StatusOr<MemoryInfo> mem = probe.ReadMemory();
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  EXPECT_EQ(mem->effective_available_bytes, 0u);
}

TEST(SystemProbeTest, CgroupWithoutLimits) {
  TempTree tree("container-cgroup-limited");
  tree.Write("/sys/fs/cgroup/cpu.max", "max 100000\n");
  tree.Write("/sys/fs/cgroup/memory.max", "max\n");
  SystemProbe probe = FixtureProbe(tree.root());
  StatusOr<SystemInfo> info = probe.Detect();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_TRUE(info->cgroup.available);
  EXPECT_FALSE(info->cpu.cgroup_quota_cores.has_value());
  EXPECT_EQ(info->cpu.effective_cores, 8.0);
  EXPECT_FALSE(info->memory.cgroup_limit_bytes.has_value());
  EXPECT_EQ(info->memory.effective_total_bytes, 16326432 * kKiB);
  EXPECT_EQ(info->memory.effective_available_bytes, 9876544 * kKiB);
}

TEST(SystemProbeTest, QuotaAboveTheOnlineCoresDoesNotRaiseThem) {
  TempTree tree("container-cgroup-limited");
  tree.Write("/sys/fs/cgroup/cpu.max", "1600000 100000\n");  // 16 cores
  SystemProbe probe = FixtureProbe(tree.root());
  StatusOr<CpuInfo> cpu = probe.ReadCpu();
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(cpu->cgroup_quota_cores, 16.0);
  EXPECT_EQ(cpu->effective_cores, 8.0);
}

// A service in a slice: the tightest level on the path applies.
TEST(SystemProbeTest, NestedCgroupTightestLevelWins) {
  TempTree tree("container-cgroup-limited");
  tree.Write("/proc/self/cgroup", "0::/system.slice/qm.service\n");
  tree.Write("/sys/fs/cgroup/system.slice/qm.service/cpu.max", "max 100000\n");
  tree.Write("/sys/fs/cgroup/system.slice/qm.service/memory.max", "max\n");
  tree.Write("/sys/fs/cgroup/system.slice/cpu.max", "50000 100000\n");
  tree.Write("/sys/fs/cgroup/system.slice/memory.max", "1073741824\n");
  tree.Write("/sys/fs/cgroup/system.slice/memory.current", "943718400\n");
  SystemProbe probe = FixtureProbe(tree.root());
  StatusOr<SystemInfo> info = probe.Detect();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->cgroup.path, "/system.slice/qm.service");
  EXPECT_EQ(info->cpu.cgroup_quota_cores, 0.5);
  EXPECT_EQ(info->cpu.effective_cores, 0.5);
  EXPECT_EQ(info->memory.cgroup_limit_bytes, kGiB);
  EXPECT_EQ(info->memory.cgroup_current_bytes, 943718400u);
  EXPECT_EQ(info->memory.effective_total_bytes, kGiB);
  // 1 GiB - 900 MiB = 124 MiB, below the root level's 2 GiB - 1.2 GiB.
  EXPECT_EQ(info->memory.effective_available_bytes, 124u * 1024 * 1024);

  // The root level's headroom is the smaller one now.
  tree.Write("/sys/fs/cgroup/memory.current", "2100000000\n");
  StatusOr<MemoryInfo> mem = probe.ReadMemory();
  ASSERT_TRUE(mem.ok());
  EXPECT_EQ(mem->cgroup_limit_bytes, kGiB);  // still the smallest limit
  EXPECT_EQ(mem->effective_available_bytes, 2 * kGiB - 2100000000u);
}

TEST(SystemProbeTest, ContainerUtilisationFromTwoSamples) {
  TempTree tree("container-cgroup-limited");
  SystemProbe probe = FixtureProbe(tree.root());
  ASSERT_TRUE(probe.ReadCpu().ok());
  tree.Copy("/proc/stat.2", "/proc/stat");
  StatusOr<CpuInfo> cpu = probe.ReadCpu();
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  ASSERT_TRUE(cpu->utilisation.has_value());
  EXPECT_DOUBLE_EQ(*cpu->utilisation, 360.0 / 800.0);
  const double expected[] = {0.25, 0.5, 0.75, 1.0, 0.1, 0.0, 0.4, 0.6};
  ASSERT_EQ(cpu->per_core.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(cpu->per_core[i].cpu, i);
    EXPECT_DOUBLE_EQ(cpu->per_core[i].utilisation, expected[i]) << "cpu" << i;
  }
}

TEST(SystemProbeTest, NoPsiFixture) {
  SystemProbe probe = FixtureProbe(FixturePath("no-psi-cgroup-v1"));
  StatusOr<SystemInfo> info = probe.Detect();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_FALSE(info->pressure.cpu.available);
  EXPECT_FALSE(info->pressure.memory.available);
  EXPECT_FALSE(info->pressure.io.available);
  // cgroup v1 only: no v2 path, so no limits read.
  EXPECT_FALSE(info->cgroup.available);
  EXPECT_EQ(info->cpu.online_cores, 4);
  EXPECT_FALSE(info->cpu.cgroup_quota_cores.has_value());
  EXPECT_EQ(info->cpu.effective_cores, 4.0);
  EXPECT_EQ(info->cpu.load1, 0.52);
  EXPECT_EQ(info->cpu.load5, 0.58);
  EXPECT_EQ(info->cpu.load15, 0.59);
  EXPECT_EQ(info->memory.total_bytes, 8152840 * kKiB);
  EXPECT_EQ(info->memory.available_bytes, 5214876 * kKiB);
  EXPECT_EQ(info->memory.swap_total_bytes, 2097148 * kKiB);
  EXPECT_EQ(info->memory.swap_free_bytes, 1874300 * kKiB);
  EXPECT_FALSE(info->memory.cgroup_limit_bytes.has_value());
  EXPECT_EQ(info->memory.effective_available_bytes, 5214876 * kKiB);
}

TEST(SystemProbeTest, NoPsiUtilisationFromTwoSamples) {
  TempTree tree("no-psi-cgroup-v1");
  SystemProbe probe = FixtureProbe(tree.root());
  ASSERT_TRUE(probe.ReadCpu().ok());
  tree.Copy("/proc/stat.2", "/proc/stat");
  StatusOr<CpuInfo> cpu = probe.ReadCpu();
  ASSERT_TRUE(cpu.ok());
  EXPECT_DOUBLE_EQ(*cpu->utilisation, 700.0 / 1600.0);
  const double expected[] = {0.25, 0.5, 0.0, 1.0};  // cpu1: iowait is idle
  ASSERT_EQ(cpu->per_core.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_DOUBLE_EQ(cpu->per_core[i].utilisation, expected[i]) << "cpu" << i;
  }
}

TEST(SystemProbeTest, OfflineCoreIsLeftOutOfPerCore) {
  TempTree tree;
  tree.Write("/sys/devices/system/cpu/online", "0-2\n");
  tree.Write("/proc/loadavg", "0.00 0.00 0.00 1/1 1\n");
  tree.Write("/proc/stat",
             "cpu  300 0 0 300\ncpu0 100 0 0 100\ncpu1 100 0 0 100\n"
             "cpu2 100 0 0 100\n");
  SystemProbe probe = FixtureProbe(tree.root());
  ASSERT_TRUE(probe.ReadCpu().ok());
  // cpu1 went offline: cpu2 moves up a place and is still matched.
  tree.Write("/sys/devices/system/cpu/online", "0,2\n");
  tree.Write("/proc/stat",
             "cpu  450 0 0 350\ncpu0 150 0 0 150\ncpu2 200 0 0 100\n");
  StatusOr<CpuInfo> cpu = probe.ReadCpu();
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->online_cores, 2);
  EXPECT_DOUBLE_EQ(*cpu->utilisation, 150.0 / 200.0);
  ASSERT_EQ(cpu->per_core.size(), 2u);
  EXPECT_EQ(cpu->per_core[0].cpu, 0);
  EXPECT_DOUBLE_EQ(cpu->per_core[0].utilisation, 0.5);
  EXPECT_EQ(cpu->per_core[1].cpu, 2);
  EXPECT_DOUBLE_EQ(cpu->per_core[1].utilisation, 1.0);
}

TEST(SystemProbeTest, AFailedReadKeepsThePreviousSample) {
  TempTree tree("container-cgroup-limited");
  SystemProbe probe = FixtureProbe(tree.root());
  ASSERT_TRUE(probe.ReadCpu().ok());
  tree.Write("/proc/loadavg", "garbage\n");
  tree.Copy("/proc/stat.2", "/proc/stat");
  EXPECT_FALSE(probe.ReadCpu().ok());
  tree.Write("/proc/loadavg", "1.00 1.00 1.00 1/1 1\n");
  StatusOr<CpuInfo> cpu = probe.ReadCpu();
  ASSERT_TRUE(cpu.ok());
  EXPECT_DOUBLE_EQ(*cpu->utilisation, 360.0 / 800.0);
}

TEST(SystemProbeTest, PsiMissingEmptyOrPartial) {
  TempTree tree("debian12-vm");
  tree.Remove("/proc/pressure/io");
  tree.Write("/proc/pressure/memory", "");  // masked with /dev/null
  tree.Write("/proc/pressure/cpu",
             "some avg10=0.50 avg60=0.25 avg300=0.00 total=99\n");  // < 5.13
  SystemProbe probe = FixtureProbe(tree.root());
  StatusOr<PressureInfo> psi = probe.ReadPressure();
  ASSERT_TRUE(psi.ok()) << psi.status().ToString();
  EXPECT_FALSE(psi->io.available);
  EXPECT_FALSE(psi->memory.available);
  ASSERT_TRUE(psi->cpu.available);
  EXPECT_EQ(psi->cpu.some.avg10, 0.5);
  EXPECT_FALSE(psi->cpu.full.has_value());
}

TEST(SystemProbeTest, RootMayEndInASlash) {
  SystemProbe probe = FixtureProbe(FixturePath("no-psi-cgroup-v1") + "/");
  StatusOr<CpuInfo> cpu = probe.ReadCpu();
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->online_cores, 4);
}

struct BadFile {
  const char* file;
  const char* text;  // nullptr: remove the file
  Code code;
};

class MalformedFileTest : public testing::TestWithParam<BadFile> {};

TEST_P(MalformedFileTest, DetectNamesTheFile) {
  const BadFile& bad = GetParam();
  TempTree tree("container-cgroup-limited");
  if (bad.text == nullptr) {
    tree.Remove(bad.file);
  } else {
    tree.Write(bad.file, bad.text);
  }
  SystemProbe probe = FixtureProbe(tree.root());
  StatusOr<SystemInfo> info = probe.Detect();
  ExpectNamesFile(info.status(), tree.Path(bad.file), bad.code);
}

INSTANTIATE_TEST_SUITE_P(
    SystemProbe, MalformedFileTest,
    testing::Values(
        BadFile{"/proc/stat", "", Code::kDataLoss},
        BadFile{"/proc/stat", "cpu  1 2 three 4\n", Code::kDataLoss},
        BadFile{"/proc/stat", nullptr, Code::kNotFound},
        BadFile{"/proc/meminfo", "MemTotal: 1 kB\n", Code::kDataLoss},
        BadFile{"/proc/meminfo", "MemTotal: lots kB\n", Code::kDataLoss},
        BadFile{"/proc/meminfo", nullptr, Code::kNotFound},
        BadFile{"/proc/loadavg", "0.5 x 0.5\n", Code::kDataLoss},
        BadFile{"/proc/loadavg", nullptr, Code::kNotFound},
        // Only the live machine falls back to sysconf.
        BadFile{"/sys/devices/system/cpu/online", nullptr, Code::kNotFound},
        BadFile{"/sys/devices/system/cpu/online", "0-\n", Code::kDataLoss},
        BadFile{"/proc/pressure/cpu", "some avg10=x\n", Code::kDataLoss},
        BadFile{"/proc/pressure/io", "half avg10=0\n", Code::kDataLoss},
        BadFile{"/proc/self/cgroup", "0::not-a-path\n", Code::kDataLoss},
        BadFile{"/sys/fs/cgroup/cpu.max", "150000\n", Code::kDataLoss},
        BadFile{"/sys/fs/cgroup/memory.max", "2G\n", Code::kDataLoss},
        BadFile{"/sys/fs/cgroup/memory.current", "-1\n", Code::kDataLoss},
        // A limit needs the usage next to it.
        BadFile{"/sys/fs/cgroup/memory.current", nullptr, Code::kNotFound}));

TEST(SystemProbeTest, OptionalFilesMissingAreNotErrors) {
  TempTree tree("container-cgroup-limited");
  tree.Remove("/sys/fs/cgroup/cpu.max");
  tree.Remove("/sys/fs/cgroup/memory.max");
  tree.Remove("/proc/self/cgroup");
  SystemProbe probe = FixtureProbe(tree.root());
  StatusOr<SystemInfo> info = probe.Detect();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_FALSE(info->cgroup.available);
  EXPECT_FALSE(info->cpu.cgroup_quota_cores.has_value());
  EXPECT_FALSE(info->memory.cgroup_limit_bytes.has_value());
}

TEST(SystemProbeTest, EmptyRootFailsOnTheFirstRequiredFile) {
  TempTree tree;
  SystemProbe probe = FixtureProbe(tree.root());
  ExpectNamesFile(probe.Detect().status(),
                  tree.Path("/sys/devices/system/cpu/online"), Code::kNotFound);
  ExpectNamesFile(probe.ReadMemory().status(), tree.Path("/proc/meminfo"),
                  Code::kNotFound);
  // Nothing optional is an error.
  StatusOr<PressureInfo> psi = probe.ReadPressure();
  ASSERT_TRUE(psi.ok());
  EXPECT_FALSE(psi->cpu.available);
  StatusOr<CgroupInfo> cgroup = probe.ReadCgroup();
  ASSERT_TRUE(cgroup.ok());
  EXPECT_FALSE(cgroup->available);
}

TEST(SystemProbeTest, DiskOfATempDir) {
  TempTree tree;
  StatusOr<DiskInfo> disk = ReadDisk(tree.root());
  ASSERT_TRUE(disk.ok()) << disk.status().ToString();
  EXPECT_EQ(disk->path, tree.root());
  EXPECT_GT(disk->total_bytes, 0u);
  EXPECT_LE(disk->free_bytes, disk->total_bytes);
  EXPECT_LE(disk->available_bytes, disk->free_bytes);
  // The same file system as seen by std::filesystem.
  const std::filesystem::space_info space = std::filesystem::space(tree.root());
  EXPECT_EQ(disk->total_bytes, space.capacity);

  const std::string missing = tree.Path("/no/such/dir");
  ExpectNamesFile(ReadDisk(missing).status(), missing, Code::kNotFound);

  SystemProbe probe = FixtureProbe(FixturePath("no-psi-cgroup-v1"));
  StatusOr<SystemInfo> info = probe.Detect({tree.root(), "/"});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  ASSERT_EQ(info->disks.size(), 2u);
  EXPECT_EQ(info->disks[0].path, tree.root());
  EXPECT_EQ(info->disks[1].path, "/");
  ExpectNamesFile(probe.Detect({tree.root(), missing}).status(), missing,
                  Code::kNotFound);
}

TEST(SystemProbeTest, NvmlAbsentMeansNoGpus) {
  ProbeOptions options;
  options.root = FixturePath("debian12-vm");
  options.nvml_library = "libqm-no-such-nvml.so.1";
  SystemProbe probe(options);
  StatusOr<SystemInfo> info = probe.Detect();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_TRUE(info->gpu.gpus.empty());
  EXPECT_NE(info->gpu.note.find("libqm-no-such-nvml.so.1"), std::string::npos)
      << info->gpu.note;
  // Not retried, the same answer.
  const GpuReport again = probe.ReadGpus();
  EXPECT_TRUE(again.gpus.empty());
  EXPECT_EQ(again.note, info->gpu.note);
}

TEST(SystemProbeTest, LibraryWithoutNvmlFunctions) {
  ProbeOptions options;
  options.nvml_library = "libm.so.6";
  SystemProbe probe(options);
  const GpuReport report = probe.ReadGpus();
  EXPECT_TRUE(report.gpus.empty());
  EXPECT_EQ(report.note, "libm.so.6: no function nvmlInit_v2");
}

TEST(SystemProbeTest, GpusThroughAStandInNvml) {
  // Hold the library so its counter survives the probe's dlclose.
  void* held = dlopen(QM_FAKE_NVML, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(held, nullptr) << dlerror();
  auto initialised =
      reinterpret_cast<int (*)()>(dlsym(held, "qm_fake_nvml_initialised"));
  ASSERT_NE(initialised, nullptr);
  {
    ProbeOptions options;
    options.nvml_library = QM_FAKE_NVML;
    SystemProbe probe(options);
    const GpuReport report = probe.ReadGpus();
    EXPECT_EQ(report.note, "");
    ASSERT_EQ(report.gpus.size(), 2u);
    const GpuInfo& a = report.gpus[0];
    EXPECT_EQ(a.index, 0);
    EXPECT_EQ(a.name, "Fake GPU A100");
    EXPECT_EQ(a.memory_total_bytes, 80 * kGiB);
    EXPECT_EQ(a.memory_used_bytes, 20 * kGiB);
    EXPECT_EQ(a.memory_free_bytes, 60 * kGiB);
    EXPECT_EQ(a.utilisation_percent, 37);
    EXPECT_EQ(a.memory_utilisation_percent, 12);
    const GpuInfo& t = report.gpus[1];
    EXPECT_EQ(t.index, 1);
    EXPECT_EQ(t.name, "Fake GPU T4");
    EXPECT_EQ(t.memory_total_bytes, 15 * kGiB);
    EXPECT_FALSE(t.utilisation_percent.has_value());
    EXPECT_FALSE(t.memory_utilisation_percent.has_value());
    EXPECT_EQ(probe.ReadGpus().gpus.size(), 2u);
    EXPECT_EQ(initialised(), 1);  // initialised once, kept
  }
  EXPECT_EQ(initialised(), 0);  // nvmlShutdown at the probe's end
  dlclose(held);
}

// The live machine: whatever it is, the figures must be sane.
TEST(SystemProbeTest, LiveMachine) {
  SystemProbe probe;
  StatusOr<SystemInfo> info = probe.Detect({"/"});
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_GE(info->cpu.online_cores, 1);
  EXPECT_GT(info->cpu.effective_cores, 0.0);
  EXPECT_LE(info->cpu.effective_cores, info->cpu.online_cores);
  EXPECT_GE(info->cpu.load1, 0.0);
  EXPECT_GT(info->memory.total_bytes, 0u);
  EXPECT_LE(info->memory.available_bytes, info->memory.total_bytes);
  EXPECT_LE(info->memory.effective_total_bytes, info->memory.total_bytes);
  EXPECT_LE(info->memory.effective_available_bytes,
            info->memory.available_bytes);
  EXPECT_EQ(info->pressure.cpu.available,
            std::filesystem::exists("/proc/pressure/cpu"));
  ASSERT_EQ(info->disks.size(), 1u);
  EXPECT_GT(info->disks[0].total_bytes, 0u);

  // A second sample some ticks later has utilisation in [0, 1].
  StatusOr<CpuInfo> cpu = probe.ReadCpu();
  for (int i = 0; i < 100 && cpu.ok() && !cpu->utilisation.has_value(); ++i) {
    volatile uint64_t spin = 0;
    for (int j = 0; j < 1000000; ++j) spin = spin + j;
    cpu = probe.ReadCpu();
  }
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  ASSERT_TRUE(cpu->utilisation.has_value());
  EXPECT_GE(*cpu->utilisation, 0.0);
  EXPECT_LE(*cpu->utilisation, 1.0);
  for (const CoreUsage& core : cpu->per_core) {
    EXPECT_GE(core.utilisation, 0.0);
    EXPECT_LE(core.utilisation, 1.0);
  }
}

}  // namespace
}  // namespace qm::sys
