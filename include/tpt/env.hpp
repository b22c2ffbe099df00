// env: ${VAR}, ${VAR:-default}, $VAR and $$ expansion of config strings. ◇
// Thread affinity: none; process_environment() reads environ and is for the control thread.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <tpt/outcome.hpp>

namespace tpt::env {

// Returns the value of a variable, or nullopt when it is unset.
using Lookup = std::function<std::optional<std::string>(std::string_view name)>;

// Expands once, left to right; expanded text is never expanded again.
//   $$            -> $
//   ${NAME}       -> value; unset -> error naming NAME
//   ${NAME:-text} -> value if set and non-empty, else text (text is literal, not expanded)
//   $NAME         -> value; NAME is [A-Za-z_][A-Za-z0-9_]*; unset -> error naming NAME
//   a `$` followed by anything else (or by nothing) is kept literally.
// A ${...} ends at its first `}`, so a default cannot contain `}`: "${A:-x}y}" is the value
// of A (or "x") followed by the literal "y}". Nothing nests: "${A${B}}" is an invalid name.
// Errors: unterminated "${", empty or invalid name inside ${...} (also "${:-x}", "${A:x}"),
// unset variable.
Result<std::string> expand(std::string_view text, const Lookup& lookup);

// Lookup over the process environment (getenv).
Lookup process_environment();

}  // namespace tpt::env
