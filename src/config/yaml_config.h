// Building a qm::Config from an already parsed YAML node. Internal to qm: the
// file and string loaders (qm/config_loader.h) use it, and so does the
// simulator, which embeds a config as a mapping inside a scenario document.
#ifndef QM_CONFIG_YAML_CONFIG_H_
#define QM_CONFIG_YAML_CONFIG_H_

#include <yaml-cpp/node/node.h>

#include <string>
#include <string_view>

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
//
// `text`, when given, is the whole text the node was parsed from (the marks
// index into it). Errors inside a condition (auto_model_selection rules,
// circuit_breaker.trip_conditions) then point at the exact offending
// character of plain, single- and double-quoted scalars, escapes and line
// folding included; a block scalar (| or >) points at its start. Without
// `text` the column assumes a one-line scalar without escapes: exact for
// plain scalars and for quoted ones without escapes, and a block scalar
// without line breaks in its value is mistaken for a quoted one.
//
// `base_dir` is the directory a relative conflicts.workspace_root is
// resolved against: the directory of the file the configuration came from
// (made absolute against the working directory when relative). "" means the
// configuration has no file of its own, and a relative root is an error
// naming the key.
StatusOr<Config> ConfigFromYamlNode(const YAML::Node& node,
                                    const std::string& source,
                                    std::string_view text = {},
                                    const std::string& base_dir = "");

// "sunday" ... "saturday" for 0 ... 6: the names daily_limits.week_start
// takes. "" outside that range.
const char* WeekdayName(int day);

}  // namespace qm

#endif  // QM_CONFIG_YAML_CONFIG_H_
