// The Redis peer: the usual semaphore-with-TTL recipe. The semaphore is a
// sorted set of holders scored by their expiry (ms, Redis's own clock);
// acquire is one EVALSHA of a Lua script (drop expired holders, and if
// fewer than `capacity` remain, add this one), release is one ZREM. Both
// are write commands, so with `appendonly yes` and `appendfsync always`
// the server appends them to its AOF and fsyncs it before it answers.
//
// Round trips per pair: 2 (the same as qm: allocate, release).
//
// Built only when CMake finds hiredis (QM_PEER_HAVE_HIREDIS); otherwise
// MakeRedisPeer returns null.
#include <memory>
#include <string>

#include "peers/peer.h"

#ifdef QM_PEER_HAVE_HIREDIS

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <cstdlib>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace qm::bench {
namespace {

// KEYS[1] the sorted set; ARGV[1] capacity, ARGV[2] TTL in ms, ARGV[3] the
// holder. Returns 1 when the slot is granted, 0 when all are taken.
constexpr char kAcquireScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  return 1
end
return 0
)lua";

constexpr char kKey[] = "qm-peer:semaphore";

struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, ContextFree>;
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// "host:port" -> a connected context, or UNAVAILABLE.
StatusOr<ContextPtr> Dial(const std::string& addr) {
  const size_t colon = addr.rfind(':');
  if (colon == std::string::npos) {
    return InvalidRequest("redis address must be host:port, not " + addr);
  }
  const std::string host = addr.substr(0, colon);
  const int port = std::atoi(addr.c_str() + colon + 1);
  const timeval timeout{5, 0};
  ContextPtr c(redisConnectWithTimeout(host.c_str(), port, timeout));
  if (!c) return Unavailable("redis: out of memory connecting to " + addr);
  if (c->err) {
    return Unavailable("redis at " + addr + ": " + std::string(c->errstr));
  }
  if (redisSetTimeout(c.get(), timeout) != REDIS_OK) {
    return Unavailable("redis: cannot set the socket timeout");
  }
  return c;
}

// Runs a command; an I/O error or an error reply becomes a Status.
StatusOr<ReplyPtr> Command(redisContext* c, int argc, const char** argv,
                           const size_t* lens) {
  ReplyPtr r(static_cast<redisReply*>(redisCommandArgv(c, argc, argv, lens)));
  if (!r) {
    return Unavailable("redis: " +
                       std::string(c->err ? c->errstr : "no reply"));
  }
  if (r->type == REDIS_REPLY_ERROR) {
    return Internal("redis: " + std::string(r->str, r->len));
  }
  return r;
}

StatusOr<ReplyPtr> Command(redisContext* c,
                           std::initializer_list<std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return Command(c, static_cast<int>(argv.size()), argv.data(), lens.data());
}

class RedisClient : public PeerClient {
 public:
  RedisClient(ContextPtr c, const PeerOptions& o, std::string sha)
      : c_(std::move(c)),
        sha_(std::move(sha)),
        capacity_(std::to_string(o.capacity)),
        ttl_ms_(std::to_string(o.ttl_seconds * 1000)) {}

  Status Acquire(const std::string& holder) override {
    auto r = Command(c_.get(),
                     {"EVALSHA", sha_, "1", kKey, capacity_, ttl_ms_, holder});
    if (!r.ok() && r.status().message().find("NOSCRIPT") != std::string::npos) {
      // The script cache was flushed: EVAL loads it again.
      r = Command(c_.get(), {"EVAL", kAcquireScript, "1", kKey, capacity_,
                             ttl_ms_, holder});
    }
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_INTEGER) {
      return Internal("redis: the acquire script answered no integer");
    }
    if ((*r)->integer != 1) return ResourceExhausted("redis: no free slot");
    holder_ = holder;
    return Status::Ok();
  }

  Status Release() override {
    auto r = Command(c_.get(), {"ZREM", kKey, holder_});
    if (!r.ok()) return r.status();
    if ((*r)->type != REDIS_REPLY_INTEGER || (*r)->integer != 1) {
      return NotFound("redis: holder " + holder_ + " was gone at release");
    }
    return Status::Ok();
  }

 private:
  ContextPtr c_;
  const std::string sha_;
  const std::string capacity_;
  const std::string ttl_ms_;
  std::string holder_;
};

class RedisPeer : public Peer {
 public:
  explicit RedisPeer(PeerOptions o) : o_(std::move(o)) {}

  Status Setup() override {
    auto c = Dial(o_.addr);
    if (!c.ok()) return c.status();
    // A fresh semaphore: no holders from an earlier run.
    auto del = Command(c->get(), {"DEL", kKey});
    if (!del.ok()) return del.status();
    auto load = Command(c->get(), {"SCRIPT", "LOAD", kAcquireScript});
    if (!load.ok()) return load.status();
    if ((*load)->type != REDIS_REPLY_STRING) {
      return Internal("redis: SCRIPT LOAD answered no string");
    }
    sha_.assign((*load)->str, (*load)->len);
    // Read back how durable the server is.
    durability_.clear();
    for (const char* name : {"appendonly", "appendfsync"}) {
      auto v = Command(c->get(), {"CONFIG", "GET", name});
      if (!v.ok()) return v.status();
      if ((*v)->type != REDIS_REPLY_ARRAY || (*v)->elements != 2) {
        return Internal(std::string("redis: CONFIG GET ") + name +
                        " answered no pair");
      }
      const redisReply* val = (*v)->element[1];
      if (!durability_.empty()) durability_ += ", ";
      durability_ += name;
      durability_ += " ";
      durability_.append(val->str, val->len);
    }
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<PeerClient>> Connect(int) override {
    auto c = Dial(o_.addr);
    if (!c.ok()) return c.status();
    return std::unique_ptr<PeerClient>(
        std::make_unique<RedisClient>(std::move(*c), o_, sha_));
  }

  std::string durability() const override { return durability_; }
  int round_trips_per_pair() const override { return 2; }

 private:
  const PeerOptions o_;
  std::string sha_;
  std::string durability_;
};

}  // namespace

std::unique_ptr<Peer> MakeRedisPeer(const PeerOptions& options) {
  return std::make_unique<RedisPeer>(options);
}

}  // namespace qm::bench

#else  // !QM_PEER_HAVE_HIREDIS

namespace qm::bench {

std::unique_ptr<Peer> MakeRedisPeer(const PeerOptions&) { return nullptr; }

}  // namespace qm::bench

#endif  // QM_PEER_HAVE_HIREDIS
