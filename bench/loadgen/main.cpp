// tpt_loadgen: the connection load generator and backend of bench/run.sh (bench/RESULTS.md
// says how each figure uses it). Two modes:
//
//   tpt_loadgen client --target IP:PORT[,IP:PORT...] --requests FILE [--threads 1]
//       [--concurrency 64] [--rate 0] [--warmup 0.5] [--duration 5] [--timeout 5]
//       [--answer-bytes 512]
//     prints "window start" and "window end" as the counted window (after the warm-up) opens
//     and closes, then one JSON object: connections, conn_per_s, p50_ms, p90_ms, p99_ms, max_ms,
//     errors (by kind), cpu_s and cpu_us_per_conn of this process
//   tpt_loadgen serve --listen IP:PORT[,IP:PORT...] [--threads 1] [--answer-bytes 512]
//     answers each whole request on listen address k as backend k, until killed
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "backend.hpp"
#include "client.hpp"
#include "common.hpp"
#include "wire.hpp"

namespace {

void print_report(const loadgen::ClientReport& r, double duration_s) {
    const auto done = static_cast<double>(r.done);
    std::printf(
        "{\"connections\": %llu, \"conn_per_s\": %.1f, \"p50_ms\": %.4f, "
        "\"p90_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f, \"cpu_s\": %.3f, "
        "\"cpu_us_per_conn\": %.2f, \"errors\": {",
        static_cast<unsigned long long>(r.done), done / duration_s, r.latency.quantile_ms(0.50),
        r.latency.quantile_ms(0.90), r.latency.quantile_ms(0.99), r.latency.max_ms(), r.cpu_s,
        done > 0 ? r.cpu_s * 1e6 / done : 0.0);
    for (std::size_t e = 0; e < r.errors.size(); ++e) {
        std::printf("%s\"%s\": %llu", e == 0 ? "" : ", ", loadgen::error_names[e],
                    static_cast<unsigned long long>(r.errors[e]));
    }
    std::printf("}}\n");
}

int client(int argc, char** argv) {
    const loadgen::Args args(argc, argv, 2,
                             {"target", "requests", "threads", "concurrency", "rate", "warmup",
                              "duration", "timeout", "answer-bytes"});
    loadgen::ClientOptions o;
    o.targets = loadgen::parse_endpoints(args.required("target"));
    o.threads = static_cast<unsigned>(args.number("threads", 1));
    o.concurrency = static_cast<unsigned>(args.number("concurrency", 64));
    o.rate = args.number("rate", 0);
    o.warmup_s = args.number("warmup", 0.5);
    o.duration_s = args.number("duration", 5);
    o.timeout_s = args.number("timeout", 5);
    o.answer_bytes = static_cast<std::size_t>(args.number("answer-bytes", 512));
    const auto requests = loadgen::load_requests(args.required("requests"));
    print_report(loadgen::run_client(o, requests), o.duration_s);
    return 0;
}

int serve(int argc, char** argv) {
    const loadgen::Args args(argc, argv, 2, {"listen", "threads", "answer-bytes"});
    loadgen::BackendOptions o;
    o.listen = loadgen::parse_endpoints(args.required("listen"));
    o.threads = static_cast<unsigned>(args.number("threads", 1));
    o.answer_bytes = static_cast<std::size_t>(args.number("answer-bytes", 512));
    loadgen::run_backend(o);
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    try {
        if (mode == "client") {
            return client(argc, argv);
        }
        if (mode == "serve") {
            serve(argc, argv);
        }
    } catch (const std::exception& e) {
        std::cerr << "tpt_loadgen " << mode << ": " << e.what() << "\n";
        return 2;
    }
    std::cerr << "usage: tpt_loadgen client|serve --key value... (see bench/loadgen/main.cpp)\n";
    return 2;
}
