#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <tpt/log.hpp>
#include <tpt/reload.hpp>

#include <sys/inotify.h>

namespace tpt::reload {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr auto quiet_period = 50ms;
constexpr auto max_delay = 100ms;
constexpr std::uint32_t watch_mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                     IN_DELETE | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF |
                                     IN_MOVE_SELF | IN_DONT_FOLLOW;

// True when a watch ended or events were dropped (IN_IGNORED, IN_DELETE_SELF,
// IN_Q_OVERFLOW): then every watch is re-added and the file re-read. Kept out of the
// coroutine: inotify_event ends in a flexible array member, which a frame cannot hold.
bool watch_lost(const char* buf, std::size_t n) {
    bool lost = false;
    for (std::size_t off = 0; off + sizeof(inotify_event) <= n;) {
        inotify_event ev{};
        std::memcpy(&ev, buf + off, sizeof ev);
        if ((ev.mask & (IN_IGNORED | IN_DELETE_SELF | IN_Q_OVERFLOW)) != 0) {
            lost = true;
        }
        off += sizeof(inotify_event) + ev.len;
    }
    return lost;
}

std::string parent_of(const fs::path& p) {
    auto parent = p.parent_path();
    return parent.empty() ? std::string(".") : parent.string();
}

// How long an invalid file seen by inotify gets to become valid before the failure counts.
constexpr auto settle_delay = 300ms;

Result<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return Error{path + ": cannot open: " + std::strerror(errno)};
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) {
        return Error{path + ": read error"};
    }
    return Result<std::string>{boost::system::in_place_value, ss.str()};
}

// `inner`, keeping what it read (each path once) for content_hash().
env::FileReader recording(env::FileReader inner, std::vector<FileContent>& read) {
    return [inner = std::move(inner), &read](std::string_view path) {
        auto content = inner(path);
        const bool seen = std::any_of(read.begin(), read.end(),
                                      [&](const FileContent& f) { return f.path == path; });
        if (!seen) {
            read.push_back(
                FileContent{std::string(path), content ? std::optional(*content) : std::nullopt});
        }
        return content;
    };
}

// content_hash() of `text` with the files at `paths` as they are now.
std::string state_hash(std::string_view text, const std::vector<std::string>& paths) {
    std::vector<FileContent> read;
    const auto reader = recording(env::file_system(), read);
    for (const auto& p : paths) {
        (void)reader(p);
    }
    return content_hash(text, read);
}

// Adds to `dirs` the directory of `path` as given and, where it is another one, the
// directory of its real path (SPEC §7).
void add_directories(const std::string& path, std::vector<std::string>& dirs) {
    const auto add = [&dirs](const std::string& dir) {
        const bool known = std::any_of(dirs.begin(), dirs.end(), [&](const std::string& d) {
            std::error_code ec;
            return d == dir || fs::equivalent(d, dir, ec);
        });
        if (!known) {
            dirs.push_back(dir);
        }
    };
    add(parent_of(fs::path(path)));
    std::error_code ec;
    const auto real = fs::canonical(fs::path(path), ec);
    if (!ec) {
        add(parent_of(real));
    }
}
}  // namespace

std::string content_hash(std::string_view text, const std::vector<FileContent>& files) {
    if (files.empty()) {
        return config::sha256_hex(text);  // as before SPEC §13: the file's own hash
    }
    // Every part with its length, so that no two different inputs give the same bytes; the
    // files by path, so that the order they were read in does not matter.
    std::vector<const FileContent*> sorted;
    for (const auto& f : files) {
        sorted.push_back(&f);
    }
    std::sort(sorted.begin(), sorted.end(),
              [](const FileContent* a, const FileContent* b) { return a->path < b->path; });
    std::string all = std::to_string(text.size()) + ':';
    all += text;
    for (const FileContent* p : sorted) {
        const FileContent& f = *p;
        all += '\0';
        all += std::to_string(f.path.size()) + ':' + f.path;
        all += f.content ? std::to_string(f.content->size()) + ':' + *f.content : "unreadable";
    }
    return config::sha256_hex(all);
}

std::string_view to_string(Trigger t) noexcept {
    // In the order of the enumeration.
    static constexpr std::array<std::string_view, 5> names{"inotify", "inotify-settled", "poll",
                                                           "SIGHUP", "admin"};
    return enum_name(names, t, "unknown");
}

void throw_exception_from_error(const LoadFailure& f, const boost::source_location& /*where*/) {
    throw std::invalid_argument(f.text);
}

void throw_exception_from_error(const Reloader::NoChange& n,
                                const boost::source_location& /*where*/) {
    throw std::invalid_argument(n.detail);
}

