// The primitives of qm's binary formats (the journal's op records and the
// engine's state snapshots): a Writer that appends them to a string and a
// Reader that reads them back, checking every read against the input's end.
//
// Encoding, little-endian and independent of the host: unsigned LEB128
// varints (one encoding per value: overlong forms are refused), zigzag
// varints for signed integers, 8 bytes for a double (its IEEE bits), a
// string as its varint length and bytes.
//
// Thread safety: none; each Writer/Reader belongs to one call.
#ifndef QM_CORE_WIRE_H_
#define QM_CORE_WIRE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace qm::wire {

// ---- Writer ----

// Appends the format's primitives to a string.
class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}

  void Byte(uint8_t b) { out_->push_back(static_cast<char>(b)); }
  void Varint(uint64_t v) {
    char buf[10];
    size_t n = 0;
    while (v >= 0x80) {
      buf[n++] = static_cast<char>(v | 0x80);
      v >>= 7;
    }
    buf[n++] = static_cast<char>(v);
    out_->append(buf, n);
  }
  void Zigzag(int64_t v) {
    Varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
  }
  void Double(double d) {
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    char buf[8];
    for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(bits >> (8 * i));
    out_->append(buf, 8);
  }
  void Bytes(std::string_view s) {
    Varint(s.size());
    out_->append(s);
  }

 private:
  std::string* out_;
};

// ---- Reader ----

// Reads the format's primitives from a byte range, checking every read
// against its end. The first problem is recorded (with the field and the
// offset) and ends the reading: later reads return zeros without looking at
// the input, so a decoder runs to its end and checks ok() once.
class Reader {
 public:
  Reader(std::string_view in, size_t offset)
      : begin_(reinterpret_cast<const uint8_t*>(in.data())),
        p_(begin_ + offset),
        end_(begin_ + in.size()) {}

  bool ok() const { return !failed_; }
  const std::string& error() const { return error_; }
  bool AtEnd() const { return p_ == end_; }
  size_t left() const { return static_cast<size_t>(end_ - p_); }

  uint8_t Byte(const char* field) {
    if (p_ == end_) {
      Fail(field, "truncated");
      return 0;
    }
    return *p_++;
  }

  uint64_t Varint(const char* field) {
    if (p_ != end_ && *p_ < 0x80) return *p_++;
    return VarintSlow(field);
  }

  int64_t Zigzag(const char* field) {
    const uint64_t u = Varint(field);
    return static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
  }

  double Double(const char* field) {
    if (left() < 8) {
      Fail(field, "truncated (a double needs 8 bytes)");
      return 0;
    }
    uint64_t bits = 0;
    for (int i = 0; i < 8; ++i) bits |= static_cast<uint64_t>(p_[i]) << (8 * i);
    p_ += 8;
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
  }

  bool Bool(const char* field) {
    const size_t at = Offset();
    const uint8_t b = Byte(field);
    if (b > 1) FailValue(at, field, "bad boolean byte ", b, "");
    return b == 1;
  }

  void String(const char* field, std::string* out) {
    const size_t n = Length(field);
    if (n == 0) {  // the common case for optional text; saves a call
      out->clear();
      return;
    }
    out->assign(reinterpret_cast<const char*>(p_), n);
    p_ += n;
  }

  // A list's element count. Every element takes at least `min_bytes`, so a
  // count the bytes left cannot hold is damage, not a reason to allocate.
  size_t Count(const char* field, size_t min_bytes) {
    const size_t at = Offset();
    const uint64_t n = Varint(field);
    if (n > left() / min_bytes) {
      FailLength(at, field, "list of ", n, " elements");
      return 0;
    }
    return static_cast<size_t>(n);
  }

  // Records a problem at the current offset (the first one wins) and stops
  // the reading.
  void Fail(const char* field, std::string_view what) {
    FailAt(Offset(), field, what);
  }
  [[gnu::cold, gnu::noinline]] void FailAt(size_t offset, const char* field,
                                           std::string_view what) {
    if (failed_) return;
    failed_ = true;
    if (scope_ != nullptr) {
      error_ += scope_;
      if (index_ >= 0) error_ += "[" + std::to_string(index_) + "]";
      error_ += ".";
    }
    error_ += field;
    error_ += " at byte ";
    error_ += std::to_string(offset);
    error_ += ": ";
    error_ += what;
    p_ = end_;
  }

  // FailAt with "<what><value><suffix>": the message is built only when
  // needed, off the hot path.
  [[gnu::cold, gnu::noinline]] void FailValue(size_t offset, const char* field,
                                              const char* what, uint64_t value,
                                              const char* suffix) {
    FailAt(offset, field, what + std::to_string(value) + suffix);
  }

  size_t Offset() const { return static_cast<size_t>(p_ - begin_); }

 private:
  [[gnu::noinline]] uint64_t VarintSlow(const char* field) {
    const size_t at = Offset();
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) {
        FailAt(at, field, "truncated varint");
        return 0;
      }
      const uint8_t b = *p_++;
      if (shift == 63 && b > 1) {
        FailAt(at, field, "varint overflows 64 bits");
        return 0;
      }
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (b < 0x80) {
        // One encoding per value: a zero last byte would be padding.
        if (b == 0 && shift > 0) {
          FailAt(at, field, "overlong varint");
          return 0;
        }
        return v;
      }
    }
    FailAt(at, field, "varint longer than 10 bytes");
    return 0;
  }

  size_t Length(const char* field) {
    const size_t at = Offset();
    const uint64_t n = Varint(field);
    if (n > left()) {
      FailLength(at, field, "string of ", n, " bytes");
      return 0;
    }
    return static_cast<size_t>(n);
  }

  // A length or count `n` that the bytes left cannot hold.
  [[gnu::cold, gnu::noinline]] void FailLength(size_t offset, const char* field,
                                               const char* what, uint64_t n,
                                               const char* unit) {
    FailAt(offset, field,
           std::string("truncated: ") + what + std::to_string(n) + unit +
               " with " + std::to_string(left()) + " bytes left");
  }

  friend class Scope;

  const uint8_t* begin_;
  const uint8_t* p_;
  const uint8_t* end_;
  bool failed_ = false;
  std::string error_;
  // Fields are named as "<scope>[<index>].<field>" in errors; the scope is
  // the op argument being read (set by Scope).
  const char* scope_ = nullptr;
  int64_t index_ = -1;
};

// Names the op argument a group of fields belongs to, for errors.
class Scope {
 public:
  Scope(Reader& r, const char* name, int64_t index = -1)
      : r_(r), saved_(r.scope_), saved_index_(r.index_) {
    r.scope_ = name;
    r.index_ = index;
  }
  ~Scope() {
    r_.scope_ = saved_;
    r_.index_ = saved_index_;
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Reader& r_;
  const char* saved_;
  int64_t saved_index_;
};

}  // namespace qm::wire

#endif  // QM_CORE_WIRE_H_
