// Small text helpers shared by the engine's messages, the config reader and
// the adapters: "did you mean" suggestions, numbers that read back exactly,
// quoting for error messages.
#ifndef QM_CORE_TEXT_H_
#define QM_CORE_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qm {

// `s` cut to `max` bytes with "..." appended when cut.
std::string Truncate(const std::string& s, size_t max);
// Items joined with `sep`.
std::string Join(const std::vector<std::string>& items, const std::string& sep);
// Optimal-string-alignment distance between `a` and `b`, compared without
// regard to ASCII case: insertions, deletions, substitutions and swaps of two
// adjacent characters each cost 1.
size_t EditDistance(std::string_view a, std::string_view b);

// The candidate closest to `word` when it is close enough to be a plausible
// typo (distance at most 1 for words of up to 4 characters, else
// max(2, |word| / 3)), else a candidate holding every '_'-separated word of
// a multi-word `word` ("max_agents" -> "max_concurrent_agents"); "" when none
// fits. Ties go to the earlier candidate.
std::string ClosestMatch(std::string_view word,
                         const std::vector<std::string>& candidates);

// The shortest decimal text that parses back to exactly `value` (finite
// values only): "0.25", "150000", "1.5", "1e-07".
std::string FormatNumber(double value);

// `text` in double quotes for error messages, with quotes, backslashes and
// control characters escaped and anything past 60 characters cut to "...".
std::string Quote(std::string_view text);

// A fixed-point amount (thousandths) as decimal text ("2", "0.5").
std::string FormatMilli(int64_t milli);

// An integer with thousands separators: "1,600,000", "-75,000".
std::string FormatGrouped(int64_t value);

// Dollars for people: "$2.25", "$0.025", "$1,480.00" (two decimals, or up to
// six significant ones below a cent).
std::string FormatUsd(double usd);

// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or code
// points past U+10FFFF), as JSON output requires. When not, `*bad` (if
// given) is the offset of the first byte that is not.
bool IsUtf8(std::string_view text, size_t* bad = nullptr);

}  // namespace qm

#endif  // QM_CORE_TEXT_H_
