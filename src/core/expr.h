// The small condition language of auto_model_selection rules and
// circuit_breaker trip conditions. Pure: no I/O, no allocation while
// evaluating.
//
//   condition  := "default" | or
//   or         := and ("||" and)*
//   and        := unary ("&&" unary)*
//   unary      := "!" unary | "(" or ")" | comparison | operand
//   comparison := operand ("==" | "!=" | "<" | "<=" | ">" | ">=") operand
//               | operand ["!"] "in" "[" literal ("," literal)* "]"
//   operand    := term (("*" | "/") term)*      (numbers only)
//   term       := variable | number | "quoted string" | 'quoted' | word
//
// A `word` (letters, digits, '_', '.', '-') that names a variable of the
// schema is that variable; `true`/`false` are booleans; otherwise it is a
// string literal, so `task.product == urgent-project` needs no quotes.
// Numbers accept a leading '-', an optional fraction and exponent ("-1",
// "0.9", "1e6"). Quoted strings have no escapes.
//
// Types are checked at compile time: both sides of a comparison have the same
// type (number, string, bool or level); numbers and levels are ordered,
// strings and bools compare only with == and != (and `in`); a level literal
// must be a level name (low, normal/medium, high, critical; a typo gets a
// did-you-mean); a word that looks like a variable (contains '.' or is close
// to a variable name) but is not one is an error ("unknown variable
// task.prio, did you mean task.priority?"); a bare operand used as a
// condition must be a bool; a comparison must read at least one variable.
//
// Missing values: a variable may be absent at evaluation time (a request
// without estimated_minutes, a limit that is not configured). A comparison
// with an absent operand is false (and so `!(...)` of it is true).
#ifndef QM_CORE_EXPR_H_
#define QM_CORE_EXPR_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "qm/config.h"
#include "qm/status.h"

namespace qm::expr {

enum class Type { kNumber, kString, kBool, kLevel };
const char* TypeName(Type t);

// The variables a condition may use, in index order. Evaluation takes their
// values in the same order.
struct Variable {
  std::string name;  // e.g. "task.priority", "cost_daily_usd"
  Type type = Type::kNumber;
};
using Schema = std::vector<Variable>;

// A variable's value at evaluation: nullopt = absent. A kLevel variable
// holds its Level, a kNumber a double, a kString a string, a kBool a bool.
using Value = std::optional<std::variant<double, std::string, bool, Level>>;

// Where and why a condition does not compile. `offset` is the 0-based byte
// offset into the text (callers turn it into a file column).
struct CompileError {
  size_t offset = 0;
  std::string message;
};

class Node;  // private

// A compiled condition. Cheap to copy (shares its immutable tree).
class Condition {
 public:
  // Compiles `text` against `schema`. On failure returns INVALID_REQUEST with
  // message "column N: <why>" (1-based) and fills `error` when given.
  static StatusOr<Condition> Compile(std::string_view text,
                                     const Schema& schema,
                                     CompileError* error = nullptr);

  // Evaluates with `values[i]` the value of schema variable i. `values` must
  // have one entry per schema variable of the correct type (else false).
  bool Evaluate(const std::vector<Value>& values) const;

  // True for the literal condition "default".
  bool is_default() const { return is_default_; }
  // The source text.
  const std::string& text() const { return text_; }
  // Indexes of the schema variables the condition reads.
  const std::vector<size_t>& variables() const { return variables_; }

 private:
  std::shared_ptr<const Node> root_;
  bool is_default_ = false;
  std::string text_;
  std::vector<size_t> variables_;
};

}  // namespace qm::expr

#endif  // QM_CORE_EXPR_H_
