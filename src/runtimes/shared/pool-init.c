/*
 * The first process of a pooled container (see sandbox-pool.ts). runc has already made the
 * sandbox whole (namespaces, cgroup, root, seccomp, capabilities) when this runs; it waits for
 * the one job the sandbox will ever serve, then becomes that job's process, so the job is PID 1
 * as in a container made for it.
 *
 * It is not in the container's file system: runc executes it through /proc/self/fd/3, an fd
 * the host opened on this (static) binary. fd 4 is the sandbox's command channel, a FIFO on
 * the host. The message: a 4-byte little-endian length, then NUL-terminated strings: the
 * working directory, the number of arguments, the arguments, then the environment. Both fds
 * are closed before the job's exec, so nothing of the pool reaches the job.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SELF_FD 3
#define CHANNEL_FD 4
#define MAX_MESSAGE (8 << 20)
#define MAX_ARGS 65536

static void fail(const char *what, const char *detail) {
  dprintf(2, "boxcar: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  _exit(127);
}

static void read_exactly(char *buf, size_t n) {
  while (n > 0) {
    ssize_t r = read(CHANNEL_FD, buf, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail("the sandbox's command channel closed before its job came", NULL);
    buf += r;
    n -= (size_t)r;
  }
}

int main(void) {
  unsigned char head[4];
  read_exactly((char *)head, sizeof head);
  uint32_t len = head[0] | head[1] << 8 | head[2] << 16 | (uint32_t)head[3] << 24;
  if (len == 0 || len > MAX_MESSAGE) fail("the job's message has a wrong length", NULL);
  char *msg = malloc(len + 1);
  if (!msg) fail("no memory for the job's message", NULL);
  read_exactly(msg, len);
  msg[len] = '\0';
  if (msg[len - 1] != '\0') fail("the job's message is not NUL-terminated", NULL);
  close(CHANNEL_FD);
  close(SELF_FD);

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
  if (count < 3) fail("the job's message lacks a command", NULL);
  char *end;
  long argc = strtol(strings[1], &end, 10);
  if (*end || argc < 1 || argc > MAX_ARGS || (size_t)argc + 2 > count)
    fail("the job's message has a wrong argument count", strings[1]);
  char **argv = calloc((size_t)argc + 1, sizeof *argv);
  if (!argv) fail("no memory for the job's arguments", NULL);
  for (long i = 0; i < argc; i++) argv[i] = strings[2 + i];
  char **envp = &strings[2 + argc]; /* runs to the NULL calloc left at the end */

  if (chdir(strings[0]) != 0) fail("cannot enter the job's working directory", strerror(errno));
  /* execvpe looks the command up on the job's PATH, as runc does for a container made for it. */
  environ = envp;
  execvpe(argv[0], argv, envp);
  char why[512];
  snprintf(why, sizeof why, "%s: %s", argv[0], strerror(errno));
  fail("cannot run the job's command", why);
  return 127;
}
