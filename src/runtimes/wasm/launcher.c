/*
 * wasm-launcher: puts one WASM worker process in its confinement, then execs it.
 *
 *   wasm-launcher UID GID SECCOMP_BPF WORKSPACE_BYTES HIDE_DIR... -- CGROUP_PROCS... -- PROGRAM ARGS...
 *
 * In order: joins the worker's cgroups (every cgroup.procs named), so all it allocates from the
 * first page on is charged there; enters new mount, network, IPC and UTS namespaces (the network
 * one is empty: no interface but a loopback that is down); covers each HIDE_DIR (Boxcar's state,
 * other jobs' workspaces, /proc, /sys) with an empty read-only tmpfs; mounts the workspace, a
 * tmpfs of WORKSPACE_BYTES owned by UID, on /tmp; drops to UID:GID with no supplementary groups
 * and no capabilities; sets no_new_privs and loads the seccomp program (classic BPF, as
 * compileSeccomp writes it); execs PROGRAM. Any failure exits 126 with one line on stderr.
 * Built by Boxcar with gcc (see launcher.ts).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define WORKSPACE "/tmp"
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

static void die(const char *what, const char *arg) {
  fprintf(stderr, "wasm-launcher: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
  _exit(126);
}

static char *read_all(const char *file, size_t *len) {
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("open", file);
  struct stat st;
  if (fstat(fd, &st) < 0) die("stat", file);
  char *buf = malloc(st.st_size ? st.st_size : 1);
  size_t got = 0;
  while (buf && got < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + got, st.st_size - got);
    if (n <= 0) die("read", file);
    got += n;
  }
  close(fd);
  *len = got;
  return buf;
}

static void join_cgroup(const char *procs) {
  int fd = open(procs, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die("open", procs);
  char pid[24];
  int n = snprintf(pid, sizeof pid, "%d", getpid());
  if (write(fd, pid, n) != n) die("write", procs);
  close(fd);
}

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: wasm-launcher UID GID SECCOMP_BPF WORKSPACE_BYTES|WORKSPACE_DIR HIDE_DIR... -- CGROUP_PROCS... -- PROGRAM ARGS...\n");
    return 126;
  }
  uid_t uid = (uid_t)strtoul(argv[1], NULL, 10);
  gid_t gid = (gid_t)strtoul(argv[2], NULL, 10);
  if (uid == 0 || gid == 0) {
    errno = EINVAL;
    die("refusing to run a worker as root", NULL);
  }
  size_t filter_len;
  char *filter = read_all(argv[3], &filter_len);
  const char *workspace_bytes = argv[4];

  int i = 5;
  int hide_from = i;
  while (i < argc && strcmp(argv[i], "--") != 0) i++;
  int hide_to = i++;
  while (i < argc && strcmp(argv[i], "--") != 0) join_cgroup(argv[i++]);
  if (++i >= argc) {
    errno = EINVAL;
    die("no program to run", NULL);
  }

  if (unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0) die("unshare", NULL);
  /* Nothing mounted here reaches the host, and the host's later mounts (jobs' workspaces) do not come in. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make private", "/");
  /* A job's own workspace directory (Boxcar filled it: a checkout, artifacts, a cache) is cloned
     as a detached mount before Boxcar's state is hidden below, and attached on /tmp after: no
     path inside the job's files is ever resolved here. */
  int workspace_tree = -1;
  if (workspace_bytes[0] == '/') {
    workspace_tree = (int)syscall(SYS_open_tree, AT_FDCWD, workspace_bytes, OPEN_TREE_CLONE | O_CLOEXEC | AT_SYMLINK_NOFOLLOW);
    if (workspace_tree < 0) die("open workspace", workspace_bytes);
  }
  unsigned long hidden = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  for (int h = hide_from; h < hide_to; h++) {
    if (mount("tmpfs", argv[h], "tmpfs", hidden, "size=4k,mode=0555") < 0) {
      if (errno == ENOENT) continue; /* not on this host, or under a directory covered already */
      die("hide", argv[h]);
    }
    if (mount(NULL, argv[h], NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | hidden, NULL) < 0) die("read-only", argv[h]);
  }
  if (workspace_tree >= 0) {
    if (syscall(SYS_move_mount, workspace_tree, "", AT_FDCWD, WORKSPACE, MOVE_MOUNT_F_EMPTY_PATH) < 0) die("attach workspace", workspace_bytes);
    if (mount(NULL, WORKSPACE, NULL, MS_REMOUNT | MS_BIND | hidden, NULL) < 0) die("remount workspace", WORKSPACE);
    close(workspace_tree);
  } else {
    char opts[128];
    snprintf(opts, sizeof opts, "size=%s,mode=0700,uid=%u,gid=%u", workspace_bytes, uid, gid);
    if (mount("tmpfs", WORKSPACE, "tmpfs", hidden, opts) < 0) die("mount workspace", WORKSPACE);
  }
  if (chdir(WORKSPACE) < 0) die("chdir", WORKSPACE);

  struct rlimit none = {0, 0};
  if (setrlimit(RLIMIT_CORE, &none) < 0) die("setrlimit", "core");
  if (setgroups(0, NULL) < 0) die("setgroups", NULL);
  if (setresgid(gid, gid, gid) < 0) die("setresgid", argv[2]);
  if (setresuid(uid, uid, uid) < 0) die("setresuid", argv[1]);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs", NULL);
  struct sock_fprog prog = {(unsigned short)(filter_len / 8), (struct sock_filter *)filter};
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) die("seccomp", argv[3]);
  execv(argv[i], argv + i);
  die("exec", argv[i]);
  return 126;
}
