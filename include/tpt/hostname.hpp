// hostname: what counts as a host name in an SNI or a CONNECT target; ASCII case folding. ◇
// Thread affinity: none (pure functions).
#pragma once

#include <string>
#include <string_view>

namespace tpt::hostname {

// SPEC §4.2: letters, digits, '-', '_', '.'; 1..253 bytes; no empty label (so no leading,
// trailing or doubled dot); each label at most 63 bytes.
bool is_valid(std::string_view name) noexcept;

// ASCII-only lower-casing (SNI is ASCII; bytes >= 0x80 are left alone).
std::string to_lower(std::string_view text);

}  // namespace tpt::hostname
