#include "detail.hpp"

#include <algorithm>
#include <array>

#include <arpa/inet.h>
#include <netinet/in.h>

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

}  // namespace

std::string yaml_key(std::string_view key) {
    const bool plain = !key.empty() && std::none_of(key.begin(), key.end(), [](char c) {
        return is_control(c) || std::string_view{".*[] \"'\\"}.find(c) != std::string_view::npos;
    });
    if (plain) {
        return printable(key, max_key_bytes);
    }
    std::string out = "\"";
    for (const char c : key.substr(0, max_key_bytes)) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (is_control(c)) {
            append_hex_escape(out, c);
        } else {
            out += c;
        }
    }
    if (key.size() > max_key_bytes) {
        out += "...";
    }
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
    out.reserve(std::min(text.size(), max_bytes) + 3);
    for (const char c : text.substr(0, max_bytes)) {
        if (is_control(c)) {
            append_hex_escape(out, c);
        } else {
            out += c;
        }
    }
    if (text.size() > max_bytes) {
        out += "...";
    }
    return out;
}

std::string normalise_ip(std::string_view text) {
    const std::string s(text);
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
