// Fuzzes env::expand. Properties: text with every `$` doubled expands back to itself; text
// without `$` is unchanged; with every variable empty the output is never longer than the
// input; values are never expanded again (a lookup whose values are themselves `$NAME`
// references is called exactly as often as one whose values are empty); whether the text
// expands does not depend on the values, only on which names are set. ${file:} (SPEC §13)
// through a fake reader (no file is ever read): text without "file:" expands as without a
// reader and reads nothing; the reader is asked only for absolute paths, each path listed
// once; escaped text reads no file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tpt/env.hpp>

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

// A path holding "missing" is not found; any other reads as "<" + path + ">\n".
tpt::Result<std::string> fake_file(std::string_view path) {
    check(path.starts_with('/'));
    if (path.find("missing") != std::string_view::npos) {
        return tpt::Error{"cannot read " + std::string(path)};
    }
    return tpt::Result<std::string>(boost::system::in_place_value, "<" + std::string(path) + ">\n");
}

void check_files(std::string_view text, const std::string& escaped,
                 const tpt::env::Lookup& lookup) {
    int reads = 0;
    const tpt::env::FileReader reader = [&reads](std::string_view path) {
        ++reads;
        return fake_file(path);
    };
    const auto back = tpt::env::expand(escaped, lookup, reader);
    check(back.has_value() && back->value == text && back->files.empty() && reads == 0);

    const auto with_files = tpt::env::expand(text, lookup, reader);
    if (text.find("file:") == std::string_view::npos) {
        const auto without = tpt::env::expand(text, lookup);
        check(with_files.has_value() == without.has_value() && reads == 0);
        check(!with_files || (with_files->value == *without && with_files->files.empty()));
        return;
    }
    if (with_files) {
        const auto& files = with_files->files;
        for (std::size_t i = 0; i < files.size(); ++i) {
            check(files[i].starts_with('/'));
            for (std::size_t j = 0; j < i; ++j) {
                check(files[j] != files[i]);
            }
        }
        check(static_cast<std::size_t>(reads) >= files.size());
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
    check_files(text, escaped, empty);
    return 0;
}
