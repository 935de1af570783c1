/* Tries the system calls a seccomp profile decides and prints one line per
 * call: "name=ok", "name=errno:N" or "name=killed:SIG". Built static by the
 * runtime trust tests and run inside containers under Drover and runc. Each
 * call runs in a child of its own, so a call the filter kills is reported,
 * and one that succeeds changes nothing here. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static long try_vsock(void) { return socket(AF_VSOCK, SOCK_STREAM, 0); }
static long try_alg(void) { return socket(38 /* AF_ALG */, SOCK_SEQPACKET, 0); }
static long try_inet(void) { return socket(AF_INET, SOCK_STREAM, 0); }
static long try_personality(void) { return syscall(SYS_personality, 0x0040000 /* ADDR_NO_RANDOMIZE */); }
static long try_clone3(void) { return syscall(SYS_clone3, NULL, 0); }
static long try_io_uring(void) { return syscall(SYS_io_uring_setup, 1, NULL); }
static long try_userfaultfd(void) { return syscall(SYS_userfaultfd, 0); }
static long try_keyctl(void) { return syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0); }
static long try_mkdir(void) {
    long r = syscall(SYS_mkdirat, -100 /* AT_FDCWD */, "/tmp/probe-dir", 0700);
    if (r == 0) rmdir("/tmp/probe-dir");
    return r;
}
static long try_getpid(void) { return syscall(SYS_getpid); }
#ifdef __x86_64__
static long try_x32(void) { return syscall(0x40000000 | SYS_getpid); }
static long try_i386(void) {
    long ret;
    /* getpid through the 32-bit entry point */
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20) : "memory");
    return ret;
}
#endif

struct probe {
    const char *name;
    long (*call)(void);
};

static const struct probe probes[] = {
    {"getpid", try_getpid},       {"inet", try_inet},
    {"vsock", try_vsock},         {"alg", try_alg},
    {"personality", try_personality}, {"clone3", try_clone3},
    {"io_uring", try_io_uring},   {"userfaultfd", try_userfaultfd},
    {"keyctl", try_keyctl},       {"mkdir", try_mkdir},
#ifdef __x86_64__
    {"x32", try_x32},             {"i386", try_i386},
#endif
};

int main(void) {
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        int fds[2];
        if (pipe(fds) != 0) return 1;
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) {
            long r = probes[i].call();
            int e = r < 0 ? errno : 0;
            /* the int 0x80 path returns -errno itself */
            if (r < 0 && r > -4096 && e == 0) e = (int)-r;
            if (write(fds[1], &e, sizeof e) != sizeof e) _exit(2);
            _exit(0);
        }
        close(fds[1]);
        int status = 0, e = 0;
        waitpid(pid, &status, 0);
        ssize_t n = read(fds[0], &e, sizeof e);
        close(fds[0]);
        if (WIFSIGNALED(status))
            printf("%s=killed:%d\n", probes[i].name, WTERMSIG(status));
        else if (n != sizeof e)
            printf("%s=lost\n", probes[i].name);
        else if (e == 0)
            printf("%s=ok\n", probes[i].name);
        else
            printf("%s=errno:%d\n", probes[i].name, e);
    }
    fflush(stdout);
    return 0;
}
