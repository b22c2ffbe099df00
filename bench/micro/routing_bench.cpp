// Micro benchmarks of the SNI route lookup (SPEC §4.3): exact hits, wildcard hits and misses
// in tables of 10, 1,000 and 10,000 rules (half exact, half wildcard), and names of 2 to 10
// labels in the largest table. The lookup costs one hash probe per label of the name, so the
// time grows with the labels and stays flat across table sizes: O(labels), not O(rules).
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include <tpt/config.hpp>
#include <tpt/routing.hpp>

namespace {

// Concatenation by appends: GCC 12 at -O3 reports a false -Wrestrict on chains of
// std::string operator+ (GCC bug 105329).
std::string cat(std::initializer_list<std::string_view> parts) {
    std::string out;
    for (const auto p : parts) {
        out.append(p);
    }
    return out;
}

// A tls server with `rules` SNI rules: even ones exact "host<i>.zone<i%97>.example.com",
// odd ones wildcard "*.svc<i>.zone<i%97>.example.net", all to one upstream.
struct Fixture {
    tpt::config::Config config;
    std::optional<tpt::routing::Table> table;

    explicit Fixture(std::size_t rules) {
        tpt::config::Upstream up;
        up.name = "up";
        up.url = "tcp://127.0.0.1:9";
        up.address.host = "127.0.0.1";
        up.address.port = 9;
        config.upstreams.push_back(up);
        tpt::config::Server server;
        server.name = "bench";
        server.tls = true;
        server.default_upstream = "ban";
        for (std::size_t i = 0; i < rules; ++i) {
            tpt::config::SniRoute r;
            const auto n = std::to_string(i);
            const auto zone = std::to_string(i % 97);
            if (i % 2 == 0) {
                r.key = cat({"host", n, ".zone", zone, ".example.com"});
                r.pattern = r.key;
            } else {
                r.key = cat({"*.svc", n, ".zone", zone, ".example.net"});
                r.pattern = r.key;
                r.wildcard = true;
            }
            r.upstream = "up";
            server.sni.push_back(std::move(r));
        }
        config.servers.push_back(std::move(server));
        table.emplace(config.servers.front(), config);
    }
};

// The last rule of each kind, so a linear scan would have to walk the whole table.
std::string exact_name(std::size_t rules) {
    const std::size_t i = (rules - 1) / 2 * 2;
    return cat({"host", std::to_string(i), ".zone", std::to_string(i % 97), ".example.com"});
}

std::string wildcard_name(std::size_t rules) {
    const std::size_t i = rules - 1 - (rules % 2 == 0 ? 0 : 1);
    return cat({"a.b.svc", std::to_string(i), ".zone", std::to_string(i % 97), ".example.net"});
}

void lookup(benchmark::State& state, const Fixture& f, const std::string& name,
            std::string_view expect_route) {
    const auto& route = f.table->match(name);
    if (route.key.find(expect_route) == std::string::npos && route.key != expect_route) {
        state.SkipWithError(cat({"unexpected route ", route.key, " for ", name}).c_str());
        return;
    }
    for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
        benchmark::DoNotOptimize(&f.table->match(name));
    }
    state.counters["rules"] = static_cast<double>(state.range(0));
}

void routing_exact_hit(benchmark::State& state) {
    const auto rules = static_cast<std::size_t>(state.range(0));
    const Fixture f(rules);
    const auto name = exact_name(rules);
    lookup(state, f, name, name);
}
BENCHMARK(routing_exact_hit)->Arg(10)->Arg(1000)->Arg(10000);

// "a.b.svcN.zoneZ.example.net" matches "*.svcN.zoneZ.example.net" on the second suffix tried.
void routing_wildcard_hit(benchmark::State& state) {
    const auto rules = static_cast<std::size_t>(state.range(0));
    const Fixture f(rules);
    lookup(state, f, wildcard_name(rules), ".example.net");
}
BENCHMARK(routing_wildcard_hit)->Arg(10)->Arg(1000)->Arg(10000);

// No rule matches: every suffix is tried, then the default route.
void routing_miss(benchmark::State& state) {
    const auto rules = static_cast<std::size_t>(state.range(0));
    const Fixture f(rules);
    lookup(state, f, "www.nowhere.example.org", "default");
}
BENCHMARK(routing_miss)->Arg(10)->Arg(1000)->Arg(10000);

// 10,000 rules, names of 2..10 labels that match nothing: one probe per label.
void routing_miss_by_labels(benchmark::State& state) {
    static const Fixture f(10000);
    std::string name = "example.org";
    for (std::int64_t i = 2; i < state.range(0); ++i) {
        name = cat({"l", std::to_string(i), ".", name});
    }
    for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
        benchmark::DoNotOptimize(&f.table->match(name));
    }
    state.counters["labels"] = static_cast<double>(state.range(0));
}
BENCHMARK(routing_miss_by_labels)->DenseRange(2, 10, 2);

// Building the table of a reload: linear in the rules, off the data path (control thread).
void routing_build(benchmark::State& state) {
    const auto rules = static_cast<std::size_t>(state.range(0));
    const Fixture f(rules);
    for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
        tpt::routing::Table t(f.config.servers.front(), f.config);
        benchmark::DoNotOptimize(&t);
    }
    state.SetComplexityN(state.range(0));
}
BENCHMARK(routing_build)->Arg(10)->Arg(1000)->Arg(10000)->Complexity(benchmark::oN);

}  // namespace
