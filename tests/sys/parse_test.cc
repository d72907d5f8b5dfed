// Tests of the /proc and /sys parsers behind SystemProbe, on snippets.
#include "sys/parse.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace qm::sys::internal {
namespace {

const std::string kPath = "/r/proc/x";

TEST(ParseCpuListTest, CountsRangesAndSingleCpus) {
  EXPECT_EQ(*ParseCpuList("0\n", kPath), 1);
  EXPECT_EQ(*ParseCpuList("0-1\n", kPath), 2);
  EXPECT_EQ(*ParseCpuList("0-3,5,7-8\n", kPath), 7);
  EXPECT_EQ(*ParseCpuList("2-2", kPath), 1);
}

TEST(ParseCpuListTest, RefusesBadLists) {
  for (const char* bad :
       {"", "\n", "0-", "-3", "3-1", "0,,1", "a", "0-3x", "0-99999999"}) {
    StatusOr<int> n = ParseCpuList(bad, kPath);
    ASSERT_FALSE(n.ok()) << bad;
    EXPECT_EQ(n.status().code(), Code::kDataLoss);
    EXPECT_EQ(n.status().message().rfind(kPath + ": ", 0), 0u)
        << n.status().message();
  }
}

TEST(ParseStatTest, OldKernelsWithFourFields) {
  StatSample s;
  ASSERT_TRUE(
      ParseStat("cpu  10 20 30 40\ncpu0 10 20 30 40\nintr 5\n", kPath, &s)
          .ok());
  EXPECT_EQ(s.all.total, 100u);
  EXPECT_EQ(s.all.idle, 40u);
  ASSERT_EQ(s.cores.size(), 1u);
  EXPECT_EQ(s.cores[0].cpu, 0);
}

TEST(ParseStatTest, GuestTimeIsNotCountedTwice) {
  // guest (9th) and guest_nice (10th) are already inside user and nice.
  StatSample s;
  ASSERT_TRUE(ParseStat("cpu  1 2 3 4 5 6 7 8 1000 2000\n", kPath, &s).ok());
  EXPECT_EQ(s.all.total, 36u);
  EXPECT_EQ(s.all.idle, 9u);
  EXPECT_TRUE(s.cores.empty());
}

TEST(ParseStatTest, CpuNumbersNeedNotBeContiguous) {
  StatSample s;
  ASSERT_TRUE(
      ParseStat("cpu  2 0 0 2\ncpu0 1 0 0 1\ncpu5 1 0 0 1\n", kPath, &s).ok());
  ASSERT_EQ(s.cores.size(), 2u);
  EXPECT_EQ(s.cores[1].cpu, 5);
}

TEST(ParseStatTest, RefusesBadFiles) {
  for (const char* bad : {"", "intr 1 2\n", "cpu0 1 2 3 4\n", "cpu  1 2 3\n",
                          "cpu  1 2 x 4\n", "cpu  1 2 3 4\ncpu  1 2 3 4\n",
                          "cpu  1 2 3 4\ncpux 1 2 3 4\n", "cpu  1 2 3 -4\n"}) {
    StatSample s;
    const Status status = ParseStat(bad, kPath, &s);
    ASSERT_FALSE(status.ok()) << bad;
    EXPECT_EQ(status.code(), Code::kDataLoss);
    EXPECT_NE(status.message().find(kPath), std::string::npos);
    ASSERT_EQ(status.context().size(), 1u);
    EXPECT_EQ(status.context()[0].first, "file");
    EXPECT_EQ(status.context()[0].second, kPath);
  }
}

TEST(BusyShareTest, IdleAndIowaitAreNotBusy) {
  const CpuTimes before{0, 100, 400};
  EXPECT_EQ(BusyShare(before, {0, 175, 500}), 0.25);
  EXPECT_EQ(BusyShare(before, {0, 100, 500}), 1.0);
  EXPECT_EQ(BusyShare(before, {0, 200, 500}), 0.0);
}

TEST(BusyShareTest, NoTicksOrCountersGoingBackGiveNothing) {
  const CpuTimes before{0, 100, 400};
  EXPECT_EQ(BusyShare(before, before), std::nullopt);
  EXPECT_EQ(BusyShare(before, {0, 90, 300}), std::nullopt);
}

TEST(BusyShareTest, IowaitGoingBackIsClamped) {
  // Some kernels let iowait decrease: busy is then at most the interval.
  EXPECT_EQ(BusyShare({0, 100, 400}, {0, 90, 500}), 1.0);
}

TEST(ParseLoadavgTest, ReadsThreeAverages) {
  CpuInfo cpu;
  ASSERT_TRUE(ParseLoadavg("0.89 0.65 0.36 2/90 24133\n", kPath, &cpu).ok());
  EXPECT_EQ(cpu.load1, 0.89);
  EXPECT_EQ(cpu.load5, 0.65);
  EXPECT_EQ(cpu.load15, 0.36);
  EXPECT_FALSE(ParseLoadavg("0.89 0.65\n", kPath, &cpu).ok());
  EXPECT_FALSE(ParseLoadavg("0.89 abc 0.36 2/90 1\n", kPath, &cpu).ok());
  EXPECT_FALSE(ParseLoadavg("", kPath, &cpu).ok());
}

TEST(ParseMeminfoTest, NamesTheMissingOrBadField) {
  MemoryInfo m;
  Status s = ParseMeminfo("MemTotal: 4 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
                          kPath, &m);
  EXPECT_EQ(s.message(), kPath + ": no MemAvailable line");
  s = ParseMeminfo("MemTotal: 4 MB\n", kPath, &m);
  EXPECT_EQ(s.message(),
            kPath + ": MemTotal: expected \"<number> kB\", found \"4 MB\"");
  s = ParseMeminfo("MemTotal:\n", kPath, &m);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  s = ParseMeminfo("MemTotal: 18446744073709551615 kB\n", kPath, &m);
  EXPECT_EQ(s.code(), Code::kDataLoss);  // overflows bytes
}

TEST(ParsePressureTest, OldCpuFileHasNoFullLine) {
  Pressure p;
  ASSERT_TRUE(ParsePressure("some avg10=1.50 avg60=0.25 avg300=0.00 "
                            "total=12345\n",
                            kPath, &p)
                  .ok());
  EXPECT_TRUE(p.available);
  EXPECT_EQ(p.some.avg10, 1.5);
  EXPECT_EQ(p.some.avg60, 0.25);
  EXPECT_EQ(p.some.total_us, 12345u);
  EXPECT_FALSE(p.full.has_value());
}

TEST(ParsePressureTest, SkipsKeysOfLaterKernels) {
  Pressure p;
  ASSERT_TRUE(ParsePressure("some avg10=1 avg60=2 avg300=3 total=4 avg900=5\n"
                            "full avg10=0 avg60=0 avg300=0 total=0\n",
                            kPath, &p)
                  .ok());
  EXPECT_EQ(p.some.avg300, 3.0);
  ASSERT_TRUE(p.full.has_value());
}

TEST(ParsePressureTest, RefusesBadFiles) {
  for (const char* bad :
       {"full avg10=0 avg60=0 avg300=0 total=0\n",
        "some avg10=abc avg60=0 avg300=0 total=0\n",
        "some avg10=0 avg60=0 total=0\n", "some avg10 avg60=0 avg300=0\n",
        "partial avg10=0 avg60=0 avg300=0 total=0\n"}) {
    Pressure p;
    const Status s = ParsePressure(bad, kPath, &p);
    EXPECT_EQ(s.code(), Code::kDataLoss) << bad;
    EXPECT_FALSE(p.available);
  }
}

TEST(ParseSelfCgroupTest, FindsTheV2Line) {
  EXPECT_EQ(**ParseSelfCgroup("0::/\n", kPath), "/");
  EXPECT_EQ(**ParseSelfCgroup("12:pids:/x\n0::/user.slice/a.scope\n", kPath),
            "/user.slice/a.scope");
  // cgroup v1 only: no v2 path, not an error.
  EXPECT_FALSE(ParseSelfCgroup("3:memory:/user.slice\n", kPath)->has_value());
  EXPECT_FALSE(ParseSelfCgroup("", kPath)->has_value());
  EXPECT_EQ(ParseSelfCgroup("0::relative\n", kPath).status().code(),
            Code::kDataLoss);
}

TEST(ParseCpuMaxTest, QuotaOrMax) {
  StatusOr<CpuMax> max = ParseCpuMax("150000 100000\n", kPath);
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(max->quota_us, 150000u);
  EXPECT_EQ(max->period_us, 100000u);
  max = ParseCpuMax("max 100000\n", kPath);
  ASSERT_TRUE(max.ok());
  EXPECT_FALSE(max->quota_us.has_value());
  for (const char* bad : {"", "150000\n", "abc 100000\n", "100 0\n",
                          "100 100 100\n", "max max\n"}) {
    EXPECT_EQ(ParseCpuMax(bad, kPath).status().code(), Code::kDataLoss) << bad;
  }
}

TEST(ParseMemoryMaxTest, BytesOrMax) {
  EXPECT_EQ(**ParseMemoryMax("2147483648\n", kPath), 2147483648u);
  EXPECT_FALSE(ParseMemoryMax("max\n", kPath)->has_value());
  EXPECT_EQ(ParseMemoryMax("2G\n", kPath).status().message(),
            kPath + ": expected \"max\" or a number of bytes, found \"2G\"");
  EXPECT_EQ(*ParseSingleNumber("1288490188\n", kPath), 1288490188u);
  EXPECT_FALSE(ParseSingleNumber("", kPath).ok());
}

}  // namespace
}  // namespace qm::sys::internal
