// libFuzzer target for the ClientHello parser. The input is the byte stream a client sends.
// Besides "never crash, never UB" it checks the split property: feeding the input in two pieces
// at a point chosen by the fuzzer gives the status and SNI of feeding it in one piece. The split
// point comes from the input's last two bytes; bytes after a whole hello do not change the
// answer, so the fuzzer can steer the split of a seed hello by appending to it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include <tpt/client_hello.hpp>
#include <tpt/hostname.hpp>

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

}  // namespace

// NOLINTNEXTLINE(readability-identifier-naming): the name libFuzzer calls.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using tpt::client_hello::ClientHelloParser;
    using tpt::client_hello::HelloStatus;
    const std::span<const std::uint8_t> bytes{data, size};

    ClientHelloParser whole;
    const HelloStatus status = whole.feed(bytes);
    check(status == whole.status());

    // Only a whole hello can name a host, and only a valid, lower-cased one.
    if (whole.sni()) {
        check(status == HelloStatus::done);
        check(tpt::hostname::is_valid(*whole.sni()));
        check(tpt::hostname::to_lower(*whole.sni()) == *whole.sni());
    }

    std::size_t at = 0;
    if (size >= 2) {
        at = ((std::size_t{data[size - 2]} << 8) | data[size - 1]) % (size + 1);
    }
    ClientHelloParser split;
    const HelloStatus first = split.feed(bytes.first(at));
    // A final status is final: the rest of the stream cannot change it.
    check(first == HelloStatus::need_more || first == status);
    const HelloStatus second = split.feed(bytes.subspan(at));
    check(second == status);
    check(split.sni() == whole.sni());

    // The convenience function is the same parser.
    const tpt::client_hello::HelloResult once = tpt::client_hello::parse_client_hello(bytes);
    check(once.status == status && once.sni == whole.sni());
    return 0;
}
