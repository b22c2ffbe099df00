// libFuzzer target for the HTTP request-head reader. The input is the byte stream a client
// sends first. Besides "never crash, never UB" it checks:
//  - split-independence: pieces of sizes drawn from the input's last byte, and one byte at a
//    time, give the one-shot answer (a piece not fed after `done` counts as leftover: the
//    caller reads it from the socket);
//  - the routing name is always a lower-case hostname::is_valid name, or an IPv6 literal
//    flagged as one; a port is never 0; a CONNECT is done only with a name and a port;
//  - bounded memory: never more than `limit` bytes buffered, none after a final status; the
//    head fits the limit and leftover is exactly what followed it.
// The last byte also picks the limit, so the fuzzer can steer both by appending to a seed.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include <tpt/address.hpp>
#include <tpt/hostname.hpp>
#include <tpt/http_head.hpp>

namespace {

using tpt::http_head::HeadStatus;
using tpt::http_head::HostKind;
using tpt::http_head::RequestHead;
using tpt::http_head::RequestHeadParser;
using tpt::http_head::TargetForm;

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

struct Seen {
    HeadStatus status = HeadStatus::need_more;
    RequestHead head;
    std::vector<std::uint8_t> leftover;

    bool operator==(const Seen&) const = default;
};

// Feeds `bytes` in pieces of the sizes `next_size()` returns, stopping at a final status.
template <class NextSize>
Seen feed(std::span<const std::uint8_t> bytes, std::size_t limit, NextSize next_size) {
    RequestHeadParser p{limit};
    std::size_t at = 0;
    while (at < bytes.size() && p.status() == HeadStatus::need_more) {
        const std::size_t n = std::min(next_size(), bytes.size() - at);
        check(p.feed(bytes.subspan(at, n)) == p.status());
        check(p.buffered() <= limit);
        at += n;
    }
    check(p.status() == HeadStatus::need_more || p.buffered() == 0);
    Seen s{p.status(), p.head(), p.leftover()};
    if (s.status == HeadStatus::done) {
        s.leftover.insert(s.leftover.end(), bytes.begin() + static_cast<std::ptrdiff_t>(at),
                          bytes.end());
    }
    return s;
}

void check_name(const RequestHead& h) {
    if (h.is_connect()) {
        check(h.form == TargetForm::authority && h.authority && h.authority->port);
    }
    if (!h.authority) {
        return;
    }
    const auto& a = *h.authority;
    check(a.host == tpt::hostname::to_lower(a.host));
    check(!a.port || *a.port != 0);
    switch (a.kind) {
        case HostKind::name:
            check(tpt::hostname::is_valid(a.host) && !tpt::address::is_ip_literal(a.host));
            break;
        case HostKind::ipv4:
            check(tpt::hostname::is_valid(a.host) && tpt::address::is_ip_literal(a.host));
            break;
        case HostKind::ipv6:
            check(a.host.find(':') != std::string::npos && tpt::address::is_ip_literal(a.host));
            break;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> bytes{data, size};
    const unsigned seed = size > 0 ? data[size - 1] : 0;
    const std::size_t limit = (seed & 1) != 0 ? 16 * 1024 : 32 + seed;

    const Seen whole = feed(bytes, limit, [&] { return bytes.size() + 1; });

    if (whole.status == HeadStatus::done) {
        const RequestHead& h = whole.head;
        check(h.version == 10 || h.version == 11);
        check(tpt::hostname::is_token(h.method) && !h.target.empty());
        check_name(h);
        check(whole.leftover.size() <= size);
        const std::size_t head = size - whole.leftover.size();
        check(head >= 4 && head <= limit);
        check(std::equal(whole.leftover.begin(), whole.leftover.end(), data + head));
    } else {
        check(whole.head == RequestHead{} && whole.leftover.empty());
    }
    if (whole.status == HeadStatus::need_more) {
        check(size < limit);
    }

    std::uint32_t x = seed * 2654435761u + 1;
    const std::size_t max_piece = 1 + seed % 64;
    check(feed(bytes, limit, [&] {
              x = x * 1103515245u + 12345u;
              return 1 + (x >> 16) % max_piece;
          }) == whole);
    check(feed(bytes, limit, [] { return std::size_t{1}; }) == whole);
    return 0;
}
