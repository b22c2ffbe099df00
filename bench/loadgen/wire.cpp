// tpt_loadgen: request file, answers, request framing.
#include "wire.hpp"

#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace loadgen {

namespace {

std::uint32_t big_endian(std::string_view bytes, std::size_t at, std::size_t width) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < width; ++i) {
        v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
    }
    return v;
}

// The `width`-byte length at `at`, then that many bytes; advances `at`.
std::string take_counted(std::string_view file, std::size_t& at, const std::string& path) {
    if (at + 4 > file.size()) {
        throw std::runtime_error(path + ": truncated length at byte " + std::to_string(at));
    }
    const std::size_t n = big_endian(file, at, 4);
    at += 4;
    if (at + n > file.size()) {
        throw std::runtime_error(path + ": truncated record at byte " + std::to_string(at));
    }
    std::string out(file.substr(at, n));
    at += n;
    return out;
}

}  // namespace

std::vector<Request> load_requests(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error(path + ": cannot open");
    }
    const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<Request> out;
    std::size_t at = 0;
    while (at < file.size()) {
        if (at + 2 > file.size()) {
            throw std::runtime_error(path + ": truncated backend at byte " + std::to_string(at));
        }
        Request r;
        r.backend = static_cast<std::uint16_t>(big_endian(file, at, 2));
        at += 2;
        r.prelude = take_counted(file, at, path);
        r.payload = take_counted(file, at, path);
        out.push_back(std::move(r));
    }
    if (out.empty()) {
        throw std::runtime_error(path + ": no requests");
    }
    return out;
}

std::string answer(unsigned index, std::size_t bytes) {
    std::array<char, answer_line_bytes + 1> line{};
    std::snprintf(line.data(), line.size(), "tpt-loadgen backend %05u\n", index % 100000);
    std::string out(line.data(), answer_line_bytes);
    if (bytes > out.size()) {
        out.append(bytes - out.size(), 'x');
    }
    return out;
}

bool request_complete(std::string_view data) {
    if (data.empty()) {
        return false;
    }
    if (data[0] != 22) {
        const bool http = data[0] >= 'A' && data[0] <= 'Z';
        return !http || data.find("\r\n\r\n") != std::string_view::npos;
    }
    std::array<char, 4> head{};  // the handshake header, which may span records
    std::size_t carried = 0;     // handshake bytes in the whole records so far
    std::size_t pos = 0;
    while (pos + 5 <= data.size()) {
        if (data[pos] != 22) {
            return true;  // a record of another type: nothing more to wait for
        }
        const std::size_t length = big_endian(data, pos + 3, 2);
        if (pos + 5 + length > data.size()) {
            return false;
        }
        for (std::size_t i = 0; i < length && carried + i < head.size(); ++i) {
            head[carried + i] = data[pos + 5 + i];
        }
        carried += length;
        pos += 5 + length;
        if (carried >= 4 && carried >= 4 + big_endian({head.data(), head.size()}, 1, 3)) {
            return true;
        }
    }
    return false;
}

}  // namespace loadgen
