// libFuzzer target for the CONNECT response head parser. The input is the byte stream a proxy
// sends back. Besides "never crash, never UB" it checks the split property: feeding the input
// in pieces (sizes drawn from the input's last byte) or one byte at a time gives the answer of
// feeding it in one piece, where a piece that was not fed after `done` counts as leftover
// (the caller reads it from the socket). The last byte also picks the head limit; bytes after
// a whole head only reach leftover, so the fuzzer can steer both by appending to a seed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include <tpt/connect_head.hpp>

namespace {

using tpt::connect_head::HeadStatus;
using tpt::connect_head::ResponseHeadParser;

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

struct Answer {
    HeadStatus status = HeadStatus::need_more;
    unsigned code = 0;
    std::string status_line;
    std::string scheme;
    std::vector<std::uint8_t> leftover;

    bool operator==(const Answer&) const = default;
};

// Feeds `bytes` in pieces of the sizes `next_size()` returns, stopping at a final status.
template <class NextSize>
Answer feed(std::span<const std::uint8_t> bytes, std::size_t limit, NextSize next_size) {
    ResponseHeadParser p{limit};
    std::size_t at = 0;
    HeadStatus st = p.status();
    while (at < bytes.size() && st == HeadStatus::need_more) {
        const std::size_t n = std::min(next_size(), bytes.size() - at);
        st = p.feed(bytes.subspan(at, n));
        check(st == p.status());
        at += n;
    }
    Answer a{st, p.status_code(), p.status_line(), p.proxy_authenticate_scheme(), p.leftover()};
    if (st == HeadStatus::done) {
        a.leftover.insert(a.leftover.end(), bytes.begin() + static_cast<std::ptrdiff_t>(at),
                          bytes.end());
    }
    return a;
}

bool printable(const std::string& s) {
    for (char c : s) {
        if (c < 0x20 || c > 0x7E) {
            return false;
        }
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> bytes{data, size};
    const unsigned seed = size > 0 ? data[size - 1] : 0;
    const std::size_t limit = (seed & 1) != 0 ? 16 * 1024 : 32 + seed;

    const Answer whole = feed(bytes, limit, [&] { return bytes.size() + 1; });

    if (whole.status == HeadStatus::done) {
        check(whole.code >= 100 && whole.code <= 599);
        check(whole.status_line.rfind("HTTP/1.", 0) == 0);
        check(printable(whole.status_line));
        check(printable(whole.scheme) && whole.scheme.size() <= 64);
        check(whole.scheme.find(' ') == std::string::npos);
        // The head fits the limit, and leftover is exactly what followed it.
        check(whole.leftover.size() <= size);
        const std::size_t head = size - whole.leftover.size();
        check(head >= 4 && head <= limit);
        check(std::equal(whole.leftover.begin(), whole.leftover.end(), data + head));
    } else {
        check(whole.code == 0 && whole.status_line.empty() && whole.scheme.empty() &&
              whole.leftover.empty());
    }
    if (whole.status == HeadStatus::need_more) {
        check(size < limit);
    }

    std::uint32_t x = seed * 2654435761u + 1;
    const std::size_t max_piece = 1 + seed % 64;
    const Answer pieces = feed(bytes, limit, [&] {
        x = x * 1103515245u + 12345u;
        return 1 + (x >> 16) % max_piece;
    });
    check(pieces == whole);

    const Answer bytewise = feed(bytes, limit, [] { return std::size_t{1}; });
    check(bytewise == whole);
    return 0;
}
