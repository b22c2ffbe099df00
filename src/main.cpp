// main: argv -> App -> exit code.
#include <cstdio>

int main() {
    std::puts("tpt: not built yet");
    return 1;
}
