// Loading and validating the YAML configuration (seed 001 resource-limits.yml
// keys and seed 000 resource_policies). Errors name `file:line:column` and the
// key path; unknown keys are errors with a "did you mean" suggestion.
#ifndef QM_CONFIG_LOADER_H_
#define QM_CONFIG_LOADER_H_

#include <string>

#include "qm/config.h"
#include "qm/status.h"

namespace qm {

// Reads and validates a config file. An empty file yields Config::Defaults().
// Errors: NOT_FOUND when the file cannot be read; INVALID_REQUEST for
// syntax errors, wrong types, out-of-range values and unknown keys.
StatusOr<Config> LoadConfigFile(const std::string& path);

// Same, from text; `source` names it in error messages.
StatusOr<Config> LoadConfigString(const std::string& yaml,
                                  const std::string& source = "<config>");

// The effective configuration as YAML, every default filled in. Loading the
// output again gives an equal configuration.
std::string ConfigToYaml(const Config& config);

}  // namespace qm

#endif  // QM_CONFIG_LOADER_H_
