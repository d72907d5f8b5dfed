// A validator for the subset of JSON Schema that qm's MCP tool schemas use,
// so a tool's `inputSchema` is both what clients are told and what the
// arguments are checked against (one source of truth).
//
// Keywords understood: type (a name or a list of names), properties,
// required, additionalProperties (false or a schema), items, enum, const,
// minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength,
// maxLength, minItems, maxItems, minProperties, oneOf, anyOf. Annotations
// (title, description, default, examples, format, $schema) are ignored;
// so is any other keyword, which is why SchemaKeywordsSupported exists:
// the tests check every tool schema with it.
//
// Thread safety: free functions on values.
#ifndef QM_MCP_JSON_SCHEMA_H_
#define QM_MCP_JSON_SCHEMA_H_

#include <nlohmann/json.hpp>
#include <string>

#include "qm/status.h"

namespace qm::mcp {

// Checks `value` against `schema`. OK, or INVALID_REQUEST whose message
// names the first offending place by its path from `path` ("arguments",
// "arguments.requirements.ttl_seconds", "arguments.exclusive_access[2]")
// and says what was expected, e.g. "arguments.priority: must be one of
// \"critical\", \"high\", \"normal\", \"low\", or an integer from 0 to 100".
Status ValidateJson(const nlohmann::json& schema, const nlohmann::json& value,
                    const std::string& path);

// Whether `schema` (recursively) uses only the keywords ValidateJson
// understands or ignores on purpose; when not, `*bad` (if given) is the
// first unknown keyword with its path.
bool SchemaKeywordsSupported(const nlohmann::json& schema,
                             std::string* bad = nullptr);

}  // namespace qm::mcp

#endif  // QM_MCP_JSON_SCHEMA_H_
