#include "api/base64.h"

#include <array>
#include <cstdint>

namespace qm::api {
namespace {

constexpr char kAlphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// The 6-bit value of each character, or -1 for a character outside the
// alphabet.
constexpr std::array<int8_t, 256> MakeDecodeTable() {
  std::array<int8_t, 256> table{};
  for (auto& v : table) v = -1;
  for (int i = 0; i < 64; ++i) {
    table[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  }
  return table;
}
constexpr std::array<int8_t, 256> kDecode = MakeDecodeTable();

// "'x'" for a printable character, "byte 0x0a" otherwise.
std::string Describe(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string("'") + c + "'";
  constexpr char kHex[] = "0123456789abcdef";
  return std::string("byte 0x") + kHex[u >> 4] + kHex[u & 15];
}

}  // namespace

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v =
        static_cast<uint32_t>(static_cast<unsigned char>(bytes[i]) << 16) |
        static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1]) << 8) |
        static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i]))
                 << 16;
    if (rest == 2) {
      v |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    }
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

StatusOr<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return InvalidRequest("base64 text has " + std::to_string(text.size()) +
                          " characters, not a multiple of 4 (truncated?)");
  }
  // Padding: at most two '=', at the very end.
  size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') {
    ++pad;
  }
  const size_t data_chars = text.size() - pad;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < data_chars; ++i) {
    const int8_t v = kDecode[static_cast<unsigned char>(text[i])];
    if (v < 0) {
      return InvalidRequest("base64 text has " + Describe(text[i]) +
                            " at offset " + std::to_string(i) +
                            (text[i] == '=' ? " (padding only at the end)"
                                            : " (not a base64 character)"));
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  // 1 padding character leaves 2 spare bits, 2 leave 4: they must be zero.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return InvalidRequest(
        "base64 text has non-zero unused bits before its padding at offset " +
        std::to_string(data_chars - 1) + " (not a canonical encoding)");
  }
  return out;
}

}  // namespace qm::api
