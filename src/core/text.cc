#include "core/text.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace qm {

std::string Truncate(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  return s.substr(0, max) + "...";
}

std::string Join(const std::vector<std::string>& items,
                 const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

namespace {

char Lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

std::vector<std::string_view> SplitWords(std::string_view text) {
  std::vector<std::string_view> words;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '_') {
      if (i > start) words.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return words;
}

}  // namespace

size_t EditDistance(std::string_view a, std::string_view b) {
  const size_t m = b.size();
  // Rows i-2, i-1 and i of d[i][j], the distance between a[0, i) and
  // b[0, j).
  std::vector<size_t> prev2(m + 1), prev(m + 1), cur(m + 1);
  for (size_t j = 0; j <= m; ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= m; ++j) {
      const bool same = Lower(a[i - 1]) == Lower(b[j - 1]);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + !same});
      if (i > 1 && j > 1 && Lower(a[i - 1]) == Lower(b[j - 2]) &&
          Lower(a[i - 2]) == Lower(b[j - 1])) {
        cur[j] = std::min(cur[j], prev2[j - 2] + 1);
      }
    }
    std::swap(prev2, prev);
    std::swap(prev, cur);
  }
  return prev[m];
}

std::string ClosestMatch(std::string_view word,
                         const std::vector<std::string>& candidates) {
  const size_t limit =
      word.size() <= 4 ? 1 : std::max<size_t>(2, word.size() / 3);
  const std::string* best = nullptr;
  size_t best_distance = limit + 1;
  for (const std::string& candidate : candidates) {
    const size_t d = EditDistance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = &candidate;
    }
  }
  if (best != nullptr) return *best;
  // A shortened name: every '_'-separated word of `word` appears in the
  // candidate ("max_agents" for "max_concurrent_agents"). The candidate with
  // the fewest words wins.
  const std::vector<std::string_view> words = SplitWords(word);
  if (words.size() < 2) return "";
  size_t best_words = 0;
  for (const std::string& candidate : candidates) {
    const std::vector<std::string_view> have = SplitWords(candidate);
    bool all = true;
    for (std::string_view w : words) {
      bool found = false;
      for (std::string_view h : have) found |= EditDistance(w, h) == 0;
      all &= found;
    }
    if (all && (best == nullptr || have.size() < best_words)) {
      best = &candidate;
      best_words = have.size();
    }
  }
  return best == nullptr ? std::string() : *best;
}

std::string FormatNumber(double value) {
  char buf[64];
  const double magnitude = std::fabs(value);
  // Plain notation for the everyday range, the shortest exact form otherwise.
  const std::chars_format format =
      value == 0 || (magnitude >= 1e-4 && magnitude < 1e15)
          ? std::chars_format::fixed
          : std::chars_format::general;
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, format);
  if (ec != std::errc()) return "0";
  return std::string(buf, end);
}

std::string Quote(std::string_view text) {
  constexpr size_t kMax = 60;
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMax) out += "...";
  out += '"';
  return out;
}

std::string FormatMilli(int64_t milli) {
  const bool neg = milli < 0;
  uint64_t m = neg ? uint64_t(-(milli + 1)) + 1 : uint64_t(milli);
  std::string s = std::to_string(m / 1000);
  if (m % 1000) {
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%03u", unsigned(m % 1000));
    std::string f = frac;
    while (f.back() == '0') f.pop_back();
    s += f;
  }
  return neg ? "-" + s : s;
}

std::string FormatGrouped(int64_t value) {
  const bool negative = value < 0;
  uint64_t v = negative ? 0 - static_cast<uint64_t>(value)
                        : static_cast<uint64_t>(value);
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return negative ? "-" + out : out;
}

std::string FormatUsd(double usd) {
  if (!std::isfinite(usd)) return "$?";
  const bool negative = usd < 0;
  const double a = std::fabs(usd);
  char buf[64];
  if (a > 0 && a < 0.01) {
    std::snprintf(buf, sizeof buf, "%.6f", a);
    std::string s = buf;
    while (s.back() == '0') s.pop_back();
    return (negative ? "-$" : "$") + s;
  }
  const int64_t cents = static_cast<int64_t>(std::llround(a * 100));
  std::string s = FormatGrouped(cents / 100);
  std::snprintf(buf, sizeof buf, ".%02lld",
                static_cast<long long>(cents % 100));
  return (negative ? "-$" : "$") + s + buf;
}

bool IsUtf8(std::string_view text, size_t* bad) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
    } else {
      if (bad) *bad = i;
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      const unsigned char b =
          i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0;
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) {
        if (bad) *bad = i;
        return false;
      }
    }
    i += n + 1;
  }
  return true;
}

}  // namespace qm
