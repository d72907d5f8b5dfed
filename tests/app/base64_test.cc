// Base64 for the state export: RFC 4648's vectors, round trips, and strict
// decoding (one encoding per byte string; errors say where).
#include "api/base64.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace qm::api {
namespace {

TEST(Base64Test, EncodesTheRfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(Base64Encode(plain), encoded) << plain;
    auto decoded = Base64Decode(encoded);
    ASSERT_TRUE(decoded.ok()) << encoded << ": " << decoded.status().ToString();
    EXPECT_EQ(*decoded, plain);
  }
}

TEST(Base64Test, RoundTripsEveryByteAndEveryLength) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(*Base64Decode(Base64Encode(all)), all);
  EXPECT_EQ(Base64Encode(std::string("\xff\xfe\xfd", 3)), "//79");
  std::mt19937 rng(42);
  for (size_t n = 0; n < 100; ++n) {
    std::string bytes(n, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    const std::string text = Base64Encode(bytes);
    EXPECT_EQ(text.size(), (n + 2) / 3 * 4);
    auto back = Base64Decode(text);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, bytes);
  }
}

TEST(Base64Test, RejectsAnythingButTheCanonicalEncoding) {
  const std::pair<std::string, const char*> bad[] = {
      {"Zg=", "not a multiple of 4"},
      {"Zm9", "not a multiple of 4"},
      {"Zh==", "non-zero unused bits"},  // "f" is Zg==
      {"Zm9=", "non-zero unused bits"},  // "fo" is Zm8=
      {"Zm9v\nZm9v", "not a multiple of 4"},
      {"Zm9vZ\nm9", "byte 0x0a at offset 5"},
      {"Zg==Zg==", "'=' at offset 2 (padding only at the end)"},
      {"Z===", "'=' at offset 1"},
      {"====", "'=' at offset 0"},
      {"Zm9-", "'-' at offset 3 (not a base64 character)"},
      {"Zm9_", "'_' at offset 3"},
      {std::string("Zm\0v", 4), "byte 0x00 at offset 2"},
      {"Zm9v Zm9", "' ' at offset 4"},
  };
  for (const auto& [text, message] : bad) {
    auto r = Base64Decode(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
    EXPECT_NE(r.status().message().find(message), std::string::npos)
        << r.status().message();
  }
}

}  // namespace
}  // namespace qm::api
