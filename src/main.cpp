// main: argv -> App -> exit code.
#include <tpt/app.hpp>

int main(int argc, char** argv) {
    return tpt::app::run(argc, argv, TPT_VERSION);
}
