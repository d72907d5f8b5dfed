// Small text helpers shared by the configuration reader and writer: "did you
// mean" suggestions for misspelt keys and names, and number formatting that
// reads back to the same value.
#ifndef QM_CONFIG_CONFIG_TEXT_H_
#define QM_CONFIG_CONFIG_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace qm::config_internal {

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

}  // namespace qm::config_internal

#endif  // QM_CONFIG_CONFIG_TEXT_H_
