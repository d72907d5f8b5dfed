#include "qm/status.h"

#include <array>

namespace qm {
namespace {
constexpr std::array<std::string_view, 15> kNames = {
    "OK",
    "INVALID_REQUEST",
    "NOT_FOUND",
    "RESOURCE_EXHAUSTED",
    "CONFLICT",
    "BUDGET_EXCEEDED",
    "CIRCUIT_OPEN",
    "PERMISSION_DENIED",
    "UNAVAILABLE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "DATA_LOSS",
    "UNAUTHENTICATED",
    "RATE_LIMITED",
    "DEADLINE_EXCEEDED",
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

Status::Status(Code code, std::string message)
    : code_(code), rep_(std::make_unique<Rep>()) {
  rep_->message = std::move(message);
}

Status::Status(const Status& other)
    : code_(other.code_),
      rep_(other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr) {}

Status& Status::operator=(const Status& other) {
  if (this != &other) {
    code_ = other.code_;
    rep_ = other.rep_ ? std::make_unique<Rep>(*other.rep_) : nullptr;
  }
  return *this;
}

const Status::Rep& Status::rep() const {
  static const Rep* const kEmpty = new Rep();
  return rep_ ? *rep_ : *kEmpty;
}

Status::Rep& Status::mutable_rep() {
  if (!rep_) rep_ = std::make_unique<Rep>();
  return *rep_;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(CodeName(code_));
  s += ": ";
  s += message();
  if (!details().empty()) {
    s += " (";
    s += details();
    s += ")";
  }
  return s;
}

}  // namespace qm
