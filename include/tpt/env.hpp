// env: ${VAR}, ${VAR:-default}, $VAR, $$ and ${file:/path} expansion of config strings. ◇
// Thread affinity: none; process_environment() reads environ and file_system() reads files,
// both for the control thread.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tpt/outcome.hpp>

namespace tpt::env {

// Returns the value of a variable, or nullopt when it is unset.
using Lookup = std::function<std::optional<std::string>(std::string_view name)>;

// Returns the content of the file at an absolute path, or an error whose message names the
// path (and why it could not be read), never any of its content.
using FileReader = std::function<Result<std::string>(std::string_view path)>;

// Expands once, left to right; expanded text is never expanded again.
//   $$            -> $
//   ${NAME}       -> value; unset -> error naming NAME
//   ${NAME:-text} -> value if set and non-empty, else text (text is literal, not expanded)
//   $NAME         -> value; NAME is [A-Za-z_][A-Za-z0-9_]*; unset -> error naming NAME
//   a `$` followed by anything else (or by nothing) is kept literally.
// A ${...} ends at its first `}`, so a default cannot contain `}`: "${A:-x}y}" is the value
// of A (or "x") followed by the literal "y}". Nothing nests: "${A${B}}" is an invalid name.
// Errors: unterminated "${", empty or invalid name inside ${...} (also "${:-x}", "${A:x}"),
// unset variable, and any ${file:...} (only the overload below reads files).
Result<std::string> expand(std::string_view text, const Lookup& lookup);

// What expand() with files gives: the text, and the files it read (in order, each once).
struct Expansion {
    std::string value;
    std::vector<std::string> files;
};

// As above, plus SPEC §13's ${file:PATH}: the content of the file at PATH with one trailing
// newline ("\n" or "\r\n") stripped; the content is not expanded again. PATH may itself hold
// the variable forms above (`${file:${CREDS:-/etc/creds}/password}`: the path's ${...} ends
// at its first `}`, the file reference at the next one) and must be absolute once expanded.
// Defaults stay literal, as above: "${PW:-${file:/p}}" is the value of PW, else the text
// "${file:/p" followed by "}" — it meant that before files existed, and still does.
// Errors: those above, an empty or relative path, and `read_file`'s error (naming the path).
Result<Expansion> expand(std::string_view text, const Lookup& lookup, const FileReader& read_file);

// What ${file:PATH} gives for an absolute `path`: the content `read_file` returns, one
// trailing newline stripped.
Result<std::string> file_value(const FileReader& read_file, std::string_view path);

// Lookup over the process environment (getenv).
Lookup process_environment();

// The largest file ${file:} reads: a credential, never a document.
inline constexpr std::size_t max_file_bytes = std::size_t{64} * 1024;

// FileReader over the file system (follows symlinks, as a Secret volume's are): errors for a
// missing or unreadable file, a directory, and a file over max_file_bytes.
FileReader file_system();

}  // namespace tpt::env
