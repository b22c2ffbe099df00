// app: the whole program: CLI, first load, workers, listeners, admin, reload, signals,
// shutdown. Publishes every new snapshot.
// Thread affinity: run() on the main thread, which becomes the control thread (admin server,
// reloads, signals, the inotify watcher); the data path runs on the runtime's workers.
#pragma once

#include <string_view>

namespace tpt::app {

// argv -> exit code (SPEC §2, §8).
int run(int argc, const char* const* argv, std::string_view version);

}  // namespace tpt::app
