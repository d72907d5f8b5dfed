// Time and duration text, and Status codes.
#include <gtest/gtest.h>

#include "qm/clock.h"
#include "qm/status.h"

namespace qm {
namespace {

using namespace std::chrono_literals;

TEST(DurationTest, ParsesAndFormatsTheSameForms) {
  const std::pair<const char*, Duration> cases[] = {
      {"30s", 30s},     {"5m", 5min}, {"2h", 2h},  {"1h30m", 90min},
      {"250ms", 250ms}, {"1d", 24h},  {"90", 90s}, {"0s", 0s}};
  for (const auto& [text, d] : cases) {
    Duration got{};
    ASSERT_TRUE(ParseDuration(text, &got)) << text;
    EXPECT_EQ(got, d) << text;
  }
  EXPECT_EQ(FormatDuration(90min), "1h30m");
  EXPECT_EQ(FormatDuration(Duration(1500)), "1s500ms");
  Duration back{};
  ASSERT_TRUE(ParseDuration(FormatDuration(Duration(93784005)), &back));
  EXPECT_EQ(back, Duration(93784005));
}

TEST(DurationTest, RefusesMalformedOrHugeDurations) {
  Duration d{};
  for (const char* bad : {"", "m", "5x", "-5m", "1.5h", "30m1h", "30s30s",
                          "999999999999d", "1234567890123", "5 m"}) {
    EXPECT_FALSE(ParseDuration(bad, &d)) << bad;
  }
}

TEST(TimeTest, RoundTripsRfc3339Utc) {
  Time t{};
  ASSERT_TRUE(ParseTime("2026-01-26T14:30:00Z", &t));
  EXPECT_EQ(FormatTime(t), "2026-01-26T14:30:00Z");
  ASSERT_TRUE(ParseTime("2026-01-26T14:30:00.250+00:00", &t));
  EXPECT_EQ(FormatTime(t), "2026-01-26T14:30:00.250Z");
  EXPECT_FALSE(ParseTime("2026-02-30T00:00:00Z", &t));
  EXPECT_FALSE(ParseTime("2026-01-26 14:30:00", &t));
  EXPECT_FALSE(ParseTime("2026-01-26T14:30:00+02:00", &t));
}

TEST(StatusTest, CodesMapOneToOneToEnvelopeNames) {
  const char* names[] = {
      "OK",          "INVALID_REQUEST", "NOT_FOUND",    "RESOURCE_EXHAUSTED",
      "CONFLICT",    "BUDGET_EXCEEDED", "CIRCUIT_OPEN", "PERMISSION_DENIED",
      "UNAVAILABLE", "UNIMPLEMENTED",   "INTERNAL",     "DATA_LOSS"};
  for (int i = 0; i <= static_cast<int>(Code::kDataLoss); ++i) {
    const Code c = static_cast<Code>(i);
    EXPECT_EQ(CodeName(c), names[i]);
    Code back = Code::kOk;
    ASSERT_TRUE(CodeFromName(names[i], &back));
    EXPECT_EQ(back, c);
  }
  Code unused;
  EXPECT_FALSE(CodeFromName("NOPE", &unused));
  const Status s =
      ResourceExhausted("too big").WithDetails("8 > 3").AddAffected("memory");
  EXPECT_EQ(s.ToString(), "RESOURCE_EXHAUSTED: too big (8 > 3)");
  EXPECT_EQ(s.affected_resources(), std::vector<std::string>{"memory"});
  StatusOr<int> v = 3;
  EXPECT_TRUE(v.ok());
  StatusOr<int> e = NotFound("x");
  EXPECT_EQ(e.status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace qm
