#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>
#include <variant>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <tpt/admin.hpp>
#include <tpt/app.hpp>
#include <tpt/capture.hpp>
#include <tpt/cli.hpp>
#include <tpt/config.hpp>
#include <tpt/connect.hpp>
#include <tpt/log.hpp>
#include <tpt/metrics.hpp>
#include <tpt/reload.hpp>
#include <tpt/routing.hpp>
#include <tpt/runtime.hpp>
#include <tpt/server_set.hpp>
#include <tpt/snapshot.hpp>
#include <tpt/upstream.hpp>

namespace tpt::app {

namespace net = boost::asio;
namespace fs = std::filesystem;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

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

// The admin server's address: the first of what a listen address resolves to.
Result<tcp::endpoint> admin_endpoint(const address::HostPort& listen) {
    auto eps = runtime::listen_endpoints(listen, address::Family::any);
    if (!eps) {
        return eps.error();
    }
    return eps->front();
}

std::string admin_listen_of(const config::Config& cfg) {
    return cfg.admin.listen ? cfg.admin.listen->to_string() : std::string{};
}

// The active probes' CONNECT exchange (SPEC §13 probe_target): upstream::Prober cannot name
// the connect module, which comes after it.
net::awaitable<Outcome> probe_handshake(tcp::socket& socket, std::string target,
                                        const std::vector<config::Header>& headers,
                                        runtime::Deadline& deadline) {
    const auto r = co_await connect::handshake(socket, target, headers, deadline);
    co_return r.outcome;
}

class App {
public:
    App(std::string path, std::string version)
        : path_(std::move(path)), version_(std::move(version)) {}

