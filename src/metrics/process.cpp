#include "process.hpp"

#include <array>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <unistd.h>

#include <sys/resource.h>

namespace tpt::metrics::process {

namespace {

std::optional<std::string> read_file(const char* path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (in.bad()) {
        return std::nullopt;
    }
    return text;
}

template <class T>
bool parse_number(std::string_view s, T& out) {
    const auto* end = s.data() + s.size();
    auto [ptr, ec] = std::from_chars(s.data(), end, out);
    return ec == std::errc{} && ptr == end;
}

prometheus::MetricFamily single(std::string name, std::string help, prometheus::MetricType type,
                                double value) {
    prometheus::MetricFamily family;
    family.name = std::move(name);
    family.help = std::move(help);
    family.type = type;
    prometheus::ClientMetric metric;
    if (type == prometheus::MetricType::Counter) {
        metric.counter.value = value;
    } else {
        metric.gauge.value = value;
    }
    family.metric.push_back(std::move(metric));
    return family;
}

std::optional<std::size_t> count_open_fds() {
    std::error_code ec;
    std::filesystem::directory_iterator it("/proc/self/fd", ec);
    if (ec) {
        return std::nullopt;
    }
    std::size_t n = 0;
    for (const std::filesystem::directory_iterator end; it != end; it.increment(ec)) {
        if (ec) {
            return std::nullopt;
        }
        ++n;
    }
    if (ec) {
        return std::nullopt;
    }
    // The iterator's own descriptor is counted, as Prometheus' Go client counts its own.
    return n;
}

}  // namespace

std::optional<Stat> parse_stat(std::string_view line) {
    const auto close = line.rfind(')');
    if (close == std::string_view::npos) {
        return std::nullopt;
    }
    // Fields after the command name, 0-based from field 3 (state) of proc(5), and where each
    // goes, in field order.
    using Field = bool (*)(std::string_view, Stat&);
    static constexpr std::array<std::pair<std::size_t, Field>, 5> wanted{{
        {14 - 3, [](std::string_view f, Stat& st) { return parse_number(f, st.utime_ticks); }},
        {15 - 3, [](std::string_view f, Stat& st) { return parse_number(f, st.stime_ticks); }},
        {22 - 3, [](std::string_view f, Stat& st) { return parse_number(f, st.start_ticks); }},
        {23 - 3, [](std::string_view f, Stat& st) { return parse_number(f, st.vsize_bytes); }},
        {24 - 3, [](std::string_view f, Stat& st) { return parse_number(f, st.rss_pages); }},
    }};
    Stat st;
    std::size_t index = 0;
    std::size_t found = 0;
    std::string_view rest = line.substr(close + 1);
    while (!rest.empty() && found < wanted.size()) {
        const auto start = rest.find_first_not_of(" \n");
        if (start == std::string_view::npos) {
            break;
        }
        rest.remove_prefix(start);
        const auto stop = rest.find_first_of(" \n");
        const auto field = rest.substr(0, stop);
        rest.remove_prefix(stop == std::string_view::npos ? rest.size() : stop);
        if (index == wanted[found].first) {
            if (!wanted[found].second(field, st)) {
                return std::nullopt;
            }
            ++found;
        }
        ++index;
    }
    if (found != 5) {
        return std::nullopt;
    }
    return st;
}

std::optional<unsigned long long> parse_boot_time(std::string_view proc_stat) {
    constexpr std::string_view key = "btime ";
    std::size_t pos = 0;
    while (pos < proc_stat.size()) {
        auto eol = proc_stat.find('\n', pos);
        if (eol == std::string_view::npos) {
            eol = proc_stat.size();
        }
        const auto line = proc_stat.substr(pos, eol - pos);
        if (line.starts_with(key)) {
            unsigned long long value = 0;
            if (parse_number(line.substr(key.size()), value)) {
                return value;
            }
            return std::nullopt;
        }
        pos = eol + 1;
    }
    return std::nullopt;
}

std::vector<prometheus::MetricFamily> collect() {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> out;

    const auto ticks = ::sysconf(_SC_CLK_TCK);
    const auto page = ::sysconf(_SC_PAGESIZE);
    const auto stat_text = read_file("/proc/self/stat");
    const auto st = stat_text ? parse_stat(*stat_text) : std::nullopt;
    if (st && ticks > 0 && page > 0) {
        const auto tick_seconds = 1.0 / static_cast<double>(ticks);
        out.push_back(
            single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                   MetricType::Counter,
                   static_cast<double>(st->utime_ticks + st->stime_ticks) * tick_seconds));
        out.push_back(single("process_resident_memory_bytes", "Resident memory size in bytes.",
                             MetricType::Gauge,
                             static_cast<double>(st->rss_pages) * static_cast<double>(page)));
        out.push_back(single("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                             MetricType::Gauge, static_cast<double>(st->vsize_bytes)));
        const auto boot = read_file("/proc/stat");
        const auto btime = boot ? parse_boot_time(*boot) : std::nullopt;
        if (btime) {
            out.push_back(single(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                static_cast<double>(*btime) + static_cast<double>(st->start_ticks) * tick_seconds));
        }
    }
    if (const auto fds = count_open_fds()) {
        out.push_back(single("process_open_fds", "Number of open file descriptors.",
                             MetricType::Gauge, static_cast<double>(*fds)));
    }
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
        out.push_back(single("process_max_fds", "Maximum number of open file descriptors.",
                             MetricType::Gauge, static_cast<double>(lim.rlim_cur)));
    }
    return out;
}

}  // namespace tpt::metrics::process
