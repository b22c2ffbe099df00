#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/admin.hpp>
#include <tpt/app.hpp>
#include <tpt/cli.hpp>
#include <tpt/config.hpp>
#include <tpt/log.hpp>
#include <tpt/metrics.hpp>
#include <tpt/reload.hpp>
#include <tpt/routing.hpp>
#include <tpt/runtime.hpp>
#include <tpt/server_set.hpp>
#include <tpt/session.hpp>

namespace tpt::app {

namespace net = boost::asio;
namespace fs = std::filesystem;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
// How long an invalid file seen by inotify gets to become valid before the failure counts.
constexpr auto settle_delay = 300ms;

std::optional<std::string> read_file(const std::string& path, std::string& error) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        error = path + ": cannot open: " + std::strerror(errno);
        return std::nullopt;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) {
        error = path + ": read error";
        return std::nullopt;
    }
    return ss.str();
}

std::string join_errors(const std::vector<config::ConfigError>& errors) {
    std::string out;
    for (const auto& e : errors) {
        out += e.to_string();
        out += '\n';
    }
    return out;
}

std::optional<config::LogLevel> env_log_level() {
    const char* v = std::getenv("TPT_LOG");
    if (v == nullptr || *v == '\0') {
        return std::nullopt;
    }
    return config::parse_log_level(v);
}

double unix_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::optional<tcp::endpoint> admin_endpoint(const config::Config& cfg) {
    if (!cfg.admin.listen) {
        return std::nullopt;
    }
    boost::system::error_code ec;
    auto addr = net::ip::make_address(cfg.admin.listen->host, ec);
    if (ec) {
        // A host name: resolve it once, now.
        net::io_context io;
        tcp::resolver r(io);
        auto results =
            r.resolve(cfg.admin.listen->host, std::to_string(cfg.admin.listen->port), ec);
        if (ec || results.empty()) {
            throw std::runtime_error("cannot resolve admin.listen " +
                                     cfg.admin.listen->to_string());
        }
        return results.begin()->endpoint();
    }
    return tcp::endpoint(addr, cfg.admin.listen->port);
}

void warn_if_subpath(const std::string& path) {
    std::error_code ec;
    const auto real = fs::canonical(path, ec);
    if (ec) {
        return;
    }
    std::string error;
    const auto mountinfo = read_file("/proc/self/mountinfo", error);
    if (!mountinfo) {
        return;
    }
    const auto dir = fs::path(path).parent_path();
    const bool has_data = fs::exists(dir / "..data", ec);
    if (reload::is_subpath_mount(*mountinfo, real.string(), has_data)) {
        log::warn(
            "the config file is a subPath mount: Kubernetes will never update it; mount "
            "the ConfigMap as a directory to get hot reloads",
            {{"path", path}});
    }
}

class App {
public:
    App(std::string path, std::string version)
        : path_(std::move(path)), version_(std::move(version)) {}

    int start(std::shared_ptr<const config::Config> cfg, std::string hash) {
        metrics_ = metrics::make_metrics(version_);
        const auto workers = std::max(1U, std::thread::hardware_concurrency());
        runtime_ = std::make_unique<runtime::Runtime>(workers);
        servers_ = std::make_unique<server_set::ServerSet>(*runtime_);
        handlers_ = make_handlers();

        auto snap = session::build_snapshot(cfg, hash, nullptr, *metrics_, handlers_);
        if (auto err = servers_->apply(snap)) {
            log::error("cannot start", {{"error", *err}});
            return 1;
        }
        try {
            if (auto ep = admin_endpoint(*cfg)) {
                admin_ =
                    std::make_shared<admin::AdminServer>(control_.get_executor(), *ep, handlers_);
                admin_->start();
                admin_listen_ = cfg->admin.listen->to_string();
            }
        } catch (const std::exception& e) {
            log::error("cannot start the admin server", {{"error", e.what()}});
            return 1;
        }
        publish(snap);
        metrics_->config_loaded(hash, unix_now());
        runtime_->start();

        watcher_ = std::make_shared<reload::Watcher>(
            control_.get_executor(), path_,
            [this](std::string_view why) { reload_now(why, false); });
        watcher_->start(cfg->reload.watch, cfg->reload.poll_interval);
        warn_if_subpath(path_);

        net::co_spawn(control_, signals(), net::detached);
        ready_ = true;
        log::info("tpt started", {{"version", version_},
                                  {"config", path_},
                                  {"sha256", hash},
                                  {"workers", std::to_string(workers)},
                                  {"listeners", std::to_string(servers_->bound().size())},
                                  {"admin", admin_listen_.empty() ? "off" : admin_listen_}});
        control_.run();
        runtime_->stop();
        log::info("tpt stopped");
        return 0;
    }

private:
    admin::HandlersPtr make_handlers() {
        auto h = std::make_shared<admin::Handlers>();
        h->metrics = [this] { return metrics_->serialize(); };
        h->ready = [this] { return ready_.load(); };
        h->alive = [this] { return net::co_spawn(control_, ping_workers(), net::use_awaitable); };
        h->config_json = [this] { return config_json(); };
        h->reload = [this] { return net::co_spawn(control_, reload_async(), net::use_awaitable); };
        h->control_from_any = [this] { return control_any_.load(); };
        return h;
    }

