#include "core/expr.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <string>
#include <utility>

#include "core/text.h"

namespace qm::expr {

const char* TypeName(Type t) {
  switch (t) {
    case Type::kNumber:
      return "number";
    case Type::kString:
      return "string";
    case Type::kBool:
      return "bool";
    case Type::kLevel:
      return "level";
  }
  return "number";
}

namespace {

// Hostile-input guards: longer conditions and deeper nesting of "!" and "("
// do not compile.
constexpr size_t kMaxLength = 4096;
constexpr int kMaxDepth = 64;

// ---- Tokens ----

enum class Tok {
  kEnd,
  kWord,
  kNumber,
  kString,
  kLParen,
  kRParen,
  kLBracket,
  kRBracket,
  kComma,
  kNot,
  kAnd,
  kOr,
  kEq,
  kNe,
  kLt,
  kLe,
  kGt,
  kGe,
  kMul,
  kDiv,
};

struct Token {
  Tok kind = Tok::kEnd;
  size_t offset = 0;
  std::string_view text;   // the source text of the token
  std::string_view value;  // kString: the contents between the quotes
  double number = 0;       // kNumber
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsWordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || IsDigit(c) ||
         c == '_' || c == '.' || c == '-';
}

bool IsComparison(Tok t) {
  return t == Tok::kEq || t == Tok::kNe || t == Tok::kLt || t == Tok::kLe ||
         t == Tok::kGt || t == Tok::kGe;
}

bool IsOrdering(Tok t) {
  return t == Tok::kLt || t == Tok::kLe || t == Tok::kGt || t == Tok::kGe;
}

bool IsWord(const Token& t, std::string_view word) {
  return t.kind == Tok::kWord && t.text == word;
}

// Length of the number at the start of `s` ("-1.5e3", "0.9", ".5"), 0 when
// `s` does not start with one.
size_t NumberLength(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  size_t digits = 0;
  while (i < s.size() && IsDigit(s[i])) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    size_t j = i + 1;
    size_t fraction = 0;
    while (j < s.size() && IsDigit(s[j])) ++j, ++fraction;
    if (digits + fraction > 0) {
      i = j;
      digits += fraction;
    }
  }
  if (digits == 0) return 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    size_t exponent = 0;
    while (j < s.size() && IsDigit(s[j])) ++j, ++exponent;
    if (exponent > 0) i = j;
  }
  return i;
}

// ---- The compiled tree ----

// One factor of a product: a number variable or a constant.
struct Factor {
  bool divide = false;  // divides the product so far (never the first)
  bool is_var = false;
  size_t var = 0;
  double value = 0;
};

// A typed operand: a variable or a constant of the comparison's type; a
// kNumber operand is a product of factors.
struct Operand {
  bool is_var = false;
  size_t var = 0;
  std::vector<Factor> factors;   // kNumber
  std::string text;              // kString constant
  bool boolean = false;          // kBool constant
  Level level = Level::kNormal;  // kLevel constant
};

enum class Kind { kConst, kOr, kAnd, kNot, kBoolVar, kCompare, kIn };

struct Expr {
  Kind kind = Kind::kConst;
  bool value = true;           // kConst
  std::vector<Expr> children;  // kOr, kAnd: two or more; kNot: one
  Type type = Type::kNumber;   // kCompare, kIn: the type of both sides
  Tok op = Tok::kEq;           // kCompare
  bool negate = false;         // kIn: "!in"
  Operand lhs;                 // kBoolVar, kCompare, kIn
  Operand rhs;                 // kCompare
  std::vector<Operand> items;  // kIn
};

}  // namespace

class Node {
 public:
  bool Evaluate(const std::vector<Value>& values) const;

  size_t num_values = 0;
  // The variables the condition reads, with their types.
  std::vector<std::pair<size_t, Type>> reads;
  Expr root;
};

