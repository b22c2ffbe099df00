// hostname: the lexical rules of names on the wire: host names (an SNI, a CONNECT target, an
// upstream host), HTTP tokens (header names, auth schemes); ASCII case folding. ◇
// Thread affinity: none (pure functions).
#pragma once

#include <string>
#include <string_view>

namespace tpt::hostname {

// SPEC §4.2: letters, digits, '-', '_', '.'; 1..253 bytes; no empty label (so no leading,
// trailing or doubled dot); each label at most 63 bytes.
bool is_valid(std::string_view name) noexcept;

// RFC 9110 §5.6.2: tchar is a letter, a digit or one of !#$%&'*+-.^_`|~; token = 1*tchar.
bool is_token_char(char c) noexcept;
bool is_token(std::string_view text) noexcept;

// ASCII-only lower-casing (SNI is ASCII; bytes >= 0x80 are left alone).
std::string to_lower(std::string_view text);

}  // namespace tpt::hostname
