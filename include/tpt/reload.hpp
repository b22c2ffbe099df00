// reload: what makes a reload happen and what it reads (SPEC §7): the triggers (inotify on
// the config's directories, a poll fallback, SIGHUP, POST /reload), reading, hashing and
// loading the file, and the settling of a file caught half-written. Applying a loaded config
// is the app's job.
// Thread affinity: everything on the control executor, except load_file() (any thread).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/result.hpp>

#include <tpt/config.hpp>
#include <tpt/env.hpp>

namespace tpt::reload {

namespace net = boost::asio;

// Why a reload was attempted. Signals and POST /reload apply even an unchanged file.
enum class Trigger : std::uint8_t { inotify, settled, poll, signal, admin };
std::string_view to_string(Trigger t) noexcept;

// SPEC §7. Watches dirname(path as given) and, where it differs, dirname(realpath(path)),
// re-resolved after every batch of events, so it follows write-in-place, rename-over and the
// Kubernetes ConfigMap `..data` symlink swap; the same for every file the config references
// (SPEC §13: a Secret volume is swapped the same way). Every event means "maybe changed";
// events are coalesced: the callback runs 50 ms after the last event, or at the latest 100 ms
// after the first one. `why` is inotify or poll.
class Watcher : public std::enable_shared_from_this<Watcher> {
public:
    using Callback = std::function<void(Trigger why)>;

    Watcher(net::any_io_executor executor, std::string path, Callback on_maybe_changed);
    ~Watcher();

    // inotify: watch the directories (a failure is logged and the poll fallback still runs).
    void start(bool inotify, std::chrono::milliseconds poll_interval);
    void set_poll_interval(std::chrono::milliseconds poll_interval);
    // The files the config references (config::Config::files), watched like the config.
    void set_files(std::vector<std::string> files);
    void stop();

    // Directories currently watched (for tests and logs).
    std::vector<std::string> watched() const;

private:
    net::awaitable<void> read_loop(std::shared_ptr<Watcher> self);
    net::awaitable<void> poll_loop(std::shared_ptr<Watcher> self, std::uint64_t generation);
    void rewatch();
    void event_seen();
    void fire();

    net::any_io_executor executor_;
    std::string path_;
    std::vector<std::string> files_;
    Callback callback_;
    int fd_ = -1;
    std::unique_ptr<net::posix::stream_descriptor> stream_;
    std::map<int, std::string> watches_;  // wd -> directory
    net::steady_timer quiet_timer_;
    std::chrono::steady_clock::time_point first_event_{};
    bool pending_ = false;
    std::chrono::milliseconds poll_interval_{0};
    std::uint64_t poll_generation_ = 0;
    bool stopped_ = false;
};

// A config file read, hashed and fully validated.
struct Loaded {
    std::shared_ptr<const config::Config> config;
    std::string sha256;  // content_hash() of the file and the files it references
};

// A file the config references and what a load read from it (nullopt: it could not be read).
struct FileContent {
    std::string path;
    std::optional<std::string> content;
};

// The config's sha256 (GET /config, tpt_config_info, change detection): of the file's bytes
// alone when it references no file, else of the bytes and every referenced file's path and
// content, so that a rotated credential in an unchanged config is a change (SPEC §13).
std::string content_hash(std::string_view text, const std::vector<FileContent>& files);

// Why a file gave no config: the errors as the operator reads them, and how many there are.
struct LoadFailure {
    std::string text;  // one error per line: file, YAML path, line, message
    std::size_t errors = 1;
};
[[noreturn]] void throw_exception_from_error(const LoadFailure& f,
                                             const boost::source_location& where);

// Reads `path` and loads it (config::load with `lookup`, and `read_file` for ${file:} and
// auth).
boost::system::result<Loaded, LoadFailure> load_file(const std::string& path,
                                                     const env::Lookup& lookup,
                                                     const env::FileReader& read_file);

// Warns (SPEC §7) when the config file is a subPath mount, which Kubernetes never updates.
void warn_if_subpath(const std::string& path);

// The reload side of the config file: its watcher, the hash of the running config, the
// content that failed last, and the settling of files caught half-written.
class Reloader : public std::enable_shared_from_this<Reloader> {
public:
    // Why next() gives no config to apply. unchanged: the file is what runs (body: its hash);
    // settling: invalid, as seen by inotify, and read again after a short delay before it
    // counts (a write in place may be read half-way); failed: invalid or unreadable.
    struct NoChange {
        enum class Kind : std::uint8_t { unchanged, settling, failed } kind;
        std::string detail;  // the hash, or the errors
    };

    // `on_trigger` is called for every watcher event and settle retry: it runs the reload.
    // `running` is the config loaded at start.
    Reloader(net::any_io_executor executor, std::string path, const Loaded& running,
             std::function<void(Trigger)> on_trigger);

    void start(bool watch, std::chrono::milliseconds poll_interval);
    void set_poll_interval(std::chrono::milliseconds poll_interval);
    void stop();

    // Read -> hash -> load. Unforced triggers act on changed content only, and content that
    // already failed is not retried on inotify events (a failure's log line in the watched
    // directory would trigger the next attempt), only by the poll fallback, SIGHUP and
    // POST /reload.
    boost::system::result<Loaded, NoChange> next(Trigger why);
    // What the app did with next()'s config.
    void applied(const Loaded& loaded);
    void rejected(const std::string& sha256);

private:
    void settle_later();
    void remember_failed(std::string sha256, const std::vector<FileContent>& read);

    std::string path_;
    std::shared_ptr<Watcher> watcher_;
    std::string running_;                     // hash of the running config
    std::vector<std::string> running_files_;  // the files it references
    std::string last_failed_;                 // hash of the content that failed last
    std::vector<std::string> failed_files_;   // the files that load read (or tried to)
    net::steady_timer settle_timer_;
    bool settle_pending_ = false;
    std::function<void(Trigger)> on_trigger_;
};
[[noreturn]] void throw_exception_from_error(const Reloader::NoChange& n,
                                             const boost::source_location& where);

// SPEC §7: the config is a subPath mount when its real path is a mount point of its own in
// /proc/self/mountinfo (`mountinfo` is that file's text) and there is no `..data` beside the
// path as given (`has_data_dir`). Kubernetes never updates such a file.
bool is_subpath_mount(std::string_view mountinfo, std::string_view real_path, bool has_data_dir);

}  // namespace tpt::reload
