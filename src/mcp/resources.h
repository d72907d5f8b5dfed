// The MCP resources of qm: the server's state as readable JSON documents,
// read from the server each time (nothing is cached or computed here).
//
//   qm://status       GET /v1/status: capacity, use, the queue's counts
//   qm://costs/today  GET /v1/costs: the current budget period's spend
//   qm://config       GET /v1/config: the config the server runs under
//
// Thread safety: the table is immutable; reads may run concurrently.
#ifndef QM_MCP_RESOURCES_H_
#define QM_MCP_RESOURCES_H_

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "mcp/backend.h"

namespace qm::mcp {

struct Resource {
  std::string uri, name, title, description;
  std::string mime_type = "application/json";
  // The route read for it.
  std::string target;

  // The resources/list entry.
  nlohmann::json ToJson() const;
};

// The resources, in the order resources/list gives them.
const std::vector<Resource>& Resources();
// The resource with `uri`, or null.
const Resource* FindResource(std::string_view uri);

// Reads `r` from the server: its `result` (the document) or the error.
ApiAnswer ReadResource(Backend& backend, const Resource& r);

// What a subscription compares to see whether `document` (a reading of
// `r`) changed: the document without the fields that change with the
// clock alone (the reading's time; the oldest wait, fair-share decay, burn
// rate and projections, which move while nothing happens).
std::string Fingerprint(const Resource& r, const nlohmann::json& document);

}  // namespace qm::mcp

#endif  // QM_MCP_RESOURCES_H_