namespace {

// ---- Evaluation (no allocation) ----

size_t TypeIndex(Type t) {
  switch (t) {
    case Type::kNumber:
      return 0;
    case Type::kString:
      return 1;
    case Type::kBool:
      return 2;
    case Type::kLevel:
      return 3;
  }
  return 0;
}

// The value of a kNumber operand; nullopt when a variable is absent or the
// arithmetic has no value (0 / 0).
std::optional<double> NumberOf(const Operand& op,
                               const std::vector<Value>& values) {
  double result = 0;
  bool first = true;
  for (const Factor& f : op.factors) {
    double x = f.value;
    if (f.is_var) {
      const Value& v = values[f.var];
      const double* d = v ? std::get_if<double>(&*v) : nullptr;
      if (d == nullptr) return std::nullopt;
      x = *d;
    }
    result = first ? x : f.divide ? result / x : result * x;
    first = false;
  }
  if (std::isnan(result)) return std::nullopt;
  return result;
}

template <typename T>
const T* ConstantOf(const Operand& op);
template <>
const std::string* ConstantOf(const Operand& op) {
  return &op.text;
}
template <>
const bool* ConstantOf(const Operand& op) {
  return &op.boolean;
}
template <>
const Level* ConstantOf(const Operand& op) {
  return &op.level;
}

// The value of a non-number operand; nullptr when absent.
template <typename T>
const T* ValueOf(const Operand& op, const std::vector<Value>& values) {
  if (!op.is_var) return ConstantOf<T>(op);
  const Value& v = values[op.var];
  return v ? std::get_if<T>(&*v) : nullptr;
}

template <typename T>
bool Apply(Tok op, const T& a, const T& b) {
  switch (op) {
    case Tok::kEq:
      return a == b;
    case Tok::kNe:
      return !(a == b);
    case Tok::kLt:
      return a < b;
    case Tok::kLe:
      return a < b || a == b;
    case Tok::kGt:
      return b < a;
    case Tok::kGe:
      return b < a || a == b;
    default:
      return false;
  }
}

template <typename T>
bool CompareAs(const Expr& e, const std::vector<Value>& values) {
  const T* a = ValueOf<T>(e.lhs, values);
  const T* b = ValueOf<T>(e.rhs, values);
  return a != nullptr && b != nullptr && Apply(e.op, *a, *b);
}

template <typename T>
bool InAs(const Expr& e, const std::vector<Value>& values) {
  const T* a = ValueOf<T>(e.lhs, values);
  if (a == nullptr) return false;
  bool found = false;
  for (const Operand& item : e.items) found |= *ConstantOf<T>(item) == *a;
  return found != e.negate;
}

bool Eval(const Expr& e, const std::vector<Value>& values) {
  switch (e.kind) {
    case Kind::kConst:
      return e.value;
    case Kind::kOr:
      for (const Expr& c : e.children) {
        if (Eval(c, values)) return true;
      }
      return false;
    case Kind::kAnd:
      for (const Expr& c : e.children) {
        if (!Eval(c, values)) return false;
      }
      return true;
    case Kind::kNot:
      return !Eval(e.children[0], values);
    case Kind::kBoolVar: {
      const bool* b = ValueOf<bool>(e.lhs, values);
      return b != nullptr && *b;
    }
    case Kind::kCompare:
      switch (e.type) {
        case Type::kNumber: {
          const std::optional<double> a = NumberOf(e.lhs, values);
          const std::optional<double> b = NumberOf(e.rhs, values);
          return a && b && Apply(e.op, *a, *b);
        }
        case Type::kString:
          return CompareAs<std::string>(e, values);
        case Type::kBool:
          return CompareAs<bool>(e, values);
        case Type::kLevel:
          return CompareAs<Level>(e, values);
      }
      return false;
    case Kind::kIn:
      switch (e.type) {
        case Type::kNumber: {
          const std::optional<double> a = NumberOf(e.lhs, values);
          if (!a) return false;
          bool found = false;
          for (const Operand& item : e.items) {
            found |= item.factors[0].value == *a;
          }
          return found != e.negate;
        }
        case Type::kString:
          return InAs<std::string>(e, values);
        case Type::kBool:
          return InAs<bool>(e, values);
        case Type::kLevel:
          return InAs<Level>(e, values);
      }
      return false;
  }
  return false;
}

// ---- Parsing ----

enum class TermKind { kVariable, kNumber, kQuoted, kWord, kBool };

// One term as written, before the comparison gives it a type.
struct Term {
  TermKind kind = TermKind::kNumber;
  size_t offset = 0;
  std::string_view source;  // the term's source text
  std::string_view text;    // kQuoted, kWord: the string
  size_t var = 0;           // kVariable
  double number = 0;        // kNumber
  bool boolean = false;     // kBool
};

// A bare word that starts like a number ("30min", "1.5.2"): a typo for a
// number where one is needed.
bool IsMalformedNumber(const Term& t) {
  if (t.kind != TermKind::kWord) return false;
  const std::string_view w = t.source;
  const size_t digit = !w.empty() && w[0] == '-' ? 1 : 0;
  return digit < w.size() && IsDigit(w[digit]);
}

// An operand as written: one term, or a product of number terms.
struct ParsedOperand {
  std::vector<Term> terms;
  std::vector<bool> divide;  // divide[i]: terms[i] divides (i >= 1)
  size_t offset = 0;
  std::string_view source;
  Type type = Type::kNumber;
  bool reads_var = false;
  // A single quoted string or bare word: a string, or a level name when
  // compared with a level.
  bool is_text = false;
};

class Parser {
 public:
  Parser(std::string_view text, const Schema& schema)
      : text_(text), schema_(schema), read_(schema.size(), false) {
    names_.reserve(schema.size());
    for (const Variable& v : schema) names_.push_back(v.name);
  }