    int start(const reload::Loaded& first) {
        metrics_ = metrics::make_metrics(version_);
        const auto workers = std::max(1U, std::thread::hardware_concurrency());
        runtime_ = std::make_unique<runtime::Runtime>(workers);
        servers_ = std::make_unique<server_set::ServerSet>(*runtime_);
        prober_ = std::make_unique<upstream::Prober>(control_.get_executor(), probe_handshake);
        handlers_ = make_handlers();

        auto snap = snapshot::build(first.config, first.sha256, nullptr, *metrics_, handlers_);
        auto bound = bind(snap);
        if (!bound) {
            log::error("cannot start", {{"error", bound.error().message}});
            return 1;
        }
        publish(snap);
        metrics_->config_loaded(first.sha256, unix_now());
        runtime_->start();

        reloader_ =
            std::make_shared<reload::Reloader>(control_.get_executor(), path_, first,
                                               [this](reload::Trigger why) { reload_now(why); });
        reloader_->start(first.config->reload.watch, first.config->reload.poll_interval);
        reload::warn_if_subpath(path_);

        net::co_spawn(control_, signals(), net::detached);
        ready_ = true;
        log::info("tpt started", {{"version", version_},
                                  {"config", path_},
                                  {"sha256", first.sha256},
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

    snapshot::SnapshotPtr current() {
        const std::lock_guard lock(mutex_);
        return current_;
    }

    // GET /config (SPEC §6).
    std::string config_json() {
        const auto snap = current();
        boost::json::object root;
        root["sha256"] = snap->sha256;
        root["path"] = path_;
        root["config"] = boost::json::parse(config::to_json(*snap->config));
        return boost::json::serialize(root);
    }

    net::awaitable<admin::ReloadAnswer> reload_async() {
        co_return reload_now(reload::Trigger::admin);
    }

    // SPEC §7, on the control thread: read -> load -> build -> bind (all or nothing) ->
    // publish -> report.
    admin::ReloadAnswer reload_now(reload::Trigger why) {
        if (stopping_) {
            return {503, "shutting down\n"};
        }
        auto loaded = reloader_->next(why);
        if (!loaded) {
            return no_change(why, loaded.error());
        }
        const auto old = current();
        auto snap =
            snapshot::build(loaded->config, loaded->sha256, old.get(), *metrics_, handlers_);
        auto applied = bind(snap);
        if (!applied) {
            reloader_->rejected(loaded->sha256);
            return fail(why, 500, applied.error().message);
        }
        reloader_->set_poll_interval(snap->config->reload.poll_interval);
        publish(snap);
        reloader_->applied(*loaded);
        report(why, *old, *snap, *applied);
        return {200, snap->sha256 + "\n"};
    }

    admin::ReloadAnswer no_change(reload::Trigger why, const reload::Reloader::NoChange& n) {
        using Kind = reload::Reloader::NoChange::Kind;
        switch (n.kind) {
            case Kind::unchanged:
                return {200, n.detail + "\n"};
            case Kind::settling:
                return {400, n.detail};
            case Kind::failed:
                break;
        }
        return fail(why, 400, n.detail);
    }

    // The admin server moves first (it may fail), then the listeners (all or nothing); a
    // failure leaves everything as it was.
    Result<server_set::Applied> bind(const snapshot::SnapshotPtr& snap) {
        const std::string listen = admin_listen_of(*snap->config);
        std::shared_ptr<admin::AdminServer> moved;
        if (listen != admin_listen_ && !listen.empty()) {
            auto ep = admin_endpoint(*snap->config->admin.listen);
            try {
                if (!ep) {
                    return ep.error();
                }
                moved =
                    std::make_shared<admin::AdminServer>(control_.get_executor(), *ep, handlers_);
            } catch (const boost::system::system_error& e) {
                return Error{"cannot bind admin.listen " + listen + ": " + e.code().message()};
            }
        }
        auto applied = servers_->apply(snap);
        if (!applied) {
            if (moved) {
                moved->stop();
            }
            return applied;
        }
        if (listen != admin_listen_) {
            if (admin_) {
                admin_->stop();
            }
            admin_ = std::move(moved);
            if (admin_) {
                admin_->start();
            }
            admin_listen_ = listen;
        }
        return applied;
    }

    void publish(snapshot::SnapshotPtr snap) {
        const auto& cfg = *snap->config;
        control_any_ = cfg.admin.control_from == config::ControlFrom::any;
        log::configure(env_log_level().value_or(cfg.log), cfg.log_format);
        for (const auto& w : cfg.warnings) {
            log::warn("config warning", {{"detail", w.to_string()}});
        }
        prober_->adopt(snap->pools, cfg.resolve_interval);
        const std::lock_guard lock(mutex_);
        current_ = std::move(snap);
    }

    void report(reload::Trigger why, const snapshot::Snapshot& old, const snapshot::Snapshot& now,
                const server_set::Applied& applied) {
        const auto diff = routing::diff(*old.config, *now.config);
        for (const auto& name : diff.removed_servers) {
            metrics_->forget_server(name);
        }
        metrics_->reload_result(true, now.sha256, unix_now());
        log::info("config reloaded",
                  {{"trigger", std::string(reload::to_string(why))},
                   {"sha256", now.sha256},
                   {"servers_added", std::to_string(diff.added_servers.size())},
                   {"servers_removed", std::to_string(diff.removed_servers.size())},
                   {"servers_changed", std::to_string(diff.changed_servers.size())},
                   {"listen_added", std::to_string(applied.added_listen.size())},
                   {"listen_removed", std::to_string(applied.removed_listen.size())}});
    }

    admin::ReloadAnswer fail(reload::Trigger why, unsigned status, const std::string& error) {
        metrics_->reload_result(false, "", unix_now());
        log::error("config reload failed, keeping the running config",
                   {{"trigger", std::string(reload::to_string(why))}, {"error", error}});
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
                reload_now(reload::Trigger::signal);
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
        const auto cfg = current()->config;
        const auto delay = cfg->shutdown.delay;
        const auto drain = cfg->shutdown.drain_timeout;
        log::info("shutdown: not ready; still accepting",
                  {{"delay", duration::format(delay)}, {"drain_timeout", duration::format(drain)}});
        net::steady_timer timer(control_);
        if (delay > 0ms) {
            timer.expires_after(delay);
            co_await timer.async_wait(use_tuple);
        }
        servers_->close_all();
        reloader_->stop();
        log::info("shutdown: listeners closed, draining",
                  {{"live", std::to_string(servers_->live())}});
        co_await drain_for(timer, drain);
        if (const auto left = servers_->live(); left > 0) {
            log::warn("shutdown: drain timeout, closing live tunnels",
                      {{"live", std::to_string(left)}});
            servers_->abort_all();
            co_await drain_for(timer, 2s);
        }
        if (admin_) {
            admin_->stop();
        }
        control_.stop();
    }

    // Until no tunnel is live, or `limit` passed (0: no limit).
    net::awaitable<void> drain_for(net::steady_timer& timer, std::chrono::milliseconds limit) {
        const auto deadline = runtime::Clock::now() + limit;
        while (servers_->live() > 0 && (limit == 0ms || runtime::Clock::now() < deadline)) {
            timer.expires_after(10ms);
            co_await timer.async_wait(use_tuple);
        }
    }

    std::string path_;
    std::string version_;
    net::io_context control_{1};
    std::unique_ptr<metrics::Metrics> metrics_;
    std::unique_ptr<runtime::Runtime> runtime_;
    std::unique_ptr<server_set::ServerSet> servers_;
    std::unique_ptr<upstream::Prober> prober_;
    admin::HandlersPtr handlers_;
    std::shared_ptr<admin::AdminServer> admin_;
    std::string admin_listen_;
    std::shared_ptr<reload::Reloader> reloader_;
    std::mutex mutex_;  // guards current_ (admin handlers read it from any thread)
    snapshot::SnapshotPtr current_;
    std::atomic<bool> ready_{false};
    std::atomic<bool> control_any_{false};
    bool stopping_ = false;
};

// The path of the config file (SPEC §2), or the exit code when there is none to run.
std::variant<std::string, int> config_path(const cli::Options& opts) {
    if (opts.config_path) {
        return *opts.config_path;
    }
    const auto search = cli::find_config(env::process_environment(), [](const std::string& p) {
        std::error_code ec;
        return fs::is_regular_file(p, ec);
    });
    if (search.found) {
        return *search.found;
    }
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

}  // namespace

int run(int argc, const char* const* argv, std::string_view version) {
    const auto parsed = cli::parse(argc, argv);
    if (!parsed.options) {
        std::cerr << "tpt: " << parsed.error << "\n"
                  << (parsed.capture ? cli::capture_help_text("tpt") : cli::help_text("tpt"));
        return 2;
    }
    const auto& opts = *parsed.options;
    if (opts.capture) {
        if (opts.capture->help) {
            std::cout << cli::capture_help_text("tpt");
            return 0;
        }
        return static_cast<int>(capture::run(*opts.capture, std::cout, std::cerr));
    }
    if (opts.help || opts.version) {
        std::cout << (opts.help ? cli::help_text("tpt") : "tpt " + std::string(version) + "\n");
        return 0;
    }
    const auto path = config_path(opts);
    if (const auto* code = std::get_if<int>(&path)) {
        return *code;
    }
    const auto& file = std::get<std::string>(path);
    const auto loaded = reload::load_file(file, env::process_environment(), env::file_system());
    if (!loaded) {
        std::cerr << loaded.error().text;
        if (opts.check_config) {
            const auto n = loaded.error().errors;
            std::cerr << "configuration has " << n << " error" << (n == 1 ? "" : "s") << "\n";
        }
        return 1;
    }
    if (opts.check_config) {
        for (const auto& w : loaded->config->warnings) {
            std::cerr << "warning: " << w.to_string() << "\n";
        }
        std::cout << "configuration OK\n";
        return 0;
    }
    log::configure(env_log_level().value_or(loaded->config->log), loaded->config->log_format);
    std::signal(SIGPIPE, SIG_IGN);
    App app(file, std::string(version));
    try {
        return app.start(*loaded);
    } catch (const std::exception& e) {
        log::error("fatal", {{"error", e.what()}});
        return 1;
    }
}

}  // namespace tpt::app