    // Every worker runs a no-op within 2 s.
    net::awaitable<bool> ping_workers() {
        net::steady_timer timer(control_);
        timer.expires_after(2s);
        auto r = co_await (ping_all() || timer.async_wait(use_tuple));
        co_return r.index() == 0;
    }

    net::awaitable<void> ping_all() {
        for (std::size_t i = 0; i < runtime_->size(); ++i) {
            co_await net::post(runtime_->worker(i).executor(), net::use_awaitable);
        }
    }

    std::string config_json() {
        session::SnapshotPtr snap;
        {
            std::lock_guard lock(mutex_);
            snap = current_;
        }
        return "{\"sha256\":\"" + snap->sha256 + "\",\"path\":" + json_string(path_) +
               ",\"config\":" + config::to_json(*snap->config) + "}";
    }

    static std::string json_string(const std::string& s) {
        std::string out = "\"";
        for (const char c : s) {
            if (c == '"' || c == '\\') {
                out += '\\';
                out += c;
            } else if (static_cast<unsigned char>(c) < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
                out += buf;
            } else {
                out += c;
            }
        }
        return out + "\"";
    }

    net::awaitable<admin::ReloadAnswer> reload_async() { co_return reload_now("admin", true); }

    void publish(session::SnapshotPtr snap) {
        const auto& cfg = *snap->config;
        control_any_ = cfg.admin.control_from == config::ControlFrom::any;
        log::configure(env_log_level().value_or(cfg.log), cfg.log_format);
        for (const auto& w : cfg.warnings) {
            log::warn("config warning", {{"detail", w.to_string()}});
        }
        std::lock_guard lock(mutex_);
        current_ = std::move(snap);
    }

