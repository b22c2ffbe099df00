// tpt_loadgen: endpoints, histogram and options.
#include "common.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <stdexcept>

#include <arpa/inet.h>

namespace loadgen {

Endpoint parse_endpoint(const std::string& text) {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos) {
        throw std::invalid_argument("not host:port: " + text);
    }
    Endpoint ep;
    ep.text = text;
    ep.addr.sin_family = AF_INET;
    const std::string host = text.substr(0, colon);
    if (inet_pton(AF_INET, host.c_str(), &ep.addr.sin_addr) != 1) {
        throw std::invalid_argument("not an IPv4 address: " + text);
    }
    const unsigned long port = std::stoul(text.substr(colon + 1));
    if (port == 0 || port > 65535) {
        throw std::invalid_argument("bad port: " + text);
    }
    ep.addr.sin_port = htons(static_cast<std::uint16_t>(port));
    return ep;
}

std::vector<Endpoint> parse_endpoints(const std::string& list) {
    std::vector<Endpoint> out;
    std::size_t from = 0;
    while (from <= list.size()) {
        const auto comma = std::min(list.find(',', from), list.size());
        out.push_back(parse_endpoint(list.substr(from, comma - from)));
        from = comma + 1;
    }
    return out;
}

std::size_t Histogram::index(std::uint64_t ns) {
    if (ns < (1U << sub_bits)) {
        return static_cast<std::size_t>(ns);
    }
    const unsigned exponent = static_cast<unsigned>(std::bit_width(ns)) - 1;  // floor(log2)
    const unsigned shift = exponent - sub_bits;
    const std::uint64_t mantissa = (ns >> shift) & ((1U << sub_bits) - 1);
    return (static_cast<std::size_t>(shift + 1) << sub_bits) | static_cast<std::size_t>(mantissa);
}

std::uint64_t Histogram::midpoint(std::size_t index) {
    if (index < (1U << sub_bits)) {
        return index;
    }
    const std::size_t shift = (index >> sub_bits) - 1;
    const std::uint64_t low = ((1U << sub_bits) | (index & ((1U << sub_bits) - 1))) << shift;
    return low + (std::uint64_t{1} << shift) / 2;
}

void Histogram::add(std::uint64_t ns) {
    ++buckets_[index(ns)];
    ++count_;
    max_ = std::max(max_, ns);
}

void Histogram::merge(const Histogram& other) {
    for (std::size_t i = 0; i < bucket_count; ++i) {
        buckets_[i] += other.buckets_[i];
    }
    count_ += other.count_;
    max_ = std::max(max_, other.max_);
}

double Histogram::quantile_ms(double q) const {
    if (count_ == 0) {
        return 0;
    }
    const auto rank = static_cast<std::uint64_t>(std::llround(q * static_cast<double>(count_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
        seen += buckets_[i];
        if (seen >= std::max<std::uint64_t>(rank, 1)) {
            return static_cast<double>(std::min(midpoint(i), max_)) / 1e6;
        }
    }
    return max_ms();
}

Args::Args(int argc, char** argv, int first, const std::vector<std::string>& known) {
    for (int i = first; i < argc; i += 2) {
        const std::string key = argv[i];
        if (key.rfind("--", 0) != 0 || i + 1 >= argc) {
            throw std::invalid_argument("expected --key value at " + key);
        }
        if (std::find(known.begin(), known.end(), key.substr(2)) == known.end()) {
            throw std::invalid_argument("unknown option " + key);
        }
        values_[key.substr(2)] = argv[i + 1];
    }
}

std::string Args::text(const std::string& key, const std::string& fallback) const {
    const auto it = values_.find(key);
    return it == values_.end() ? fallback : it->second;
}

std::string Args::required(const std::string& key) const {
    const auto it = values_.find(key);
    if (it == values_.end()) {
        throw std::invalid_argument("--" + key + " is required");
    }
    return it->second;
}

double Args::number(const std::string& key, double fallback) const {
    const auto it = values_.find(key);
    return it == values_.end() ? fallback : std::stod(it->second);
}

}  // namespace loadgen
