// Base64 (RFC 4648 section 4: the standard alphabet, '=' padding), for
// carrying binary payloads inside JSON text (`qm state export` / `import`).
#ifndef QM_API_BASE64_H_
#define QM_API_BASE64_H_

#include <string>
#include <string_view>

#include "qm/status.h"

namespace qm::api {

// `bytes` as padded base64 text (4 characters per 3 bytes, rounded up).
std::string Base64Encode(std::string_view bytes);

// The bytes `text` encodes. Accepts exactly what Base64Encode writes: the
// standard alphabet, a length that is a multiple of 4, '=' padding only at
// the end and unused bits zero (so each byte string has one encoding).
// INVALID_REQUEST saying what is wrong and where (a 0-based character
// offset) otherwise; no whitespace or line breaks are allowed.
StatusOr<std::string> Base64Decode(std::string_view text);

}  // namespace qm::api

#endif  // QM_API_BASE64_H_
