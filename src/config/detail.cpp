#include "detail.hpp"

#include <algorithm>
#include <array>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>

namespace tpt::config {

namespace {

// Long keys (a fuzzer's megabyte of "a") are cut in paths as in messages.
constexpr std::size_t max_key_bytes = 200;

bool is_control(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
}

void append_hex_escape(std::string& out, char c) {
    constexpr std::string_view digits = "0123456789abcdef";
    const auto u = static_cast<unsigned char>(c);
    out += "\\x";
    out += digits[u >> 4U];
    out += digits[u & 0xfU];
}

// Length of the well-formed UTF-8 sequence at text[i] (RFC 3629 §4 table), or 0.
std::size_t utf8_length(std::string_view text, std::size_t i) noexcept {
    const auto byte = [&](std::size_t k) -> unsigned {
        return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0x100U;
    };
    const auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xbf) {
        return byte(k) >= lo && byte(k) <= hi;
    };
    const unsigned b = byte(0);
    if (b < 0x80) {
        return 1;
    }
    if (b >= 0xc2 && b <= 0xdf) {
        return cont(1) ? 2 : 0;
    }
    if (b >= 0xe0 && b <= 0xef) {
        const unsigned lo = b == 0xe0 ? 0xa0 : 0x80;
        const unsigned hi = b == 0xed ? 0x9f : 0xbf;
        return cont(1, lo, hi) && cont(2) ? 3 : 0;
    }
    if (b >= 0xf0 && b <= 0xf4) {
        const unsigned lo = b == 0xf0 ? 0x90 : 0x80;
        const unsigned hi = b == 0xf4 ? 0x8f : 0xbf;
        return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
    }
    return 0;
}

// Appends text[0, max_bytes) with control bytes and broken UTF-8 as \xHH (and, when quoted,
// `"` and `\` backslash-escaped), then "..." if text was longer.
void append_escaped(std::string& out, std::string_view text, std::size_t max_bytes, bool quoted) {
    const std::string_view head = text.substr(0, max_bytes);
    out.reserve(out.size() + head.size() + 3);
    for (std::size_t i = 0; i < head.size();) {
        const char c = head[i];
        const std::size_t n = utf8_length(head, i);
        if (n == 0 || is_control(c)) {
            append_hex_escape(out, c);
            ++i;
            continue;
        }
        if (quoted && (c == '"' || c == '\\')) {
            out += '\\';
        }
        out.append(head.substr(i, n));
        i += n;
    }
    if (text.size() > max_bytes) {
        out += "...";
    }
}

}  // namespace

std::string yaml_key(std::string_view key) {
    const bool plain =
        !key.empty() && is_valid_utf8(key) && std::none_of(key.begin(), key.end(), [](char c) {
            return is_control(c) ||
                   std::string_view{".*[] \"'\\"}.find(c) != std::string_view::npos;
        });
    if (plain) {
        return printable(key, max_key_bytes);
    }
    std::string out = "\"";
    append_escaped(out, key, max_key_bytes, true);
    out += '"';
    return out;
}

std::string yaml_child(std::string_view parent, std::string_view key) {
    std::string out(parent);
    if (!out.empty()) {
        out += '.';
    }
    out += yaml_key(key);
    return out;
}

std::string yaml_index(std::string_view parent, std::size_t i) {
    std::string out(parent);
    out += '[';
    out += std::to_string(i);
    out += ']';
    return out;
}

std::string printable(std::string_view text, std::size_t max_bytes) {
    std::string out;
    append_escaped(out, text, max_bytes, false);
    return out;
}

bool is_valid_utf8(std::string_view text) noexcept {
    for (std::size_t i = 0; i < text.size();) {
        const std::size_t n = utf8_length(text, i);
        if (n == 0) {
            return false;
        }
        i += n;
    }
    return true;
}

std::string base64(std::string_view bytes) {
    // EVP_EncodeBlock writes 4 characters per 3 bytes (rounded up) and a NUL.
    std::string out((bytes.size() + 2) / 3 * 4 + 1, '\0');
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): OpenSSL takes unsigned bytes
    const auto* in = reinterpret_cast<const unsigned char*>(bytes.data());
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), in,
                                  static_cast<int>(bytes.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string normalise_ip(std::string_view text) {
    std::string s(text);
    std::array<char, INET6_ADDRSTRLEN> buf{};
    in6_addr v6{};
    if (inet_pton(AF_INET6, s.c_str(), &v6) == 1 &&
        inet_ntop(AF_INET6, &v6, buf.data(), buf.size()) != nullptr) {
        return buf.data();
    }
    in_addr v4{};
    if (inet_pton(AF_INET, s.c_str(), &v4) == 1 &&
        inet_ntop(AF_INET, &v4, buf.data(), buf.size()) != nullptr) {
        return buf.data();
    }
    return s;
}

}  // namespace tpt::config