    // SPEC §7. Control thread. force: SIGHUP / POST /reload apply even an unchanged file.
    admin::ReloadAnswer reload_now(std::string_view why, bool force) {
        if (stopping_) {
            return {503, "shutting down\n"};
        }
        std::string error;
        const auto text = read_file(path_, error);
        if (!text) {
            return fail(why, 400, error);
        }
        auto hash = config::sha256_hex(*text);
        session::SnapshotPtr old;
        {
            std::lock_guard lock(mutex_);
            old = current_;
        }
        // Unforced triggers act on changed content only. Content that already failed is not
        // retried on inotify events (a failure's log line in the watched directory would
        // trigger the next attempt), only by the poll fallback, SIGHUP and POST /reload.
        if (!force && (hash == old->sha256 || (hash == last_failed_hash_ && why == "inotify"))) {
            return {200, hash + "\n"};
        }
        auto loaded = config::load(*text, path_, env::process_environment());
        if (auto* errors = std::get_if<std::vector<config::ConfigError>>(&loaded)) {
            if (why == "inotify") {
                // A write in place (truncate, then write) can be read half-way: look again
                // once the writer had time to finish, and judge only that read.
                if (!settle_pending_) {
                    settle_pending_ = true;
                    settle_timer_.expires_after(settle_delay);
                    settle_timer_.async_wait([this](boost::system::error_code ec) {
                        settle_pending_ = false;
                        if (!ec) {
                            reload_now("inotify-settled", false);
                        }
                    });
                }
                return {400, join_errors(*errors)};
            }
            last_failed_hash_ = hash;
            return fail(why, 400, join_errors(*errors));
        }
        last_failed_hash_ = hash;  // until the apply below succeeds
        auto cfg =
            std::make_shared<const config::Config>(std::get<config::Config>(std::move(loaded)));
        auto snap = session::build_snapshot(cfg, hash, old.get(), *metrics_, handlers_);

        // The admin server moves first (it may fail), then the listeners (all or nothing).
        std::shared_ptr<admin::AdminServer> new_admin;
        const std::string new_admin_listen =
            cfg->admin.listen ? cfg->admin.listen->to_string() : "";
        if (new_admin_listen != admin_listen_ && !new_admin_listen.empty()) {
            try {
                auto ep = admin_endpoint(*cfg);
                new_admin =
                    std::make_shared<admin::AdminServer>(control_.get_executor(), *ep, handlers_);
            } catch (const std::exception& e) {
                return fail(why, 500, std::string("cannot bind admin.listen: ") + e.what());
            }
        }
        if (auto err = servers_->apply(snap)) {
            if (new_admin) {
                new_admin->stop();
            }
            return fail(why, 500, *err);
        }
        if (new_admin_listen != admin_listen_) {
            if (admin_) {
                admin_->stop();
            }
            admin_ = new_admin;
            if (admin_) {
                admin_->start();
            }
            admin_listen_ = new_admin_listen;
        }
        if (watcher_) {
            watcher_->set_poll_interval(cfg->reload.poll_interval);
        }
        const auto diff = routing::diff(*old->config, *cfg);
        publish(snap);
        for (const auto& name : diff.removed_servers) {
            metrics_->forget_server(name);
        }
        last_failed_hash_.clear();
        metrics_->reload_result(true, hash, unix_now());
        log::info("config reloaded",
                  {{"trigger", std::string(why)},
                   {"sha256", hash},
                   {"servers_added", std::to_string(diff.added_servers.size())},
                   {"servers_removed", std::to_string(diff.removed_servers.size())},
                   {"servers_changed", std::to_string(diff.changed_servers.size())},
                   {"listen_added", std::to_string(diff.added_listen.size())},
                   {"listen_removed", std::to_string(diff.removed_listen.size())}});
        return {200, hash + "\n"};
    }

    admin::ReloadAnswer fail(std::string_view why, unsigned status, const std::string& error) {
        metrics_->reload_result(false, "", unix_now());
        log::error("config reload failed, keeping the running config",
                   {{"trigger", std::string(why)}, {"error", error}});
        return {status, error.empty() || error.back() != '\n' ? error + "\n" : error};
    }

    net::awaitable<void> signals() {
        net::signal_set set(control_, SIGTERM, SIGINT, SIGHUP);
        for (;;) {
            auto [ec, sig] = co_await set.async_wait(use_tuple);
            if (ec) {
                co_return;
            }
            if (sig == SIGHUP) {
                reload_now("SIGHUP", true);
                continue;
            }
            if (stopping_) {
                log::warn("second stop signal: exiting now");
                std::_Exit(0);
            }
            stopping_ = true;
            ready_ = false;
            net::co_spawn(control_, shutdown(), net::detached);
        }
    }

