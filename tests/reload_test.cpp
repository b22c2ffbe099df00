#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <tpt/reload.hpp>

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "tpt-reload-XXXXXX").string();
        path = mkdtemp(tmpl.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void write(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::trunc) << text;
}

// Runs the io_context until the watcher has called back `want` times or 3 s pass.
class WatcherHarness {
public:
    explicit WatcherHarness(const fs::path& config, bool inotify = true,
                            std::chrono::milliseconds poll = 0ms)
        : watcher_(std::make_shared<tpt::reload::Watcher>(
              io_.get_executor(), config.string(), [this](tpt::reload::Trigger why) {
                  calls_.emplace_back(tpt::reload::to_string(why));
              })) {
        watcher_->start(inotify, poll);
        io_.poll();
    }
    ~WatcherHarness() {
        watcher_->stop();
        io_.poll();
    }

    bool wait_for_calls(std::size_t want) {
        const auto deadline = std::chrono::steady_clock::now() + 3s;
        while (calls_.size() < want && std::chrono::steady_clock::now() < deadline) {
            io_.run_for(20ms);
        }
        return calls_.size() >= want;
    }

    // Lets pending events settle (for "coalesced into one call" checks).
    void settle() { io_.run_for(300ms); }

    const std::vector<std::string>& calls() const { return calls_; }
    tpt::reload::Watcher& watcher() { return *watcher_; }

private:
    boost::asio::io_context io_;
    std::vector<std::string> calls_;
    std::shared_ptr<tpt::reload::Watcher> watcher_;
};

TEST(Watcher, SeesWriteInPlace) {
    TempDir dir;
    const auto cfg = dir.path / "tpt.yaml";
    write(cfg, "version: 1\n");
    WatcherHarness h(cfg);
    write(cfg, "version: 2\n");
    ASSERT_TRUE(h.wait_for_calls(1));
    EXPECT_EQ(h.calls().front(), "inotify");
}

TEST(Watcher, SeesRenameOver) {
    TempDir dir;
    const auto cfg = dir.path / "tpt.yaml";
    write(cfg, "version: 1\n");
    WatcherHarness h(cfg);
    write(dir.path / ".tpt.yaml.swp", "version: 2\n");
    fs::rename(dir.path / ".tpt.yaml.swp", cfg);
    ASSERT_TRUE(h.wait_for_calls(1));
}

TEST(Watcher, CoalescesABurstIntoOneCall) {
    TempDir dir;
    const auto cfg = dir.path / "tpt.yaml";
    write(cfg, "a\n");
    WatcherHarness h(cfg);
    for (int i = 0; i < 20; ++i) {
        write(cfg, "version: " + std::to_string(i) + "\n");
    }
    ASSERT_TRUE(h.wait_for_calls(1));
    h.settle();
    EXPECT_EQ(h.calls().size(), 1U);
}

// The kubelet's atomic writer: ..<ts>/config.yaml, ..data -> ..<ts>, config.yaml ->
// ..data/config.yaml. An update never touches config.yaml itself.
TEST(Watcher, FollowsConfigMapSymlinkSwapsRepeatedly) {
    TempDir dir;
    auto make_generation = [&](int n) {
        const auto ts = dir.path / ("..2026_11_25_10_00_0" + std::to_string(n));
        fs::create_directory(ts);
        write(ts / "config.yaml", "generation: " + std::to_string(n) + "\n");
        return ts;
    };
    auto old = make_generation(0);
    fs::create_directory_symlink(old.filename(), dir.path / "..data");
    fs::create_symlink("..data/config.yaml", dir.path / "config.yaml");
    WatcherHarness h(dir.path / "config.yaml");
    EXPECT_EQ(h.watcher().watched().size(), 2U);  // /dir and /dir/..<ts>

    for (int n = 1; n <= 5; ++n) {
        const auto next = make_generation(n);
        fs::create_directory_symlink(next.filename(), dir.path / "..data_tmp");
        fs::rename(dir.path / "..data_tmp", dir.path / "..data");
        fs::remove_all(old);
        old = next;
        ASSERT_TRUE(h.wait_for_calls(static_cast<std::size_t>(n))) << "update " << n;
        h.settle();
        // The real directory's watch follows the swap.
        const auto dirs = h.watcher().watched();
        EXPECT_NE(std::find(dirs.begin(), dirs.end(), next.string()), dirs.end()) << "update " << n;
    }
}

TEST(Watcher, PollFallbackCallsBackWithoutInotify) {
    TempDir dir;
    const auto cfg = dir.path / "tpt.yaml";
    write(cfg, "a\n");
    WatcherHarness h(cfg, /*inotify=*/false, /*poll=*/100ms);
    ASSERT_TRUE(h.wait_for_calls(2));
    EXPECT_EQ(h.calls().front(), "poll");
    EXPECT_TRUE(h.watcher().watched().empty());
}

TEST(SubPath, DetectsAFileMountPointWithoutDataDir) {
    const std::string mountinfo =
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        "1543 1521 8:1 /var/lib/kubelet/pods/x/volumes/kubernetes.io~configmap/cfg/..2026/tpt.yaml "
        "/etc/tpt/tpt.yaml ro,relatime - ext4 /dev/sda1 rw\n";
    EXPECT_TRUE(tpt::reload::is_subpath_mount(mountinfo, "/etc/tpt/tpt.yaml", false));
    EXPECT_FALSE(tpt::reload::is_subpath_mount(mountinfo, "/etc/tpt/tpt.yaml", true));
    EXPECT_FALSE(tpt::reload::is_subpath_mount(mountinfo, "/etc/other.yaml", false));
    EXPECT_FALSE(tpt::reload::is_subpath_mount("", "/etc/tpt/tpt.yaml", false));
}

// SPEC §13: the hash covers the referenced files' content, whatever order they were read in
// (a load reads them in YAML order, a change check in path order).
TEST(ContentHash, CoversReferencedFilesInAnyOrder) {
    using tpt::reload::FileContent;
    const std::string text = "servers: {}\n";
    EXPECT_EQ(tpt::reload::content_hash(text, {}), tpt::config::sha256_hex(text));
    const std::vector<FileContent> ab{{"/c/a", "1"}, {"/c/b", "2"}};
    const std::vector<FileContent> ba{{"/c/b", "2"}, {"/c/a", "1"}};
    EXPECT_EQ(tpt::reload::content_hash(text, ab), tpt::reload::content_hash(text, ba));
    const std::vector<FileContent> rotated{{"/c/a", "1"}, {"/c/b", "3"}};
    EXPECT_NE(tpt::reload::content_hash(text, ab), tpt::reload::content_hash(text, rotated));
    const std::vector<FileContent> unreadable{{"/c/a", "1"}, {"/c/b", std::nullopt}};
    EXPECT_NE(tpt::reload::content_hash(text, ab), tpt::reload::content_hash(text, unreadable));
    EXPECT_NE(tpt::reload::content_hash(text, ab), tpt::config::sha256_hex(text));
}

}  // namespace
