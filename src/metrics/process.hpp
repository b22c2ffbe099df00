// metrics/process: the standard process_* families, read from /proc/self when a scrape asks.
// Thread affinity: any thread (reads only the calling process's /proc files).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include <prometheus/metric_family.h>

namespace tpt::metrics::process {

// Fields of /proc/self/stat that the process_* families need, in their /proc units.
struct Stat {
    unsigned long long utime_ticks = 0;
    unsigned long long stime_ticks = 0;
    unsigned long long start_ticks = 0;  // since boot
    unsigned long long vsize_bytes = 0;
    long long rss_pages = 0;
};

// Parses the one line of /proc/<pid>/stat. The command name (field 2) may hold spaces and
// parentheses, so the fields are counted from its last ')'. nullopt when fields are missing.
std::optional<Stat> parse_stat(std::string_view line);

// The `btime` line of /proc/stat (boot time, unix seconds).
std::optional<unsigned long long> parse_boot_time(std::string_view proc_stat);

// process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
// process_max_fds, process_cpu_seconds_total and process_start_time_seconds. A family whose
// source cannot be read is left out rather than reported as 0.
std::vector<prometheus::MetricFamily> collect();

}  // namespace tpt::metrics::process
