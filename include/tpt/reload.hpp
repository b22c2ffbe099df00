// reload: notices that the config file may have changed (inotify on its directories, and a
// poll fallback) and calls back, coalesced. Reading, hashing and applying is the app's job.
// Thread affinity: everything on the control executor.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

namespace tpt::reload {

namespace net = boost::asio;

// SPEC §7. Watches dirname(path as given) and, where it differs, dirname(realpath(path)),
// re-resolved after every batch of events, so it follows write-in-place, rename-over and the
// Kubernetes ConfigMap `..data` symlink swap. Every event means "maybe changed"; events are
// coalesced: the callback runs 50 ms after the last event, or at the latest 100 ms after the
// first one. `why` is "inotify" or "poll".
class Watcher : public std::enable_shared_from_this<Watcher> {
public:
    using Callback = std::function<void(std::string_view why)>;

    Watcher(net::any_io_executor executor, std::string path, Callback on_maybe_changed);
    ~Watcher();

    // inotify: watch the directories (a failure is logged and the poll fallback still runs).
    void start(bool inotify, std::chrono::milliseconds poll_interval);
    void set_poll_interval(std::chrono::milliseconds poll_interval);
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

// SPEC §7: the config is a subPath mount when its real path is a mount point of its own in
// /proc/self/mountinfo (`mountinfo` is that file's text) and there is no `..data` beside the
// path as given (`has_data_dir`). Kubernetes never updates such a file.
bool is_subpath_mount(std::string_view mountinfo, std::string_view real_path, bool has_data_dir);

}  // namespace tpt::reload
