// tests/bench/loopback_only.cpp: libloopback_only.so, preloaded into the
// external servers the benchmark starts (LD_PRELOAD), so that none of them
// listens beyond loopback. A server that binds the wildcard address (Boost's
// async_tcp_echo_server binds tcp::v4(), 0.0.0.0) gets 127.0.0.1 instead
// (::1 for ::); any other address is left as it was asked.
#include <dlfcn.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

extern "C" int bind(int fd, const sockaddr* address, socklen_t length) {
    using Bind = int (*)(int, const sockaddr*, socklen_t);
    static const auto real_bind = reinterpret_cast<Bind>(::dlsym(RTLD_NEXT, "bind"));
    if (address != nullptr && address->sa_family == AF_INET && length >= sizeof(sockaddr_in)) {
        sockaddr_in loopback;
        std::memcpy(&loopback, address, sizeof loopback);
        if (loopback.sin_addr.s_addr == htonl(INADDR_ANY)) {
            loopback.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, reinterpret_cast<const sockaddr*>(&loopback), sizeof loopback);
        }
    }
    if (address != nullptr && address->sa_family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
        sockaddr_in6 loopback;
        std::memcpy(&loopback, address, sizeof loopback);
        if (std::memcmp(&loopback.sin6_addr, &in6addr_any, sizeof in6addr_any) == 0) {
            loopback.sin6_addr = in6addr_loopback;
            return real_bind(fd, reinterpret_cast<const sockaddr*>(&loopback), sizeof loopback);
        }
    }
    return real_bind(fd, address, length);
}
