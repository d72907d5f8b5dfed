// YAML to JSON for documents that embed API requests (scenarios) or are
// shown as JSON (the effective config). Plain scalars are typed (integers,
// numbers, true/false, null); quoted scalars stay strings.
#ifndef QM_SIM_YAML_JSON_H_
#define QM_SIM_YAML_JSON_H_

#include <yaml-cpp/node/node.h>

#include "api/json_codec.h"

namespace qm::sim {

api::Json ToJsonValue(const YAML::Node& node);

}  // namespace qm::sim

#endif  // QM_SIM_YAML_JSON_H_