boost::system::result<Loaded, LoadFailure> load_file(const std::string& path,
                                                     const env::Lookup& lookup,
                                                     const env::FileReader& read_file) {
    const auto text = tpt::reload::read_file(path);
    if (!text) {
        return LoadFailure{text.error().message + "\n", 1};
    }
    std::vector<FileContent> read;
    auto loaded = config::load(*text, path, lookup, recording(read_file, read));
    if (!loaded) {
        return LoadFailure{config::to_string(loaded.error()), loaded.error().size()};
    }
    return Loaded{std::make_shared<const config::Config>(std::move(loaded).value()),
                  content_hash(*text, read)};
}

void warn_if_subpath(const std::string& path) {
    std::error_code ec;
    const auto real = fs::canonical(path, ec);
    const auto mountinfo = read_file("/proc/self/mountinfo");
    if (ec || !mountinfo) {
        return;
    }
    const bool has_data = fs::exists(fs::path(path).parent_path() / "..data", ec);
    if (is_subpath_mount(*mountinfo, real.string(), has_data)) {
        log::warn(
            "the config file is a subPath mount: Kubernetes will never update it; mount "
            "the ConfigMap as a directory to get hot reloads",
            {{"path", path}});
    }
}

Reloader::Reloader(net::any_io_executor executor, std::string path, const Loaded& running,
                   std::function<void(Trigger)> on_trigger)
    : path_(std::move(path)),
      watcher_(std::make_shared<Watcher>(executor, path_, on_trigger)),
      running_(running.sha256),
      running_files_(running.config->files),
      settle_timer_(executor),
      on_trigger_(std::move(on_trigger)) {}

void Reloader::start(bool watch, std::chrono::milliseconds poll_interval) {
    watcher_->set_files(running_files_);
    watcher_->start(watch, poll_interval);
}

void Reloader::set_poll_interval(std::chrono::milliseconds poll_interval) {
    watcher_->set_poll_interval(poll_interval);
}

void Reloader::stop() {
    watcher_->stop();
    settle_timer_.cancel();
}

boost::system::result<Loaded, Reloader::NoChange> Reloader::next(Trigger why) {
    using Kind = NoChange::Kind;
    const bool force = why == Trigger::signal || why == Trigger::admin;
    const auto text = read_file(path_);
    if (!text) {
        return NoChange{Kind::failed, text.error().message};
    }
    if (!force && (state_hash(*text, running_files_) == running_ ||
                   (why == Trigger::inotify && !last_failed_.empty() &&
                    state_hash(*text, failed_files_) == last_failed_))) {
        return NoChange{Kind::unchanged, running_};
    }
    std::vector<FileContent> read;
    auto loaded =
        config::load(*text, path_, env::process_environment(), recording(env::file_system(), read));
    auto hash = content_hash(*text, read);
    if (!loaded) {
        if (why == Trigger::inotify) {
            settle_later();
            return NoChange{Kind::settling, config::to_string(loaded.error())};
        }
        remember_failed(std::move(hash), read);
        return NoChange{Kind::failed, config::to_string(loaded.error())};
    }
    remember_failed(hash, read);  // until applied() says otherwise
    return Loaded{std::make_shared<const config::Config>(std::move(loaded).value()),
                  std::move(hash)};
}

void Reloader::remember_failed(std::string sha256, const std::vector<FileContent>& read) {
    last_failed_ = std::move(sha256);
    failed_files_.clear();
    for (const auto& f : read) {
        failed_files_.push_back(f.path);
    }
}

void Reloader::applied(const Loaded& loaded) {
    running_ = loaded.sha256;
    running_files_ = loaded.config->files;
    last_failed_.clear();
    failed_files_.clear();
    watcher_->set_files(running_files_);
}

void Reloader::rejected(const std::string& sha256) {
    last_failed_ = sha256;
}

// A write in place (truncate, then write) can be read half-way: look again once the writer
// had time to finish, and judge only that read.
void Reloader::settle_later() {
    if (settle_pending_) {
        return;
    }
    settle_pending_ = true;
    settle_timer_.expires_after(settle_delay);
    settle_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        self->settle_pending_ = false;
        if (!ec) {
            self->on_trigger_(Trigger::settled);
        }
    });
}

Watcher::Watcher(net::any_io_executor executor, std::string path, Callback on_maybe_changed)
    : executor_(executor),
      path_(std::move(path)),
      callback_(std::move(on_maybe_changed)),
      quiet_timer_(executor) {}

Watcher::~Watcher() {
    if (stream_) {
        boost::system::error_code ignored;
        stream_->close(ignored);
    }
}

