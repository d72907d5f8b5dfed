// Building a qm::Config from an already parsed YAML node. Internal to qm: the
// file and string loaders (qm/config_loader.h) use it, and so does the
// simulator, which embeds a config as a mapping inside a scenario document.
#ifndef QM_CONFIG_YAML_CONFIG_H_
#define QM_CONFIG_YAML_CONFIG_H_

#include <yaml-cpp/node/node.h>

#include <string>

#include "qm/config.h"
#include "qm/status.h"

namespace qm {

// Config::Defaults() with the keys of the mapping `node` applied and
// validated (the keys and rules are in docs/configuration.md). A null or
// undefined node gives the defaults.
//
// Errors are INVALID_REQUEST with the message
// "SOURCE:LINE:COLUMN: KEY.PATH: what is wrong", the position taken from the
// node's own marks, so a config embedded in a larger document reports the
// line and column inside that document. `source` is the name to print (a
// file path). Never throws.
StatusOr<Config> ConfigFromYamlNode(const YAML::Node& node,
                                    const std::string& source);

}  // namespace qm

#endif  // QM_CONFIG_YAML_CONFIG_H_
