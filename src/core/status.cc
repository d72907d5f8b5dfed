#include "qm/status.h"

#include <array>

namespace qm {
namespace {
constexpr std::array<std::string_view, 11> kNames = {
    "OK",          "INVALID_REQUEST", "NOT_FOUND",    "RESOURCE_EXHAUSTED",
    "CONFLICT",    "BUDGET_EXCEEDED", "CIRCUIT_OPEN", "PERMISSION_DENIED",
    "UNAVAILABLE", "UNIMPLEMENTED",   "INTERNAL",
};
}  // namespace

std::string_view CodeName(Code code) {
  return kNames[static_cast<size_t>(code)];
}

bool CodeFromName(std::string_view name, Code* code) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) {
      *code = static_cast<Code>(i);
      return true;
    }
  }
  return false;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(CodeName(code_));
  s += ": ";
  s += message_;
  if (!details_.empty()) {
    s += " (";
    s += details_;
    s += ")";
  }
  return s;
}

}  // namespace qm
