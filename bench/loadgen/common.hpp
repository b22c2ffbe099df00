// tpt_loadgen's shared pieces: IPv4 endpoints, the monotonic clock, the latency histogram and
// the small option parser. Every object belongs to one thread; nothing here locks.
#pragma once

#include <array>
#include <cstdint>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include <netinet/in.h>

namespace loadgen {

struct Endpoint {
    sockaddr_in addr{};
    std::string text;
};

// "a.b.c.d:port"; throws std::invalid_argument naming the text otherwise.
Endpoint parse_endpoint(const std::string& text);
// Comma-separated endpoints, at least one.
std::vector<Endpoint> parse_endpoints(const std::string& list);

// CLOCK_MONOTONIC through the vDSO: no system call per sample.
inline std::uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

// Log-linear histogram of nanoseconds, as HdrHistogram lays it out: 32 sub-buckets per power
// of two, so a quantile is within 3.2 % of the true value; fixed size whatever the count.
class Histogram {
public:
    void add(std::uint64_t ns);
    void merge(const Histogram& other);
    std::uint64_t count() const { return count_; }
    // The q-quantile (0 < q <= 1) in milliseconds, 0 when empty.
    double quantile_ms(double q) const;
    double max_ms() const { return static_cast<double>(max_) / 1e6; }

private:
    static constexpr unsigned sub_bits = 5;
    static constexpr std::size_t bucket_count = 64U << sub_bits;
    static std::size_t index(std::uint64_t ns);
    static std::uint64_t midpoint(std::size_t index);

    std::array<std::uint64_t, bucket_count> buckets_{};
    std::uint64_t count_ = 0;
    std::uint64_t max_ = 0;
};

// "--key value" pairs after the mode word; unknown keys are errors (they are typos).
class Args {
public:
    Args(int argc, char** argv, int first, const std::vector<std::string>& known);
    std::string text(const std::string& key, const std::string& fallback) const;
    std::string required(const std::string& key) const;
    double number(const std::string& key, double fallback) const;

private:
    std::map<std::string, std::string> values_;
};

}  // namespace loadgen
