// Private helpers of the config module: YAML paths for messages, printable excerpts, IP
// normalisation. Thread affinity: none (pure functions).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tpt::config {

// A map key as a YAML path segment: as is when it is a plain word, else double-quoted with
// `"` and `\` escaped. Quoted when it is empty or holds `.`, `*`, `[`, `]`, a space, a quote,
// a backslash or a control character, so servers.proxy.sni."a.example" reads unambiguously.
std::string yaml_key(std::string_view key);

// parent + "." + yaml_key(key); just yaml_key(key) when parent is empty.
std::string yaml_child(std::string_view parent, std::string_view key);

// parent + "[i]".
std::string yaml_index(std::string_view parent, std::size_t i);

// Text for a message: control bytes and bytes that are not valid UTF-8 as \xHH, at most
// max_bytes of the input kept (then "..."), so a message is always valid UTF-8 on one line.
std::string printable(std::string_view text, std::size_t max_bytes = 200);

// True when text is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates).
bool is_valid_utf8(std::string_view text) noexcept;

// RFC 4648 §4 base64 (with padding) of bytes: the credentials of Basic auth (RFC 7617).
std::string base64(std::string_view bytes);

// The canonical text of an IPv4 or IPv6 literal ("0:0::1" -> "::1"), or text unchanged when
// it is not one, so equal addresses compare equal as strings.
std::string normalise_ip(std::string_view text);

}  // namespace tpt::config
