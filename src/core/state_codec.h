// Internals of the engine's state format (state_codec.cc) that tests need.
#ifndef QM_CORE_STATE_CODEC_H_
#define QM_CORE_STATE_CODEC_H_

#include <cstdint>
#include <string_view>

namespace qm {

// The state format's 64-bit hash: the checksum in its trailer (over every
// byte before it) and Engine::StateDigest (over all of it). Unseeded and
// the same on every machine.
uint64_t StateHash(std::string_view bytes);

}  // namespace qm

#endif  // QM_CORE_STATE_CODEC_H_
