// deny_io_uring: runs a command with io_uring switched off, as a container's
// seccomp profile switches it off (Docker's default since 25.0), so that a
// test can see what an io_uring program does then.
//
// usage: deny_io_uring [--enosys] COMMAND [ARGS...]
//
// It installs a seccomp filter under which io_uring_setup, io_uring_enter
// and io_uring_register fail with EPERM (--enosys: ENOSYS, as on a kernel
// built without io_uring), every other system call is allowed, and then
// execs COMMAND. The filter is inherited by COMMAND and its children and
// cannot be removed. No privilege is needed: PR_SET_NO_NEW_PRIVS first
// (seccomp(2)). Raw BPF, no libseccomp. Exit 127: COMMAND not run; 126:
// the filter could not be installed.

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <string_view>

namespace {

#if defined(__x86_64__)
constexpr unsigned this_architecture = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned this_architecture = AUDIT_ARCH_AARCH64;
#else
#error "deny_io_uring: add this architecture's AUDIT_ARCH_* value"
#endif

// "Return this errno" as a filter's verdict.
constexpr unsigned fail_with(int error) {
    return SECCOMP_RET_ERRNO | (static_cast<unsigned>(error) & SECCOMP_RET_DATA);
}

bool deny_io_uring(int error) {
    const unsigned verdict = fail_with(error);
    sock_filter filter[] = {
        // A system call of another architecture has other numbers: refuse it outright.
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, this_architecture, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        // The three io_uring calls fail with `error`; everything else is allowed.
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_enter, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, verdict),
    };
    const sock_fprog program{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
        std::fprintf(stderr, "deny_io_uring: prctl PR_SET_NO_NEW_PRIVS: %s\n", ::strerror(errno));
        return false;
    }
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) == -1) {
        std::fprintf(stderr, "deny_io_uring: prctl PR_SET_SECCOMP SECCOMP_MODE_FILTER: %s\n", ::strerror(errno));
        return false;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    int first = 1;
    int error = EPERM;
    if (argc > 1 && std::string_view(argv[1]) == "--enosys") {
        error = ENOSYS;
        first = 2;
    }
    if (first >= argc || argv[first][0] == '-') {
        std::fprintf(stderr, "usage: deny_io_uring [--enosys] COMMAND [ARGS...]\n");
        return 2;
    }
    if (!deny_io_uring(error)) {
        return 126;
    }
    ::execvp(argv[first], argv + first);
    std::fprintf(stderr, "deny_io_uring: exec %s: %s\n", argv[first], ::strerror(errno));
    return 127;
}
