// Tests of the text helpers behind "did you mean" and number output.
#include "core/text.h"

#include <gtest/gtest.h>

#include <charconv>
#include <string>
#include <vector>

namespace qm {
namespace {

TEST(EditDistanceTest, CountsEditsIgnoringCase) {
  EXPECT_EQ(EditDistance("", ""), 0u);
  EXPECT_EQ(EditDistance("abc", ""), 3u);
  EXPECT_EQ(EditDistance("max_concurent", "max_concurrent"), 1u);
  EXPECT_EQ(EditDistance("Resources", "resources"), 0u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  // A swap of two neighbours is one edit.
  EXPECT_EQ(EditDistance("wieght", "weight"), 1u);
  EXPECT_EQ(EditDistance("hgih", "high"), 1u);
}

TEST(ClosestMatchTest, SuggestsPlausibleTypos) {
  const std::vector<std::string> keys = {"resources", "max_concurrent",
                                         "products", "scheduling"};
  EXPECT_EQ(ClosestMatch("max_concurent", keys), "max_concurrent");
  EXPECT_EQ(ClosestMatch("prodcuts", keys), "products");
  EXPECT_EQ(ClosestMatch("sceduling", keys), "scheduling");
  EXPECT_EQ(ClosestMatch("budget", keys), "");
}

TEST(ClosestMatchTest, ShortWordsNeedAnAlmostExactMatch) {
  const std::vector<std::string> levels = {"critical", "high", "normal", "low"};
  EXPECT_EQ(ClosestMatch("hihg", levels), "high");
  EXPECT_EQ(ClosestMatch("lo", levels), "low");
  EXPECT_EQ(ClosestMatch("foo", levels), "");  // 2 edits from "low"
}

TEST(ClosestMatchTest, ShortenedMultiWordNames) {
  const std::vector<std::string> keys = {"priority", "max_concurrent_agents",
                                         "token_budget_daily", "share"};
  EXPECT_EQ(ClosestMatch("max_agents", keys), "max_concurrent_agents");
  EXPECT_EQ(ClosestMatch("daily_budget", keys), "token_budget_daily");
  EXPECT_EQ(ClosestMatch("max_tokens", keys), "");
}

TEST(FormatNumberTest, ShortestTextThatReadsBack) {
  EXPECT_EQ(FormatNumber(0), "0");
  EXPECT_EQ(FormatNumber(150000), "150000");
  EXPECT_EQ(FormatNumber(1.5), "1.5");
  EXPECT_EQ(FormatNumber(0.25), "0.25");
  EXPECT_EQ(FormatNumber(-2), "-2");
  EXPECT_EQ(FormatNumber(1e12), "1000000000000");
  for (double v : {0.1, 1.0 / 3, 99.9, 1e-7, 123456.789, 1e300, 5e-324}) {
    const std::string text = FormatNumber(v);
    double back = 0;
    std::from_chars(text.data(), text.data() + text.size(), back);
    EXPECT_EQ(back, v) << text;
  }
}

TEST(QuoteTest, EscapesAndShortens) {
  EXPECT_EQ(Quote("two"), "\"two\"");
  EXPECT_EQ(Quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
  EXPECT_EQ(Quote(std::string("\x01", 1)), "\"\\x01\"");
  EXPECT_EQ(Quote(std::string(100, 'x')),
            "\"" + std::string(60, 'x') + "...\"");
}

TEST(IsUtf8Test, AcceptsWellFormedTextOnly) {
  EXPECT_TRUE(IsUtf8(""));
  EXPECT_TRUE(IsUtf8("plain"));
  EXPECT_TRUE(IsUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9b\x91"));
  size_t bad = 99;
  EXPECT_FALSE(IsUtf8("ab\xff", &bad));
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(IsUtf8("\xc3"));              // cut short
  EXPECT_FALSE(IsUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsUtf8("\xe0\x80\xaf"));      // overlong
  EXPECT_FALSE(IsUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(IsUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsUtf8("\x80"));              // a lone continuation
}

}  // namespace
}  // namespace qm
