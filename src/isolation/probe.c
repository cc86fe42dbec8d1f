/*
 * boxcar-probe: tries, from inside a job, the system calls an escape would need, and prints one
 * line per attempt: "<name> blocked <errno-name>" when the kernel (or gVisor, or the seccomp
 * filter) refused it, "<name> ESCAPED" when it succeeded. Inside a sandbox nothing here does
 * harm if it succeeds: every call targets the job's own namespaces or changes nothing. It
 * refuses to run outside a job (no BOXCAR_JOB_ID, or not a low pid of a fresh pid namespace).
 * Built statically by Boxcar (gcc -static) into the isolation probe image.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static int escaped = 0;

static const char *errname(int e) {
  switch (e) {
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    case ENOENT: return "ENOENT";
    case EROFS: return "EROFS";
    case ESRCH: return "ESRCH";
    default: return strerror(e);
  }
}

/* r < 0 (with errno) means refused. */
static void report(const char *name, long r) {
  if (r < 0) {
    printf("%s blocked %s\n", name, errname(errno));
  } else {
    printf("%s ESCAPED\n", name);
    escaped = 1;
  }
  fflush(stdout);
}

int main(void) {
  /* Escapes on a host are real: refuse to run anywhere but inside a Boxcar job. */
  if (!getenv("BOXCAR_JOB_ID") || getpid() > 100) {
    fprintf(stderr, "boxcar-probe only runs inside a Boxcar job\n");
    return 2;
  }
  /* A sibling process to aim ptrace and process_vm_readv at. */
  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }

  report("unshare_user", unshare(CLONE_NEWUSER));
  report("unshare_mount", unshare(CLONE_NEWNS));
  report("unshare_net", unshare(CLONE_NEWNET));
  int nsfd = open("/proc/self/ns/net", O_RDONLY);
  errno = 0;
  report("setns", nsfd < 0 ? -1 : setns(nsfd, CLONE_NEWNET));
  report("clone_newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0) == 0 ? (_exit(0), 0) : -1);
  report("mount_tmpfs", mount("tmpfs", "/mnt", "tmpfs", 0, "size=1m"));
  report("umount_mnt", umount2("/mnt", MNT_DETACH));
  report("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
  report("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 0));
  report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
  report("chroot", chroot("/tmp"));
  report("ptrace_attach", ptrace(PTRACE_ATTACH, child, 0, 0));
  char buf[8];
  struct iovec local = {buf, sizeof buf}, remote = {buf, sizeof buf};
  report("process_vm_readv", syscall(SYS_process_vm_readv, child, &local, 1, &remote, 1, 0));
  report("keyctl", syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, 0));
  report("add_key", syscall(SYS_add_key, "user", "boxcar-probe", "x", 1, -3 /* session keyring */));
  report("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, 0, 0));
  report("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
  report("userfaultfd", syscall(SYS_userfaultfd, 0));
  report("init_module", syscall(SYS_init_module, buf, 0, ""));
  report("finit_module", syscall(SYS_finit_module, -1, "", 0));
  report("delete_module", syscall(SYS_delete_module, "boxcar_no_such_module", 0));
  report("kexec_load", syscall(SYS_kexec_load, 0, 0, 0, 0));
  report("io_uring_setup", syscall(SYS_io_uring_setup, 1, buf));
  report("mknod_block_device", mknod("/tmp/boxcar-probe-sda", S_IFBLK | 0600, makedev(8, 0)));
  report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, buf, O_RDONLY));
  report("iopl", syscall(SYS_iopl, 3));
  report("swapon", syscall(SYS_swapon, "/tmp/boxcar-no-such-swap", 0));
  report("settimeofday", syscall(SYS_settimeofday, 0, 0) == 0 ? 0 : -1);
  report("reboot", syscall(SYS_reboot, 0, 0, 0, 0)); /* bad magic: changes nothing even if allowed */

  kill(child, SIGKILL);
  waitpid(child, 0, 0);
  return escaped;
}