void Watcher::start(bool inotify, std::chrono::milliseconds poll_interval) {
    if (inotify) {
        fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd_ < 0) {
            log::error("inotify unavailable, relying on the poll fallback",
                       {{"error", std::strerror(errno)}});
        } else {
            stream_ = std::make_unique<net::posix::stream_descriptor>(executor_, fd_);
            rewatch();
            net::co_spawn(executor_, read_loop(shared_from_this()), net::detached);
        }
    }
    set_poll_interval(poll_interval);
}

void Watcher::set_poll_interval(std::chrono::milliseconds poll_interval) {
    if (poll_interval == poll_interval_) {
        return;
    }
    poll_interval_ = poll_interval;
    ++poll_generation_;  // ends the previous poll loop at its next wake-up
    if (poll_interval_ > 0ms && !stopped_) {
        net::co_spawn(executor_, poll_loop(shared_from_this(), poll_generation_), net::detached);
    }
}

void Watcher::set_files(std::vector<std::string> files) {
    files_ = std::move(files);
    rewatch();
}

void Watcher::stop() {
    stopped_ = true;
    ++poll_generation_;
    quiet_timer_.cancel();
    if (stream_) {
        boost::system::error_code ignored;
        stream_->close(ignored);
    }
}

std::vector<std::string> Watcher::watched() const {
    std::vector<std::string> dirs;
    for (const auto& [wd, dir] : watches_) {
        dirs.push_back(dir);
    }
    return dirs;
}

void Watcher::rewatch() {
    if (fd_ < 0 || stopped_) {
        return;
    }
    std::vector<std::string> wanted;
    add_directories(path_, wanted);
    for (const auto& f : files_) {
        add_directories(f, wanted);
    }
    // Drop watches on directories we no longer want (the old ..<timestamp> dir is deleted by
    // the kubelet anyway; its watch then ends with IN_IGNORED).
    for (auto it = watches_.begin(); it != watches_.end();) {
        if (std::find(wanted.begin(), wanted.end(), it->second) == wanted.end()) {
            inotify_rm_watch(fd_, it->first);
            it = watches_.erase(it);
        } else {
            ++it;
        }
    }
    for (const auto& dir : wanted) {
        const int wd = inotify_add_watch(fd_, dir.c_str(), watch_mask);
        if (wd < 0) {
            log::warn("cannot watch config directory",
                      {{"dir", dir}, {"error", std::strerror(errno)}});
            continue;
        }
        watches_[wd] = dir;
    }
}

net::awaitable<void> Watcher::read_loop(std::shared_ptr<Watcher> self) {
    alignas(inotify_event) std::array<char, 8192> buf{};
    while (!self->stopped_) {
        auto [ec, n] = co_await self->stream_->async_read_some(net::buffer(buf), use_tuple);
        if (ec) {
            if (ec != net::error::operation_aborted) {
                log::error("inotify read failed", {{"error", ec.message()}});
            }
            co_return;
        }
        if (watch_lost(buf.data(), n)) {
            self->watches_.clear();  // re-add everything: add_watch is idempotent per dir
        }
        self->rewatch();
        self->event_seen();
    }
}

void Watcher::event_seen() {
    const auto now = std::chrono::steady_clock::now();
    if (!pending_) {
        pending_ = true;
        first_event_ = now;
    }
    const auto latest = first_event_ + max_delay;
    quiet_timer_.expires_at(std::min(now + quiet_period, latest));
    quiet_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (!ec) {
            self->fire();
        }
    });
}

void Watcher::fire() {
    pending_ = false;
    if (!stopped_) {
        callback_(Trigger::inotify);
    }
}

net::awaitable<void> Watcher::poll_loop(std::shared_ptr<Watcher> self, std::uint64_t generation) {
    net::steady_timer timer(self->executor_);
    while (!self->stopped_ && generation == self->poll_generation_) {
        timer.expires_after(self->poll_interval_);
        co_await timer.async_wait(use_tuple);
        if (self->stopped_ || generation != self->poll_generation_) {
            co_return;
        }
        self->callback_(Trigger::poll);
    }
}

bool is_subpath_mount(std::string_view mountinfo, std::string_view real_path, bool has_data_dir) {
    if (has_data_dir) {
        return false;
    }
    // mountinfo(5): "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": the
    // fifth field is the mount point (octal escapes for spaces, which we compare raw).
    std::istringstream in{std::string(mountinfo)};
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string f[5];
        for (auto& x : f) {
            fields >> x;
        }
        if (f[4] == real_path) {
            return true;
        }
    }
    return false;
}

}  // namespace tpt::reload
