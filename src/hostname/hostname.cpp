#include <algorithm>
#include <cstddef>

#include <tpt/hostname.hpp>

namespace tpt::hostname {

namespace {

constexpr std::size_t max_name = 253;  // RFC 1035 §2.3.4, without the root's trailing dot
constexpr std::size_t max_label = 63;

constexpr bool is_name_byte(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

}  // namespace

bool is_valid(std::string_view name) noexcept {
    if (name.empty() || name.size() > max_name) {
        return false;
    }
    std::size_t label = 0;
    for (const char c : name) {
        if (c == '.') {
            if (label == 0) {
                return false;
            }
            label = 0;
        } else if (is_name_byte(c)) {
            if (++label > max_label) {
                return false;
            }
        } else {
            return false;
        }
    }
    return label != 0;
}

bool is_token_char(char c) noexcept {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return true;
    }
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) noexcept {
    return !text.empty() && std::all_of(text.begin(), text.end(), is_token_char);
}

std::string to_lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return out;
}

}  // namespace tpt::hostname