    // SPEC §8: /ready is 503 already; accept for shutdown.delay, close listeners, drain.
    net::awaitable<void> shutdown() {
        session::SnapshotPtr snap;
        {
            std::lock_guard lock(mutex_);
            snap = current_;
        }
        const auto delay = snap->config->shutdown.delay;
        const auto drain = snap->config->shutdown.drain_timeout;
        log::info("shutdown: not ready; still accepting",
                  {{"delay", duration::format(delay)}, {"drain_timeout", duration::format(drain)}});
        net::steady_timer timer(control_);
        if (delay > 0ms) {
            timer.expires_after(delay);
            co_await timer.async_wait(use_tuple);
        }
        servers_->close_all();
        if (watcher_) {
            watcher_->stop();
        }
        const auto deadline = runtime::Clock::now() + drain;
        log::info("shutdown: listeners closed, draining",
                  {{"live", std::to_string(servers_->live())}});
        while (servers_->live() > 0 && (drain == 0ms || runtime::Clock::now() < deadline)) {
            timer.expires_after(20ms);
            co_await timer.async_wait(use_tuple);
        }
        if (const auto left = servers_->live(); left > 0) {
            log::warn("shutdown: drain timeout, closing live tunnels",
                      {{"live", std::to_string(left)}});
            servers_->abort_all();
            const auto hard = runtime::Clock::now() + 2s;
            while (servers_->live() > 0 && runtime::Clock::now() < hard) {
                timer.expires_after(10ms);
                co_await timer.async_wait(use_tuple);
            }
        }
        if (admin_) {
            admin_->stop();
        }
        control_.stop();
    }

    std::string path_;
    std::string version_;
    net::io_context control_{1};
    std::unique_ptr<metrics::Metrics> metrics_;
    std::unique_ptr<runtime::Runtime> runtime_;
    std::unique_ptr<server_set::ServerSet> servers_;
    admin::HandlersPtr handlers_;
    std::shared_ptr<admin::AdminServer> admin_;
    std::string admin_listen_;
    std::shared_ptr<reload::Watcher> watcher_;
    std::mutex mutex_;  // guards current_ (admin handlers read it from any thread)
    session::SnapshotPtr current_;
    std::atomic<bool> ready_{false};
    std::atomic<bool> control_any_{false};
    std::string last_failed_hash_;  // content of the last failed attempt (control thread)
    net::steady_timer settle_timer_{control_};
    bool settle_pending_ = false;
    bool stopping_ = false;
};
}  // namespace

int run(int argc, const char* const* argv, std::string_view version) {
    const auto parsed = cli::parse(argc, argv);
    if (!parsed.options) {
        std::cerr << "tpt: " << parsed.error << "\n" << cli::help_text("tpt");
        return 2;
    }
    const auto& opts = *parsed.options;
    if (opts.help) {
        std::cout << cli::help_text("tpt");
        return 0;
    }
    if (opts.version) {
        std::cout << "tpt " << version << "\n";
        return 0;
    }
    std::string path;
    if (opts.config_path) {
        path = *opts.config_path;
    } else {
        const auto search = cli::find_config(env::process_environment(), [](const std::string& p) {
            std::error_code ec;
            return fs::is_regular_file(p, ec);
        });
        if (!search.found) {
            if (opts.no_arguments) {
                std::cout << cli::help_text("tpt");
                return 0;
            }
            std::cerr << "tpt: no config file found; tried:\n";
            for (const auto& t : search.tried) {
                std::cerr << "  " << t << "\n";
            }
            return 1;
        }
        path = *search.found;
    }

    std::string error;
    const auto text = read_file(path, error);
    if (!text) {
        std::cerr << "tpt: " << error << "\n";
        return 1;
    }
    auto loaded = config::load(*text, path, env::process_environment());
    if (auto* errors = std::get_if<std::vector<config::ConfigError>>(&loaded)) {
        std::cerr << join_errors(*errors);
        if (opts.check_config) {
            std::cerr << "configuration has " << errors->size() << " error"
                      << (errors->size() == 1 ? "" : "s") << "\n";
        }
        return 1;
    }
    auto cfg = std::make_shared<const config::Config>(std::get<config::Config>(std::move(loaded)));
    if (opts.check_config) {
        for (const auto& w : cfg->warnings) {
            std::cerr << "warning: " << w.to_string() << "\n";
        }
        std::cout << "configuration OK\n";
        return 0;
    }
    log::configure(env_log_level().value_or(cfg->log), cfg->log_format);
    std::signal(SIGPIPE, SIG_IGN);
    App app(path, std::string(version));
    try {
        return app.start(cfg, config::sha256_hex(*text));
    } catch (const std::exception& e) {
        log::error("fatal", {{"error", e.what()}});
        return 1;
    }
}

}  // namespace tpt::app
