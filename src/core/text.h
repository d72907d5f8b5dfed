// Small text helpers shared by the engine's messages and the adapters.
#ifndef QM_CORE_TEXT_H_
#define QM_CORE_TEXT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace qm {

// `s` cut to `max` bytes with "..." appended when cut.
std::string Truncate(const std::string& s, size_t max);
// Items joined with `sep`.
std::string Join(const std::vector<std::string>& items, const std::string& sep);
// The candidate closest to `word` by edit distance, or "" when none is close
// enough to be a plausible typo.
std::string DidYouMean(const std::string& word,
                       const std::vector<std::string>& candidates);
// Shortest decimal text of a double ("2", "0.5", "1e+20").
std::string FormatAmount(double v);
// A fixed-point amount (thousandths) as decimal text ("2", "0.5").
std::string FormatMilli(int64_t milli);

}  // namespace qm

#endif  // QM_CORE_TEXT_H_
