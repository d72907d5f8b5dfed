#include "mcp/resources.h"

#include <chrono>

namespace qm::mcp {
namespace {

using Json = nlohmann::json;

std::vector<Resource> MakeResources() {
  std::vector<Resource> r(3);
  r[0].uri = "qm://status";
  r[0].name = "status";
  r[0].title = "qm status";
  r[0].description =
      "The qm server's status snapshot: capacity, allocated, reserved and "
      "available amounts per resource, running and queued agents per agent "
      "type and product, and the allocation counts (GET /v1/status).";
  r[0].target = "/v1/status";
  r[1].uri = "qm://costs/today";
  r[1].name = "costs";
  r[1].title = "qm costs, current budget period";
  r[1].description =
      "Tokens and dollars spent in the current budget period (a day unless "
      "the config says otherwise) against the budgets, per model, product "
      "and agent type, with the burn rate, alerts and the circuit breaker "
      "(GET /v1/costs).";
  r[1].target = "/v1/costs";
  r[2].uri = "qm://config";
  r[2].name = "config";
  r[2].title = "qm effective config";
  r[2].description =
      "The config the qm server runs under, every default filled in: "
      "resources, limits, budgets, prices, policies (GET /v1/config; needs "
      "an operator token when tokens are configured).";
  r[2].target = "/v1/config";
  return r;
}

void Erase(Json* obj, const char* key) {
  if (obj->is_object()) obj->erase(key);
}

}  // namespace

Json Resource::ToJson() const {
  return Json{{"uri", uri},
              {"name", name},
              {"title", title},
              {"description", description},
              {"mimeType", mime_type}};
}

const std::vector<Resource>& Resources() {
  static const std::vector<Resource> kResources = MakeResources();
  return kResources;
}

const Resource* FindResource(std::string_view uri) {
  for (const Resource& r : Resources()) {
    if (r.uri == uri) return &r;
  }
  return nullptr;
}

ApiAnswer ReadResource(Backend& backend, const Resource& r) {
  return CallApi(backend, "GET", r.target, Json(), std::chrono::seconds(10));
}

std::string Fingerprint(const Resource& r, const Json& document) {
  Json d = document;
  Erase(&d, "time");
  if (r.uri == "qm://status") {
    if (d.contains("allocations")) Erase(&d["allocations"], "oldest_wait");
    if (d.contains("products") && d["products"].is_object()) {
      for (auto& [name, p] : d["products"].items()) {
        Erase(&p, "decayed_agent_minutes");
        Erase(&p, "share");
      }
    }
  } else if (r.uri == "qm://costs/today") {
    Erase(&d, "burn_rate");
    Erase(&d, "projected_eod");
  }
  return d.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace qm::mcp
