#include <cstdlib>

#include <tpt/env.hpp>

namespace tpt::env {

namespace {

constexpr bool is_name_start(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

constexpr bool is_name_byte(char c) noexcept {
    return is_name_start(c) || (c >= '0' && c <= '9');
}

// Length of the variable name at the start of text (0 when there is none).
std::size_t name_length(std::string_view text) noexcept {
    if (text.empty() || !is_name_start(text.front())) {
        return 0;
    }
    std::size_t n = 1;
    while (n < text.size() && is_name_byte(text[n])) {
        ++n;
    }
    return n;
}

Error unset(std::string_view name) {
    return Error{"environment variable " + std::string(name) + " is not set"};
}

}  // namespace

// One left-to-right scanner over the four forms ($$, ${NAME}, ${NAME:-text}, $NAME), over the
// 60-line rule on purpose: the forms share their position bookkeeping.
Result<std::string> expand(std::string_view text, const Lookup& lookup) {
    std::string out;
    out.reserve(text.size());
    std::size_t pos = 0;
    while (pos < text.size()) {
        const std::size_t dollar = text.find('$', pos);
        if (dollar == std::string_view::npos) {
            out.append(text.substr(pos));
            break;
        }
        out.append(text.substr(pos, dollar - pos));
        const std::string_view rest = text.substr(dollar + 1);
        if (!rest.empty() && rest.front() == '$') {
            out.push_back('$');
            pos = dollar + 2;
            continue;
        }
        if (!rest.empty() && rest.front() == '{') {
            const std::string_view body = rest.substr(1);
            const std::size_t close = body.find('}');
            if (close == std::string_view::npos) {
                return Error{"unterminated \"${\" at offset " + std::to_string(dollar)};
            }
            const std::size_t n = name_length(body);
            const std::string_view name = body.substr(0, n);
            const std::string_view after = body.substr(n, close - n);
            if (n == 0 || (!after.empty() && !after.starts_with(":-"))) {
                return Error{"invalid variable reference \"${" +
                             std::string(body.substr(0, close)) +
                             "}\": expected ${NAME} or ${NAME:-default}, NAME being "
                             "[A-Za-z_][A-Za-z0-9_]*"};
            }
            const std::optional<std::string> value = lookup(name);
            if (after.empty()) {
                if (!value) {
                    return unset(name);
                }
                out += *value;
            } else if (value && !value->empty()) {
                out += *value;
            } else {
                out.append(after.substr(2));
            }
            pos = dollar + 2 + close + 1;
            continue;
        }
        const std::size_t n = name_length(rest);
        if (n == 0) {
            out.push_back('$');
            pos = dollar + 1;
            continue;
        }
        const std::string_view name = rest.substr(0, n);
        const std::optional<std::string> value = lookup(name);
        if (!value) {
            return unset(name);
        }
        out += *value;
        pos = dollar + 1 + n;
    }
    // Tagged: an Error can be made from a string too, so a plain string would be ambiguous.
    return Result<std::string>{boost::system::in_place_value, std::move(out)};
}

Lookup process_environment() {
    return [](std::string_view name) -> std::optional<std::string> {
        // getenv needs a NUL-terminated name; a name with an embedded NUL cannot be set.
        if (name.find('\0') != std::string_view::npos) {
            return std::nullopt;
        }
        const char* value =
            std::getenv(std::string(name).c_str());  // NOLINT(concurrency-mt-unsafe)
        if (value == nullptr) {
            return std::nullopt;
        }
        return std::string(value);
    };
}

}  // namespace tpt::env