  // Parses the whole text into `out`; false with error_offset() and error()
  // when it does not compile.
  bool Parse(Expr* out, bool* is_default);

  size_t error_offset() const { return error_offset_; }
  const std::string& error() const { return error_; }
  // read()[i]: the condition reads schema variable i.
  const std::vector<bool>& read() const { return read_; }

 private:
  bool Fail(size_t offset, std::string why) {
    error_offset_ = offset;
    error_ = std::move(why);
    return false;
  }
  std::string Column(size_t offset) const {
    return "column " + std::to_string(offset + 1);
  }
  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  std::string Describe(const Token& t) const;
  bool Unexpected(const Token& t, std::string_view expected);

  bool Lex();
  bool ParseOr(int depth, Expr* out);
  bool ParseAnd(int depth, Expr* out);
  bool ParseUnary(int depth, Expr* out);
  bool ParseComparison(Expr* out);
  bool ParseIn(const ParsedOperand& lhs, bool negate, Expr* out);
  bool ParseOperand(ParsedOperand* out);
  bool ParseTerm(std::string_view expected, Term* out);
  bool ResolveWord(const Token& t, Term* out);
  bool BuildBare(const ParsedOperand& operand, Expr* out);
  bool BuildCompare(const ParsedOperand& lhs, const Token& op,
                    const ParsedOperand& rhs, Expr* out);
  bool ToOperand(const ParsedOperand& p, Type type, Operand* out);
  bool TermToOperand(const Term& t, Type type, Operand* out);
  bool UnknownWord(const Term& t);

