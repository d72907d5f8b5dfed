// The etcd peer, through etcd's JSON gateway to its gRPC API (HTTP/1.1 on
// the client port, keep-alive, keys and values in base64): the semaphore is
// `capacity` slot keys. Acquire grants a lease with the TTL
// (/v3/lease/grant), then puts a slot key with that lease in a transaction
// that succeeds only if the key does not exist (/v3/kv/txn, compare
// create_revision == 0), trying slots from a per-client offset until one
// succeeds. Release revokes the lease (/v3/lease/revoke), which deletes the
// key. Each of these is a Raft entry that etcd appends to its WAL and
// fsyncs (its default) before it answers. The calls go through qm_load's
// own HTTP client (bench/load/plain_http.h), so both pay the same client
// cost.
//
// Round trips per pair: 3 (lease grant, txn, revoke), one more than qm's
// allocate + release: a TTL per grant needs a lease of its own, and etcd
// grants a lease in a request of its own. With capacity >= clients a
// client's first slot is free (no other client starts there, and each
// holds at most one), so a grant takes one txn.
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "api/base64.h"
#include "load/plain_http.h"
#include "peers/peer.h"

namespace qm::bench {
namespace {

using Json = nlohmann::json;

// POSTs `body` to `target`; the parsed answer, or an error for a failed
// call, a non-200 status or an answer that is no JSON object.
StatusOr<Json> Post(PlainHttp& http, const char* target, const Json& body) {
  auto r = http.Call("POST", target, body.dump());
  if (!r.ok()) return r.status();
  if (r->status != 200) {
    return Internal(std::string("etcd ") + target + ": HTTP " +
                    std::to_string(r->status) + ": " + r->body);
  }
  Json j = Json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return Internal(std::string("etcd ") + target +
                    ": not a JSON object: " + r->body);
  }
  return j;
}

// The gateway writes 64-bit integers as JSON strings; accept both.
std::string IdText(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  return "";
}

class EtcdClient : public PeerClient {
 public:
  EtcdClient(const PeerOptions& o, int index)
      : http_("http://" + o.addr), o_(o), start_(index % o.capacity) {}

  Status Acquire(const std::string& holder) override {
    auto grant = Post(http_, "/v3/lease/grant", {{"TTL", o_.ttl_seconds}});
    if (!grant.ok()) return grant.status();
    const std::string lease = IdText(grant->value("ID", Json()));
    if (lease.empty()) {
      return Internal("etcd: lease grant answered no ID: " + grant->dump());
    }
    const std::string value = api::Base64Encode(holder);
    for (int i = 0; i < o_.capacity; ++i) {
      const std::string key = api::Base64Encode(
          "/qm-peer/slots/" + std::to_string((start_ + i) % o_.capacity));
      const Json txn = {
          {"compare", Json::array({{{"target", "CREATE"},
                                    {"result", "EQUAL"},
                                    {"key", key},
                                    {"create_revision", "0"}}})},
          {"success",
           Json::array(
               {{{"request_put",
                  {{"key", key}, {"value", value}, {"lease", lease}}}}})},
      };
      auto r = Post(http_, "/v3/kv/txn", txn);
      if (!r.ok()) {
        (void)Revoke(lease);
        return r.status();
      }
      // Protobuf's JSON leaves out false: no "succeeded" = the key exists.
      if (r->value("succeeded", false)) {
        lease_ = lease;
        return Status::Ok();
      }
    }
    (void)Revoke(lease);
    return ResourceExhausted("etcd: no free slot");
  }

  Status Release() override { return Revoke(lease_); }

 private:
  Status Revoke(const std::string& lease) {
    auto r = Post(http_, "/v3/lease/revoke", {{"ID", lease}});
    return r.ok() ? Status::Ok() : r.status();
  }

  PlainHttp http_;
  const PeerOptions o_;
  const int start_;
  std::string lease_;
};

class EtcdPeer : public Peer {
 public:
  explicit EtcdPeer(PeerOptions o) : o_(std::move(o)) {}

  Status Setup() override {
    PlainHttp http("http://" + o_.addr);
    // A fresh semaphore: no slot keys from an earlier run.
    const std::string from = api::Base64Encode("/qm-peer/slots/");
    const std::string to = api::Base64Encode("/qm-peer/slots0");  // '/' + 1
    auto del =
        Post(http, "/v3/kv/deleterange", {{"key", from}, {"range_end", to}});
    if (!del.ok()) return del.status();
    // etcd has no durability switch to read back over its API: it fsyncs
    // its WAL before answering unless started with --unsafe-no-fsync, which
    // bench/peers.sh does not pass.
    durability_ = "WAL fsync per Raft batch (default)";
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<PeerClient>> Connect(int index) override {
    return std::unique_ptr<PeerClient>(std::make_unique<EtcdClient>(o_, index));
  }

  std::string durability() const override { return durability_; }
  int round_trips_per_pair() const override { return 3; }

 private:
  const PeerOptions o_;
  std::string durability_;
};

}  // namespace

std::unique_ptr<Peer> MakeEtcdPeer(const PeerOptions& options) {
  return std::make_unique<EtcdPeer>(options);
}

}  // namespace qm::bench
