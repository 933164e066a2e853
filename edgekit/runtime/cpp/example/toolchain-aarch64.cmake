# Cross-compiling the example for 64-bit ARM Linux (Raspberry Pi 4/5, Jetson) from x86_64:
#   apt-get install -y g++-aarch64-linux-gnu
#   cmake -S example -B build-arm -DCMAKE_TOOLCHAIN_FILE=example/toolchain-aarch64.cmake && cmake --build build-arm
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
