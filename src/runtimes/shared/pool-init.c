/*
 * The first process of a pooled container (see container-pool.ts). The OCI runtime has already
 * made the sandbox whole (namespaces, cgroup, root, seccomp, capabilities) when this runs; it
 * waits for the one job the sandbox will ever serve, then becomes that job's process, so the
 * job is PID 1 as in a container made for it. Its first argument says where the job comes from:
 *
 *   fd     runc executes it through /proc/self/fd/3, an fd the host opened on this (static)
 *          binary, so it is never in the container's files; fd 4 is the command channel, a FIFO
 *          on the host. Both are closed before the job's exec.
 *   stdin  runsc can pass a container no fds: the host put this binary in the container's root
 *          (its own writable layer), and it unlinks itself at once; the job comes on stdin,
 *          which conmon closes once it is sent, so the job finds it at its end as it would
 *          /dev/null.
 *
 * The message: a 4-byte little-endian length, then NUL-terminated strings: the hostname to set
 * ("" for none), the capabilities to drop (a hex mask: those the pool's sandbox has for this
 * init only), the working directory, the number of arguments, the arguments, then the
 * environment.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SELF_FD 3
#define CHANNEL_FD 4
#define MAX_MESSAGE (8 << 20)
#define MAX_ARGS 65536

static void fail(const char *what, const char *detail) {
  dprintf(2, "boxcar: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  _exit(127);
}

static void read_exactly(int fd, char *buf, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, buf, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail("the sandbox's command channel closed before its job came", NULL);
    buf += r;
    n -= (size_t)r;
  }
}

/* Drops `mask`'s capabilities from every set: they were the init's, never the job's. */
static void drop_capabilities(unsigned long long mask) {
  if (!mask) return;
  for (int cap = 0; cap < 64; cap++)
    if ((mask >> cap & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
      fail("cannot drop a capability from the bounding set", strerror(errno));
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &head, data) != 0) fail("capget", strerror(errno));
  for (int i = 0; i < 2; i++) {
    uint32_t keep = ~(uint32_t)(mask >> (32 * i));
    data[i].effective &= keep;
    data[i].permitted &= keep;
    data[i].inheritable &= keep;
  }
  if (syscall(SYS_capset, &head, data) != 0) fail("capset", strerror(errno));
}

int main(int argc_self, char **argv_self) {
  int from_stdin = argc_self > 1 && strcmp(argv_self[1], "stdin") == 0;
  if (from_stdin && unlink(argv_self[0]) != 0) fail("cannot remove the pool's init from the root", strerror(errno));
  int channel = from_stdin ? 0 : CHANNEL_FD;
  unsigned char head[4];
  read_exactly(channel, (char *)head, sizeof head);
  uint32_t len = head[0] | head[1] << 8 | head[2] << 16 | (uint32_t)head[3] << 24;
  if (len == 0 || len > MAX_MESSAGE) fail("the job's message has a wrong length", NULL);
  char *msg = malloc(len + 1);
  if (!msg) fail("no memory for the job's message", NULL);
  read_exactly(channel, msg, len);
  msg[len] = '\0';
  if (msg[len - 1] != '\0') fail("the job's message is not NUL-terminated", NULL);
  if (!from_stdin) {
    close(CHANNEL_FD);
    close(SELF_FD);
  }

  /* Split into strings: cwd, argc, argv…, env… */
  size_t count = 0;
  for (uint32_t i = 0; i < len; i++) count += msg[i] == '\0';
  char **strings = calloc(count + 1, sizeof *strings);
  if (!strings) fail("no memory for the job's message", NULL);
  char *p = msg;
  for (size_t i = 0; i < count; i++) {
    strings[i] = p;
    p += strlen(p) + 1;
  }
  if (count < 5) fail("the job's message lacks a command", NULL);
  char *end;
  long argc = strtol(strings[3], &end, 10);
  if (*end || argc < 1 || argc > MAX_ARGS || (size_t)argc + 4 > count)
    fail("the job's message has a wrong argument count", strings[3]);
  char **argv = calloc((size_t)argc + 1, sizeof *argv);
  if (!argv) fail("no memory for the job's arguments", NULL);
  for (long i = 0; i < argc; i++) argv[i] = strings[4 + i];
  char **envp = &strings[4 + argc]; /* runs to the NULL calloc left at the end */

  const char *hostname = strings[0];
  if (*hostname && sethostname(hostname, strlen(hostname)) != 0)
    fail("cannot set the job's hostname", strerror(errno));
  unsigned long long drop = strtoull(strings[1], &end, 16);
  if (*end || !*strings[1]) fail("the job's message has a wrong capability mask", strings[1]);
  drop_capabilities(drop);
  if (chdir(strings[2]) != 0) fail("cannot enter the job's working directory", strerror(errno));
  /* execvpe looks the command up on the job's PATH, as runc does for a container made for it. */
  environ = envp;
  execvpe(argv[0], argv, envp);
  char why[512];
  snprintf(why, sizeof why, "%s: %s", argv[0], strerror(errno));
  fail("cannot run the job's command", why);
  return 127;
}