  std::string_view text_;
  const Schema& schema_;
  std::vector<std::string> names_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  std::vector<bool> read_;
  size_t error_offset_ = 0;
  std::string error_;
};

std::string Parser::Describe(const Token& t) const {
  switch (t.kind) {
    case Tok::kEnd:
      return "end of condition";
    case Tok::kString:
      return "the string " + Quote(t.value);
    default:
      return Quote(t.text);
  }
}

// Fails at `t`, which is not what the grammar expects there, with a hint for
// the spelled-out operators people reach for.
bool Parser::Unexpected(const Token& t, std::string_view expected) {
  if (IsWord(t, "and")) {
    return Fail(t.offset, "unexpected \"and\", did you mean \"&&\"?");
  }
  if (IsWord(t, "or")) {
    return Fail(t.offset, "unexpected \"or\", did you mean \"||\"?");
  }
  if (IsWord(t, "not")) {
    return Fail(t.offset, IsWord(Peek(1), "in")
                              ? "unexpected \"not\", did you mean \"!in\"?"
                              : "unexpected \"not\", did you mean \"!\"?");
  }
  return Fail(t.offset,
              "expected " + std::string(expected) + ", got " + Describe(t));
}

bool Parser::Lex() {
  size_t i = 0;
  auto add = [&](Tok kind, size_t size) {
    Token t;
    t.kind = kind;
    t.offset = i;
    t.text = text_.substr(i, size);
    tokens_.push_back(t);
    i += size;
  };
  while (i < text_.size()) {
    const char c = text_[i];
    const char next = i + 1 < text_.size() ? text_[i + 1] : '\0';
    switch (c) {
      case ' ':
      case '\t':
      case '\n':
      case '\r':
        ++i;
        continue;
      case '(':
        add(Tok::kLParen, 1);
        continue;
      case ')':
        add(Tok::kRParen, 1);
        continue;
      case '[':
        add(Tok::kLBracket, 1);
        continue;
      case ']':
        add(Tok::kRBracket, 1);
        continue;
      case ',':
        add(Tok::kComma, 1);
        continue;
      case '*':
        add(Tok::kMul, 1);
        continue;
      case '/':
        add(Tok::kDiv, 1);
        continue;
      case '!':
        if (next == '=') {
          add(Tok::kNe, 2);
        } else {
          add(Tok::kNot, 1);
        }
        continue;
      case '<':
        if (next == '=') {
          add(Tok::kLe, 2);
        } else {
          add(Tok::kLt, 1);
        }
        continue;
      case '>':
        if (next == '=') {
          add(Tok::kGe, 2);
        } else {
          add(Tok::kGt, 1);
        }
        continue;
      case '=':
        if (next != '=') {
          return Fail(i, "unexpected \"=\", did you mean \"==\"?");
        }
        add(Tok::kEq, 2);
        continue;
      case '&':
        if (next != '&') {
          return Fail(i, "unexpected \"&\", did you mean \"&&\"?");
        }
        add(Tok::kAnd, 2);
        continue;
      case '|':
        if (next != '|') {
          return Fail(i, "unexpected \"|\", did you mean \"||\"?");
        }
        add(Tok::kOr, 2);
        continue;
      case '"':
      case '\'': {
        const size_t close = text_.find(c, i + 1);
        if (close == std::string_view::npos) {
          return Fail(i, std::string("unterminated string: no closing ") +
                             (c == '"' ? "'\"'" : "\"'\""));
        }
        const size_t start = i;
        add(Tok::kString, close + 1 - i);
        tokens_.back().value = text_.substr(start + 1, close - start - 1);
        continue;
      }
      default:
        break;
    }
    if (!IsWordChar(c)) {
      if (static_cast<unsigned char>(c) >= 0x80) {
        return Fail(i, "unexpected non-ASCII character");
      }
      return Fail(i, "unexpected character " + Quote(text_.substr(i, 1)));
    }
    const size_t number = NumberLength(text_.substr(i));
    if (number > 0 &&
        (i + number == text_.size() || !IsWordChar(text_[i + number]))) {
      double value = 0;
      const auto [end, ec] =
          std::from_chars(text_.data() + i, text_.data() + i + number, value);
      if (ec != std::errc() || end != text_.data() + i + number ||
          !std::isfinite(value)) {
        return Fail(
            i, "number " + Quote(text_.substr(i, number)) + " is out of range");
      }
      add(Tok::kNumber, number);
      tokens_.back().number = value;
      continue;
    }
    size_t size = 0;
    while (i + size < text_.size() && IsWordChar(text_[i + size])) ++size;
    add(Tok::kWord, size);
  }
  add(Tok::kEnd, 0);
  return true;
}

bool Parser::Parse(Expr* out, bool* is_default) {
  *is_default = false;
  if (text_.size() > kMaxLength) {
    return Fail(kMaxLength, "condition is longer than " +
                                std::to_string(kMaxLength) + " bytes");
  }
  if (!Lex()) return false;
  if (Peek().kind == Tok::kEnd) return Fail(0, "empty condition");
  if (IsWord(Peek(), "default") && Peek(1).kind == Tok::kEnd) {
    *is_default = true;
    out->kind = Kind::kConst;
    out->value = true;
    return true;
  }
  if (!ParseOr(0, out)) return false;
  const Token& t = Peek();
  if (t.kind == Tok::kEnd) return true;
  if (t.kind == Tok::kRParen) {
    return Fail(t.offset, "unbalanced \")\": no \"(\" to close");
  }
  return Unexpected(t, "\"&&\", \"||\" or end of condition");
}

bool Parser::ParseOr(int depth, Expr* out) {
  Expr first;
  if (!ParseAnd(depth, &first)) return false;
  if (Peek().kind != Tok::kOr) {
    *out = std::move(first);
    return true;
  }
  out->kind = Kind::kOr;
  out->children.push_back(std::move(first));
  while (Peek().kind == Tok::kOr) {
    ++pos_;
    Expr next;
    if (!ParseAnd(depth, &next)) return false;
    out->children.push_back(std::move(next));
  }
  return true;
}

bool Parser::ParseAnd(int depth, Expr* out) {
  Expr first;
  if (!ParseUnary(depth, &first)) return false;
  if (Peek().kind != Tok::kAnd) {
    *out = std::move(first);
    return true;
  }
  out->kind = Kind::kAnd;
  out->children.push_back(std::move(first));
  while (Peek().kind == Tok::kAnd) {
    ++pos_;
    Expr next;
    if (!ParseUnary(depth, &next)) return false;
    out->children.push_back(std::move(next));
  }
  return true;
}

bool Parser::ParseUnary(int depth, Expr* out) {
  const Token& t = Peek();
  if (t.kind != Tok::kNot && t.kind != Tok::kLParen) {
    return ParseComparison(out);
  }
  if (depth >= kMaxDepth) {
    return Fail(t.offset, "conditions nest more than " +
                              std::to_string(kMaxDepth) + " levels deep");
  }
  ++pos_;
  if (t.kind == Tok::kNot) {
    out->kind = Kind::kNot;
    out->children.resize(1);
    return ParseUnary(depth + 1, &out->children[0]);
  }
  if (!ParseOr(depth + 1, out)) return false;
  if (Peek().kind != Tok::kRParen) {
    return Unexpected(Peek(),
                      "\")\" to close the \"(\" at " + Column(t.offset));
  }
  ++pos_;
  return true;
}

bool Parser::ParseComparison(Expr* out) {
  ParsedOperand lhs;
  if (!ParseOperand(&lhs)) return false;
  const Token& t = Peek();
  if (IsComparison(t.kind)) {
    ++pos_;
    ParsedOperand rhs;
    if (!ParseOperand(&rhs)) return false;
    return BuildCompare(lhs, t, rhs, out);
  }
  if (IsWord(t, "in")) {
    ++pos_;
    return ParseIn(lhs, false, out);
  }
  if (t.kind == Tok::kNot && IsWord(Peek(1), "in")) {
    pos_ += 2;
    return ParseIn(lhs, true, out);
  }
  return BuildBare(lhs, out);
}

bool Parser::ParseOperand(ParsedOperand* out) {
  out->offset = Peek().offset;
  Term first;
  if (!ParseTerm("an operand", &first)) return false;
  out->terms.push_back(first);
  out->divide.push_back(false);
  while (Peek().kind == Tok::kMul || Peek().kind == Tok::kDiv) {
    const bool divide = Peek().kind == Tok::kDiv;
    ++pos_;
    Term t;
    if (!ParseTerm("an operand", &t)) return false;
    out->terms.push_back(t);
    out->divide.push_back(divide);
  }
  const Term& last = out->terms.back();
  out->source =
      text_.substr(out->offset, last.offset + last.source.size() - out->offset);
  if (out->terms.size() == 1) {
    switch (first.kind) {
      case TermKind::kVariable:
        out->type = schema_[first.var].type;
        out->reads_var = true;
        break;
      case TermKind::kNumber:
        out->type = Type::kNumber;
        break;
      case TermKind::kQuoted:
      case TermKind::kWord:
        out->type = Type::kString;
        out->is_text = true;
        break;
      case TermKind::kBool:
        out->type = Type::kBool;
        break;
    }
    return true;
  }
  out->type = Type::kNumber;
  for (size_t i = 0; i < out->terms.size(); ++i) {
    const Term& t = out->terms[i];
    switch (t.kind) {
      case TermKind::kVariable:
        if (schema_[t.var].type != Type::kNumber) {
          return Fail(t.offset, "\"*\" and \"/\" need numbers, got " +
                                    Quote(t.source) + ", a " +
                                    TypeName(schema_[t.var].type));
        }
        out->reads_var = true;
        break;
      case TermKind::kNumber:
        if (out->divide[i] && t.number == 0) {
          return Fail(t.offset, "division by zero");
        }
        break;
      case TermKind::kWord:
        return UnknownWord(t);
      case TermKind::kQuoted:
      case TermKind::kBool:
        return Fail(t.offset,
                    "\"*\" and \"/\" need numbers, got " + Quote(t.source));
    }
  }
  return true;
}

bool Parser::ParseTerm(std::string_view expected, Term* out) {
  const Token& t = Peek();
  out->offset = t.offset;
  out->source = t.text;
  switch (t.kind) {
    case Tok::kNumber:
      out->kind = TermKind::kNumber;
      out->number = t.number;
      break;
    case Tok::kString:
      out->kind = TermKind::kQuoted;
      out->text = t.value;
      break;
    case Tok::kWord:
      if (!ResolveWord(t, out)) return false;
      break;
    default:
      return Unexpected(t, expected);
  }
  ++pos_;
  return true;
}

// A bare word: a variable, a bool, or a string; fails on a word that looks
// like a misspelt variable.
bool Parser::ResolveWord(const Token& t, Term* out) {
  const std::string_view word = t.text;
  for (size_t i = 0; i < schema_.size(); ++i) {
    if (schema_[i].name == word) {
      out->kind = TermKind::kVariable;
      out->var = i;
      read_[i] = true;
      return true;
    }
  }
  if (word == "true" || word == "false") {
    out->kind = TermKind::kBool;
    out->boolean = word == "true";
    return true;
  }
  out->kind = TermKind::kWord;
  out->text = word;
  Level unused;
  if (LevelFromName(std::string(word), &unused)) return true;
  const bool dotted = word.find('.') != std::string_view::npos;
  std::string suggestion = ClosestMatch(word, names_);
  if (suggestion.empty() && dotted) {
    // A cut-off name ("task.prio"): the shortest variable it starts.
    for (const std::string& name : names_) {
      if (name.size() > word.size() &&
          EditDistance(word, std::string_view(name).substr(0, word.size())) ==
              0 &&
          (suggestion.empty() || name.size() < suggestion.size())) {
        suggestion = name;
      }
    }
  }
  if (suggestion.empty()) {
    // A variable's name without its "task." / "daily_limits." prefix.
    for (const std::string& name : names_) {
      const size_t dot = name.rfind('.');
      if (dot != std::string::npos &&
          EditDistance(word, std::string_view(name).substr(dot + 1)) == 0) {
        suggestion = name;
        break;
      }
    }
  }
  if (!suggestion.empty()) {
    return Fail(t.offset, "unknown variable " + Quote(word) +
                              ", did you mean " + Quote(suggestion) + "?");
  }
  // Variables start with a letter; "1.2.3" is text.
  if (!dotted || IsDigit(word[0])) return true;
  // Dotted: meant as a variable. List the ones that share its prefix.
  const std::string_view prefix = word.substr(0, word.find('.') + 1);
  std::vector<std::string> same_prefix;
  for (const std::string& name : names_) {
    if (std::string_view(name).substr(0, prefix.size()) == prefix) {
      same_prefix.push_back(name);
    }
  }
  if (same_prefix.empty()) {
    return Fail(t.offset, "unknown variable " + Quote(word) +
                              " (quote text that contains \".\")");
  }
  return Fail(t.offset, "unknown variable " + Quote(word) +
                            "; known: " + Join(same_prefix, ", "));
}

// A bare word where a variable is needed.
bool Parser::UnknownWord(const Term& t) {
  if (t.text == "default") {
    return Fail(t.offset, "\"default\" must be the whole condition");
  }
  if (t.text == "not") {
    return Fail(t.offset, "unexpected \"not\", did you mean \"!\"?");
  }
  return Fail(t.offset, "unknown variable " + Quote(t.text));
}

bool Parser::BuildBare(const ParsedOperand& operand, Expr* out) {
  const Term& t = operand.terms[0];
  if (operand.terms.size() == 1) {
    if (t.kind == TermKind::kWord) return UnknownWord(t);
    if (t.kind == TermKind::kBool) {
      out->kind = Kind::kConst;
      out->value = t.boolean;
      return true;
    }
    if (t.kind == TermKind::kVariable && operand.type == Type::kBool) {
      out->kind = Kind::kBoolVar;
      out->type = Type::kBool;
      out->lhs.is_var = true;
      out->lhs.var = t.var;
      return true;
    }
  }
  const Token& next = Peek();
  if (next.kind != Tok::kEnd && next.kind != Tok::kAnd &&
      next.kind != Tok::kOr && next.kind != Tok::kRParen) {
    return Unexpected(next, "a comparison operator");
  }
  return Fail(operand.offset,
              Quote(operand.source) + " is a " + TypeName(operand.type) +
                  ", not a condition; compare it with ==, !=, <, <=, >, >= "
                  "or in");
}

bool Parser::BuildCompare(const ParsedOperand& lhs, const Token& op,
                          const ParsedOperand& rhs, Expr* out) {
  if (!lhs.reads_var && !rhs.reads_var) {
    for (const ParsedOperand* side : {&lhs, &rhs}) {
      for (const Term& t : side->terms) {
        if (t.kind == TermKind::kWord) return UnknownWord(t);
      }
    }
    return Fail(lhs.offset,
                "compares two constants; one side must read a "
                "variable");
  }
  Type type = lhs.type;
  const bool level = (lhs.type == Type::kLevel && rhs.is_text) ||
                     (rhs.type == Type::kLevel && lhs.is_text);
  if (level) {
    type = Type::kLevel;
  } else if (lhs.type != rhs.type) {
    for (const ParsedOperand* side : {&lhs, &rhs}) {
      if (side->type != Type::kNumber && IsMalformedNumber(side->terms[0])) {
        return Fail(side->offset, Quote(side->source) + " is not a number");
      }
    }
    return Fail(op.offset, std::string("cannot compare ") + TypeName(lhs.type) +
                               " with " + TypeName(rhs.type));
  }
  if (IsOrdering(op.kind) && (type == Type::kString || type == Type::kBool)) {
    return Fail(op.offset, Quote(op.text) + " cannot order " + TypeName(type) +
                               "s; they compare only with == and !=");
  }
  out->kind = Kind::kCompare;
  out->type = type;
  out->op = op.kind;
  return ToOperand(lhs, type, &out->lhs) && ToOperand(rhs, type, &out->rhs);
}

bool Parser::ParseIn(const ParsedOperand& lhs, bool negate, Expr* out) {
  if (!lhs.reads_var) {
    for (const Term& t : lhs.terms) {
      if (t.kind == TermKind::kWord) return UnknownWord(t);
    }
    return Fail(lhs.offset, "the left side of \"in\" must read a variable");
  }
  if (Peek().kind != Tok::kLBracket) {
    return Unexpected(Peek(), "\"[\" after \"in\"");
  }
  ++pos_;
  out->kind = Kind::kIn;
  out->type = lhs.type;
  out->negate = negate;
  if (!ToOperand(lhs, lhs.type, &out->lhs)) return false;
  while (true) {
    Term t;
    if (!ParseTerm("a literal", &t)) return false;
    if (t.kind == TermKind::kVariable) {
      return Fail(t.offset, "list items must be literals; " + Quote(t.source) +
                                " is a variable");
    }
    Type item_type = Type::kString;
    if (t.kind == TermKind::kNumber) item_type = Type::kNumber;
    if (t.kind == TermKind::kBool) item_type = Type::kBool;
    if (item_type == Type::kString && lhs.type == Type::kLevel) {
      item_type = Type::kLevel;
    }
    if (item_type != lhs.type) {
      if (lhs.type == Type::kNumber && IsMalformedNumber(t)) {
        return Fail(t.offset, Quote(t.source) + " is not a number");
      }
      return Fail(t.offset, std::string("cannot compare ") +
                                TypeName(lhs.type) + " with " +
                                TypeName(item_type));
    }
    out->items.emplace_back();
    if (!TermToOperand(t, lhs.type, &out->items.back())) return false;
    const Tok next = Peek().kind;
    if (next != Tok::kComma && next != Tok::kRBracket) {
      return Unexpected(Peek(), "\",\" or \"]\"");
    }
    ++pos_;
    if (next == Tok::kRBracket) return true;
  }
}

bool Parser::ToOperand(const ParsedOperand& p, Type type, Operand* out) {
  if (type != Type::kNumber) return TermToOperand(p.terms[0], type, out);
  for (size_t i = 0; i < p.terms.size(); ++i) {
    const Term& t = p.terms[i];
    Factor f;
    f.divide = p.divide[i];
    f.is_var = t.kind == TermKind::kVariable;
    f.var = t.var;
    f.value = t.number;
    out->factors.push_back(f);
  }
  return true;
}

bool Parser::TermToOperand(const Term& t, Type type, Operand* out) {
  if (type == Type::kNumber) {
    Factor f;
    f.is_var = t.kind == TermKind::kVariable;
    f.var = t.var;
    f.value = t.number;
    out->factors.push_back(f);
    return true;
  }
  if (t.kind == TermKind::kVariable) {
    out->is_var = true;
    out->var = t.var;
    return true;
  }
  switch (type) {
    case Type::kString:
      out->text = std::string(t.text);
      return true;
    case Type::kBool:
      out->boolean = t.boolean;
      return true;
    case Type::kLevel:
      if (LevelFromName(std::string(t.text), &out->level)) return true;
      {
        const std::string suggestion = ClosestMatch(
            t.text, {"low", "normal", "medium", "high", "critical"});
        if (!suggestion.empty()) {
          return Fail(t.offset, "unknown priority level " + Quote(t.text) +
                                    ", did you mean " + Quote(suggestion) +
                                    "?");
        }
        return Fail(t.offset, "unknown priority level " + Quote(t.text) +
                                  " (levels: low, normal or medium, high, "
                                  "critical)");
      }
    case Type::kNumber:
      break;
  }
  return true;
}

}  // namespace

