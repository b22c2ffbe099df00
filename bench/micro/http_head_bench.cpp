// Micro benchmarks of the HTTP request-head reader: what a plain-HTTP or explicit-proxy
// connection costs before routing, for a typical request in one read and in ten, and for the
// CONNECT head an HTTPS_PROXY client sends.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include <benchmark/benchmark.h>

#include <tpt/http_head.hpp>

namespace {

// What curl 7.88 sends for `curl http://www.example.com/index.html` with a few extras.
constexpr std::string_view curl_get =
    "GET /index.html HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: curl/7.88.1\r\n"
    "Accept: */*\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Cookie: session=0123456789abcdef0123456789abcdef\r\n"
    "\r\n";

// What curl sends through HTTPS_PROXY.
constexpr std::string_view curl_connect =
    "CONNECT www.example.com:443 HTTP/1.1\r\n"
    "Host: www.example.com:443\r\n"
    "User-Agent: curl/7.88.1\r\n"
    "Proxy-Connection: Keep-Alive\r\n"
    "\r\n";

std::span<const std::uint8_t> bytes_of(std::string_view s) {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

void parse_in_pieces(benchmark::State& state, std::string_view text, std::size_t pieces) {
    const std::span<const std::uint8_t> head = bytes_of(text);
    const std::size_t piece = (head.size() + pieces - 1) / pieces;
    for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
        tpt::http_head::RequestHeadParser parser;
        for (std::size_t pos = 0; pos < head.size(); pos += piece) {
            benchmark::DoNotOptimize(
                parser.feed(head.subspan(pos, std::min(piece, head.size() - pos))));
        }
        benchmark::DoNotOptimize(parser.head().authority);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                            static_cast<std::int64_t>(head.size()));
}

void http_get_one_shot(benchmark::State& state) {
    parse_in_pieces(state, curl_get, 1);
}
BENCHMARK(http_get_one_shot);

void http_get_ten_pieces(benchmark::State& state) {
    parse_in_pieces(state, curl_get, 10);
}
BENCHMARK(http_get_ten_pieces);

void http_connect_one_shot(benchmark::State& state) {
    parse_in_pieces(state, curl_connect, 1);
}
BENCHMARK(http_connect_one_shot);

}  // namespace
