/*
 * vmm-jail: puts one VMM process in its jail, then execs it (see vmm-jail.ts), as
 * Firecracker's jailer does. One process throughout: the pid Boxcar started is the VMM's.
 *
 *   vmm-jail UID KVM_GID|- FSIZE ROOT NETNS|new|- -- CGROUP_PROCS... -- rw:PATH|ro:PATH... -- PROGRAM ARGS...
 *
 * In order: joins the VMM's cgroups (every cgroup.procs named), so all it allocates is charged
 * there from the first page; enters the job's network namespace when one is named (with `new`,
 * a network namespace of its own holding nothing, for a program with no use for any); enters a new
 * mount namespace (private: nothing reaches the host); builds a root on a tmpfs at ROOT holding
 * /usr read-only, the device nodes a VMM opens, a /proc showing only its own processes, and
 * each PATH bound at its own path (ro: read-only); sets RLIMIT_CORE 0 and RLIMIT_FSIZE (0: none);
 * chroots there; drops to UID:UID (with KVM_GID as its only supplementary group under KVM),
 * clears the capability bounding set, sets no_new_privs; execs PROGRAM with PATH alone in its
 * environment. Any failure exits 126 with one line on stderr. Built by Boxcar with gcc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what, const char *arg) {
  fprintf(stderr, "vmm-jail: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
  _exit(126);
}

static void join_cgroup(const char *procs) {
  int fd = open(procs, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die("open", procs);
  char pid[24];
  int n = snprintf(pid, sizeof pid, "%d", getpid());
  if (write(fd, pid, n) != n) die("write", procs);
  close(fd);
}

/* mkdir -p of every directory above `path` (which is under the new root). */
static void make_parents(const char *path) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) die("path too long", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) die("mkdir", buf);
    *p = '/';
  }
}

/* Binds `src` at ROOT`src` (a directory or a file, as the source is), read-only when asked. */
static void bind(const char *root, const char *src, int ro) {
  char dst[PATH_MAX];
  if (snprintf(dst, sizeof dst, "%s%s", root, src) >= (int)sizeof dst) die("path too long", src);
  struct stat st;
  if (stat(src, &st) < 0) die("stat", src);
  make_parents(dst);
  if (S_ISDIR(st.st_mode)) {
    if (mkdir(dst, 0755) < 0 && errno != EEXIST) die("mkdir", dst);
  } else {
    int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) die("create", dst);
    close(fd);
  }
  if (mount(src, dst, NULL, MS_BIND, NULL) < 0) die("bind", src);
  if (ro && mount(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
    die("read-only", dst);
}

int main(int argc, char **argv) {
  if (argc < 10) {
    fprintf(stderr, "usage: vmm-jail UID KVM_GID|- FSIZE ROOT NETNS|new|- -- CGROUP_PROCS... -- rw:PATH|ro:PATH... -- PROGRAM ARGS...\n");
    return 126;
  }
  uid_t uid = (uid_t)strtoul(argv[1], NULL, 10);
  if (uid == 0) {
    errno = EINVAL;
    die("refusing to run a VMM as root", NULL);
  }
  const char *kvm = argv[2];
  unsigned long long fsize = strtoull(argv[3], NULL, 10);
  const char *root = argv[4];
  const char *netns = argv[5];
  int i = 6;
  if (strcmp(argv[i++], "--") != 0) die("expected --", argv[i - 1]);
  while (i < argc && strcmp(argv[i], "--") != 0) join_cgroup(argv[i++]);
  int binds_from = ++i;
  while (i < argc && strcmp(argv[i], "--") != 0) i++;
  int binds_to = i++;
  if (i >= argc) {
    errno = EINVAL;
    die("no program to run", NULL);
  }

  if (strcmp(netns, "new") == 0) {
    if (unshare(CLONE_NEWNET) < 0) die("unshare", "network");
  } else if (strcmp(netns, "-") != 0) {
    int fd = open(netns, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) die("enter network namespace", netns);
    close(fd);
  }
  if (unshare(CLONE_NEWNS) < 0) die("unshare", "mount");
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make private", "/");
  if (mount("boxcar-vmm", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") < 0) die("mount root", root);
  if (chdir(root) < 0) die("chdir", root);
  const char *links[] = {"bin", "sbin", "lib", "lib32", "lib64"};
  for (size_t l = 0; l < sizeof links / sizeof *links; l++) {
    char host[32], target[32];
    snprintf(host, sizeof host, "/%s", links[l]);
    snprintf(target, sizeof target, "usr/%s", links[l]);
    struct stat st;
    if (lstat(host, &st) == 0 && symlink(target, links[l]) < 0) die("symlink", links[l]);
  }
  bind(root, "/usr", 1);
  if (mkdir("proc", 0555) < 0) die("mkdir", "proc");
  if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible,subset=pid") < 0)
    die("mount", "proc");
  const char *devices[] = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/net/tun"};
  for (size_t d = 0; d < sizeof devices / sizeof *devices; d++) bind(root, devices[d], 0);
  if (strcmp(kvm, "-") != 0) bind(root, "/dev/kvm", 0);
  for (int b = binds_from; b < binds_to; b++) {
    const char *spec = argv[b];
    if (strncmp(spec, "rw:", 3) != 0 && strncmp(spec, "ro:", 3) != 0) die("bad bind", spec);
    bind(root, spec + 3, spec[1] == 'o');
  }

  struct rlimit none = {0, 0};
  if (setrlimit(RLIMIT_CORE, &none) < 0) die("setrlimit", "core");
  if (fsize) {
    struct rlimit fs = {fsize, fsize};
    if (setrlimit(RLIMIT_FSIZE, &fs) < 0) die("setrlimit", "fsize");
  }
  if (chroot(root) < 0) die("chroot", root);
  if (chdir("/") < 0) die("chdir", "/");
  for (int cap = 0; cap <= 63; cap++)
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL) die("drop capability", NULL);
  gid_t groups[1];
  int ngroups = 0;
  if (strcmp(kvm, "-") != 0) groups[ngroups++] = (gid_t)strtoul(kvm, NULL, 10);
  if (setgroups(ngroups, groups) < 0) die("setgroups", NULL);
  if (setresgid(uid, uid, uid) < 0) die("setresgid", argv[1]);
  if (setresuid(uid, uid, uid) < 0) die("setresuid", argv[1]);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("no_new_privs", NULL);
  if (clearenv() != 0 || setenv("PATH", "/usr/sbin:/usr/bin", 1) < 0) die("environment", NULL);
  execvp(argv[i], argv + i);
  die("exec", argv[i]);
  return 126;
}
