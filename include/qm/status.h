// Errors as values. A Status is either OK or carries a code from a fixed set
// that maps 1:1 onto the `error.code` strings of the JSON response envelope,
// a human-readable message, and optional details and affected resources.
//
// Thread safety: a Status is a value; copies are independent.
#ifndef QM_STATUS_H_
#define QM_STATUS_H_

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace qm {

// The codes, in the order of the JSON envelope's `error.code` values.
enum class Code {
  kOk = 0,
  kInvalidRequest,     // malformed input; names the field; nothing changed
  kNotFound,           // the named allocation, scenario, file... is unknown
  kResourceExhausted,  // the request can never fit: it exceeds a limit
  kConflict,           // the operation clashes with the current state
  kBudgetExceeded,     // a token or dollar budget refuses the request
  kCircuitOpen,        // the circuit breaker is tripped; no new grants
  kPermissionDenied,   // the caller may not do this
  kUnavailable,        // not possible right now; retrying later may work
  kUnimplemented,      // the operation exists in the API but is not built yet
  kInternal,           // a bug or an invariant violation inside qm
  kDataLoss,           // stored state is damaged or missing (journal, file)
  kUnauthenticated,    // no valid credentials (server: token missing/unknown)
  kRateLimited,        // too many requests from this caller; retry later
  kDeadlineExceeded,   // the answer did not come in time (clients)
};

// "INVALID_REQUEST", "NOT_FOUND", ... ("OK" for kOk).
std::string_view CodeName(Code code);
// Inverse of CodeName; false when `name` is not a code.
bool CodeFromName(std::string_view name, Code* code);

class Status {
 public:
  Status() = default;
  Status(Code code, std::string message);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return rep().message; }
  // Longer explanation, e.g. "requested 8, available 3 of 16".
  const std::string& details() const { return rep().details; }
  // Resource names the error concerns (the envelope's affected_resources).
  const std::vector<std::string>& affected_resources() const {
    return rep().affected;
  }
  // What the caller could do instead (the envelope's alternative_options),
  // e.g. "model haiku fits: reserves $0.03".
  const std::vector<std::string>& alternatives() const {
    return rep().alternatives;
  }
  // Machine-readable facts about the error (the envelope's error.context),
  // e.g. {"budget", "daily cost budget"}, {"resets_at", "..."}; in order.
  const std::vector<std::pair<std::string, std::string>>& context() const {
    return rep().context;
  }

  Status& WithDetails(std::string details) & {
    mutable_rep().details = std::move(details);
    return *this;
  }
  Status&& WithDetails(std::string details) && {
    mutable_rep().details = std::move(details);
    return std::move(*this);
  }
  Status& AddAffected(std::string resource) & {
    mutable_rep().affected.push_back(std::move(resource));
    return *this;
  }
  Status&& AddAffected(std::string resource) && {
    mutable_rep().affected.push_back(std::move(resource));
    return std::move(*this);
  }
  Status& AddAlternative(std::string text) & {
    mutable_rep().alternatives.push_back(std::move(text));
    return *this;
  }
  Status&& AddAlternative(std::string text) && {
    mutable_rep().alternatives.push_back(std::move(text));
    return std::move(*this);
  }
  Status& AddContext(std::string key, std::string value) & {
    mutable_rep().context.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  Status&& AddContext(std::string key, std::string value) && {
    mutable_rep().context.emplace_back(std::move(key), std::move(value));
    return std::move(*this);
  }

  // "INVALID_REQUEST: resources.cpu_cores must not be negative".
  std::string ToString() const;

 private:
  // The error payload; null for OK, so an OK status is one word and costs
  // nothing to create or destroy (as leveldb's Status).
  struct Rep {
    std::string message;
    std::string details;
    std::vector<std::string> affected;
    std::vector<std::string> alternatives;
    std::vector<std::pair<std::string, std::string>> context;
  };
  const Rep& rep() const;
  Rep& mutable_rep();

  Code code_ = Code::kOk;
  std::unique_ptr<Rep> rep_;
};

inline Status InvalidRequest(std::string m) {
  return Status(Code::kInvalidRequest, std::move(m));
}
inline Status NotFound(std::string m) {
  return Status(Code::kNotFound, std::move(m));
}
inline Status ResourceExhausted(std::string m) {
  return Status(Code::kResourceExhausted, std::move(m));
}
inline Status Conflict(std::string m) {
  return Status(Code::kConflict, std::move(m));
}
inline Status Unavailable(std::string m) {
  return Status(Code::kUnavailable, std::move(m));
}
inline Status Unimplemented(std::string m) {
  return Status(Code::kUnimplemented, std::move(m));
}
inline Status Internal(std::string m) {
  return Status(Code::kInternal, std::move(m));
}
inline Status DataLoss(std::string m) {
  return Status(Code::kDataLoss, std::move(m));
}
inline Status PermissionDenied(std::string m) {
  return Status(Code::kPermissionDenied, std::move(m));
}
inline Status Unauthenticated(std::string m) {
  return Status(Code::kUnauthenticated, std::move(m));
}
inline Status RateLimited(std::string m) {
  return Status(Code::kRateLimited, std::move(m));
}
inline Status DeadlineExceeded(std::string m) {
  return Status(Code::kDeadlineExceeded, std::move(m));
}

// A value or the error that prevented it. Accessing value() of an error is a
// programming bug (checked with assert in debug builds).
template <typename T>
class StatusOr {
 public:
  StatusOr(Status status) : v_(std::move(status)) {}  // NOLINT: implicit
  StatusOr(T value) : v_(std::move(value)) {}         // NOLINT: implicit

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  const T& value() const& { return std::get<T>(v_); }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace qm

#define QM_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::qm::Status qm_status_ = (expr);        \
    if (!qm_status_.ok()) return qm_status_; \
  } while (0)

#endif  // QM_STATUS_H_
