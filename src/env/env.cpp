#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include <tpt/env.hpp>

#include <sys/stat.h>

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

Error unterminated(std::size_t offset) {
    return Error{"unterminated \"${\" at offset " + std::to_string(offset)};
}

constexpr std::string_view file_prefix = "file:";

// The length of a ${file:...} body (after "file:") up to its closing `}`, skipping the
// ${...} references inside it (each ends at its first `}`); npos when it is unterminated.
std::size_t file_body_length(std::string_view body) noexcept {
    std::size_t i = 0;
    while (i < body.size() && body[i] != '}') {
        if (body.substr(i).starts_with("$$")) {
            i += 2;
        } else if (body.substr(i).starts_with("${")) {
            const std::size_t close = body.find('}', i + 2);
            if (close == std::string_view::npos) {
                return std::string_view::npos;
            }
            i = close + 1;
        } else {
            ++i;
        }
    }
    return i < body.size() ? i : std::string_view::npos;
}

// One left-to-right pass over the forms. Each form's reader appends its value to out_ and
// returns where the text continues.
class Expander {
public:
    Expander(const Lookup& lookup, const FileReader* read_file, std::vector<std::string>* files)
        : lookup_(lookup), read_file_(read_file), files_(files) {}

    Result<std::string> run(std::string_view text) {
        out_.reserve(text.size());
        std::size_t pos = 0;
        while (pos < text.size()) {
            const std::size_t dollar = text.find('$', pos);
            if (dollar == std::string_view::npos) {
                out_.append(text.substr(pos));
                break;
            }
            out_.append(text.substr(pos, dollar - pos));
            const std::string_view rest = text.substr(dollar + 1);
            Result<std::size_t> next = dollar + 1;
            if (rest.starts_with('$')) {
                out_.push_back('$');
                next = dollar + 2;
            } else if (rest.starts_with('{')) {
                next = braced(rest.substr(1), dollar);
            } else {
                next = bare(rest, dollar);
            }
            if (!next) {
                return next.error();
            }
            pos = *next;
        }
        // Tagged: an Error can be made from a string too, so a plain string would be ambiguous.
        return Result<std::string>{boost::system::in_place_value, std::move(out_)};
    }

private:
    // ${NAME}, ${NAME:-text} or ${file:PATH}; `body` follows the "${" at `dollar`.
    Result<std::size_t> braced(std::string_view body, std::size_t dollar) {
        if (body.starts_with(file_prefix) && read_file_ != nullptr) {
            return file(body.substr(file_prefix.size()), dollar);
        }
        const std::size_t close = body.find('}');
        if (close == std::string_view::npos) {
            return unterminated(dollar);
        }
        const std::size_t n = name_length(body);
        const std::string_view name = body.substr(0, n);
        const std::string_view after = body.substr(n, close - n);
        if (n == 0 || (!after.empty() && !after.starts_with(":-"))) {
            std::string why = "invalid variable reference \"${" +
                              std::string(body.substr(0, close)) +
                              "}\": expected ${NAME} or ${NAME:-default}, NAME being "
                              "[A-Za-z_][A-Za-z0-9_]*";
            if (body.starts_with(file_prefix)) {
                why += " (${file:...} is not available here)";
            }
            return Error{std::move(why)};
        }
        const std::optional<std::string> value = lookup_(name);
        if (after.empty()) {
            if (!value) {
                return unset(name);
            }
            out_ += *value;
        } else if (value && !value->empty()) {
            out_ += *value;
        } else {
            out_.append(after.substr(2));
        }
        return dollar + 2 + close + 1;
    }

    // $NAME, or a `$` kept as it is; `rest` follows the `$` at `dollar`.
    Result<std::size_t> bare(std::string_view rest, std::size_t dollar) {
        const std::size_t n = name_length(rest);
        if (n == 0) {
            out_.push_back('$');
            return dollar + 1;
        }
        const std::string_view name = rest.substr(0, n);
        const std::optional<std::string> value = lookup_(name);
        if (!value) {
            return unset(name);
        }
        out_ += *value;
        return dollar + 1 + n;
    }

    // ${file:PATH}; `body` follows the "${file:" at `dollar`.
    Result<std::size_t> file(std::string_view body, std::size_t dollar) {
        const std::size_t length = file_body_length(body);
        if (length == std::string_view::npos) {
            return unterminated(dollar);
        }
        auto path = expand(body.substr(0, length), lookup_);
        if (!path) {
            return Error{"in the path of ${file:...}: " + path.error().message};
        }
        if (!path->starts_with('/')) {
            return Error{"${file:" + *path + "}: the path must be absolute"};
        }
        auto content = file_value(*read_file_, *path);
        if (!content) {
            return content.error();
        }
        out_ += *content;
        if (std::find(files_->begin(), files_->end(), *path) == files_->end()) {
            files_->push_back(std::move(*path));
        }
        return dollar + 2 + file_prefix.size() + length + 1;
    }

    const Lookup& lookup_;
    const FileReader* read_file_;      // nullptr: ${file:} is an error
    std::vector<std::string>* files_;  // with read_file_
    std::string out_;
};

}  // namespace

Result<std::string> expand(std::string_view text, const Lookup& lookup) {
    return Expander(lookup, nullptr, nullptr).run(text);
}

Result<Expansion> expand(std::string_view text, const Lookup& lookup, const FileReader& read_file) {
    Expansion out;
    auto value = Expander(lookup, &read_file, &out.files).run(text);
    if (!value) {
        return value.error();
    }
    out.value = std::move(*value);
    return out;
}

Result<std::string> file_value(const FileReader& read_file, std::string_view path) {
    auto content = read_file(path);
    if (content && content->ends_with('\n')) {
        content->resize(content->size() - (content->ends_with("\r\n") ? 2 : 1));
    }
    return content;
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

FileReader file_system() {
    return [](std::string_view path_view) -> Result<std::string> {
        const std::string path(path_view);
        const auto failed = [&](std::string_view why) {
            return Error{"${file:" + path + "}: " + std::string(why)};
        };
        if (path.find('\0') != std::string::npos) {
            return failed("the path holds a NUL byte");
        }
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            return failed(std::string("cannot read: ") + std::strerror(errno));
        }
        if (!S_ISREG(st.st_mode)) {
            return failed("not a regular file");
        }
        std::ifstream in(path, std::ios::binary);
        if (!in) {
            return failed(std::string("cannot read: ") + std::strerror(errno));
        }
        std::string content;
        content.resize(max_file_bytes + 1);
        in.read(content.data(), static_cast<std::streamsize>(content.size()));
        if (in.bad()) {
            return failed("read error");
        }
        content.resize(static_cast<std::size_t>(in.gcount()));
        if (content.size() > max_file_bytes) {
            return failed("larger than " + std::to_string(max_file_bytes / 1024) + " KiB");
        }
        return Result<std::string>{boost::system::in_place_value, std::move(content)};
    };
}

}  // namespace tpt::env