bool Node::Evaluate(const std::vector<Value>& values) const {
  if (values.size() != num_values) return false;
  for (const auto& [index, type] : reads) {
    const Value& v = values[index];
    if (v && v->index() != TypeIndex(type)) return false;
  }
  return Eval(root, values);
}

StatusOr<Condition> Condition::Compile(std::string_view text,
                                       const Schema& schema,
                                       CompileError* error) {
  Parser parser(text, schema);
  auto node = std::make_shared<Node>();
  bool is_default = false;
  if (!parser.Parse(&node->root, &is_default)) {
    if (error != nullptr) {
      error->offset = parser.error_offset();
      error->message = parser.error();
    }
    return InvalidRequest("column " +
                          std::to_string(parser.error_offset() + 1) + ": " +
                          parser.error());
  }
  Condition c;
  node->num_values = schema.size();
  for (size_t i = 0; i < schema.size(); ++i) {
    if (!parser.read()[i]) continue;
    c.variables_.push_back(i);
    node->reads.emplace_back(i, schema[i].type);
  }
  c.root_ = std::move(node);
  c.is_default_ = is_default;
  c.text_ = std::string(text);
  return c;
}

bool Condition::Evaluate(const std::vector<Value>& values) const {
  return root_ != nullptr && root_->Evaluate(values);
}

}  // namespace qm::expr
