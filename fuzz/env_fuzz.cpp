// Fuzzes env::expand. Properties: text with every `$` doubled expands back to itself; text
// without `$` is unchanged; with every variable empty the output is never longer than the
// input; values are never expanded again (a lookup whose values are themselves `$NAME`
// references is called exactly as often as one whose values are empty); whether the text
// expands does not depend on the values, only on which names are set.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include <tpt/env.hpp>

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): the name libFuzzer calls.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);

    int empty_calls = 0;
    const tpt::env::Lookup empty = [&empty_calls](std::string_view) -> std::optional<std::string> {
        ++empty_calls;
        return std::string();
    };
    int tricky_calls = 0;
    const tpt::env::Lookup tricky =
        [&tricky_calls](std::string_view name) -> std::optional<std::string> {
        ++tricky_calls;
        return "<$" + std::string(name) + " ${" + std::string(name) + "}$>";
    };
    const tpt::env::Lookup unset = [](std::string_view) -> std::optional<std::string> {
        return std::nullopt;
    };

    std::string escaped;
    for (const char c : text) {
        escaped += c;
        if (c == '$') {
            escaped += '$';
        }
    }
    const auto back = tpt::env::expand(escaped, unset);
    check(back.has_value() && *back == text);

    const auto with_empty = tpt::env::expand(text, empty);
    const auto with_tricky = tpt::env::expand(text, tricky);
    check(with_empty.has_value() == with_tricky.has_value());
    check(empty_calls == tricky_calls);
    if (with_empty) {
        check(with_empty->size() <= text.size());
    } else {
        check(!with_empty.error().message.empty() &&
              with_empty.error().message == with_tricky.error().message);
    }
    if (text.find('$') == std::string_view::npos) {
        check(with_empty.has_value() && *with_empty == text && empty_calls == 0);
    }

    const auto with_unset = tpt::env::expand(text, unset);
    check(!with_unset.has_value() || with_empty.has_value());
    return 0;
}
