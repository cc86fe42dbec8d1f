const ALLOWED = `accept accept4 access adjtimex alarm arch_prctl bind brk cachestat capget capset chdir chmod
chown clock_getres clock_gettime clock_nanosleep close close_range connect copy_file_range creat dup dup2 dup3
epoll_create epoll_create1 epoll_ctl epoll_pwait epoll_pwait2 epoll_wait eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchownat
fcntl fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex
futex_requeue futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid geteuid getgid
getgroups getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid getrlimit
get_robust_list getrusage getsid getsockname getsockopt gettid gettimeofday getuid getxattr inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents ioprio_get
ioprio_set io_setup io_submit kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lgetxattr
link linkat listen listxattr llistxattr lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create mincore
mkdir mkdirat mlock mlock2 mlockall mmap mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedsend mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep
newfstatat open openat openat2 pause pidfd_getfd pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free
pkey_mprotect poll ppoll prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev pwritev2
read readahead readlink readlinkat readv recvfrom recvmmsg recvmsg remap_file_pages removexattr rename renameat
renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_setaffinity
sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop sendfile
sendmmsg sendmsg sendto setfsgid setfsuid setgid setgroups setitimer setpgid setpriority setregid setresgid setresuid
setreuid setrlimit set_robust_list setsid setsockopt set_tid_address setuid setxattr shmat shmctl shmdt shmget
shutdown sigaltstack signalfd signalfd4 socket socketpair splice stat statfs statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime
timer_settime timerfd_create timerfd_gettime timerfd_settime times tkill truncate umask uname unlink unlinkat utime
utimensat utimes vfork vmsplice wait4 waitid write writev`
  .split(/\s+/)
  .filter(Boolean);

/** Every namespace flag `clone` could pass: CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET. */
const CLONE_NAMESPACE_FLAGS = 0x7e020000;
const ENOSYS = 38;
const S_IFMT = 0o170000;
/** Regular file (also written as 0), FIFO, socket. */
const FILE_TYPES_ALLOWED = [0, 0o100000, 0o010000, 0o140000];

/** Query-only and harmless personas, as Docker allows (anything else could re-enable old ABIs). */
const PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

export interface SeccompProfile {
  defaultAction: string;
  defaultErrnoRet: number;
  architectures: string[];
  syscalls: Array<{
    names: string[];
    action: string;
    errnoRet?: number;
    args?: Array<{ index: number; value: number; valueTwo?: number; op: string }>;
  }>;
}

function architectures(): string[] {
  if (process.arch === 'arm64') return ['SCMP_ARCH_AARCH64'];
  return ['SCMP_ARCH_X86_64'];
}

/**
 * The seccomp profile every container job gets: an allowlist (Docker's default set minus the
 * calls that open a way out), default EPERM. Without it, `unshare -U` succeeds inside a runc
 * job on these hosts. Deliberately absent, so EPERM: mount/umount2/pivot_root/chroot, the new
 * mount API (fsopen, fsconfig, fsmount, fspick, move_mount, open_tree, mount_setattr), unshare,
 * setns, ptrace, process_vm_readv/writev, kcmp, keyctl/add_key/request_key, bpf,
 * perf_event_open, userfaultfd, io_uring_*, (f)init_module/delete_module, kexec_*, reboot,
 * swapon/swapoff, syslog, acct, quotactl, open_by_handle_at, settimeofday/clock_settime,
 * lookup_dcookie, vhangup, iopl/ioperm.
 */
export function seccompProfile(): SeccompProfile {
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: 1,
    architectures: architectures(),
    syscalls: [
      { names: ALLOWED, action: 'SCMP_ACT_ALLOW' },
      // clone without namespace flags only: threads and fork, never a new namespace.
      {
        names: ['clone'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
      },
      // mknod for FIFOs, sockets and plain files only: never a device node (gVisor ignores CAP_MKNOD).
      ...FILE_TYPES_ALLOWED.flatMap((type) => [
        {
          names: ['mknod'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 1, value: S_IFMT, valueTwo: type, op: 'SCMP_CMP_MASKED_EQ' }],
        },
        {
          names: ['mknodat'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 2, value: S_IFMT, valueTwo: type, op: 'SCMP_CMP_MASKED_EQ' }],
        },
      ]),
      // clone3's flags sit behind a pointer seccomp cannot read: ENOSYS makes libc fall back to clone.
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
      ...PERSONALITIES.map((p) => ({
        names: ['personality'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: p, op: 'SCMP_CMP_EQ' }],
      })),
    ],
  };
}
