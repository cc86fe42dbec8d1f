/*
 * What the host does for a job's container without starting a process for it (see
 * container-helper.ts). One long-lived process does it for every job, since a process started
 * per job would cost a pooled start a third of its time.
 *
 * Reads tab-separated requests, one per line, on stdin, and answers each with "ok" or
 * "error <why>":
 *
 *   hostname PID NAME   Joins PID's UTS namespace, sets the hostname, returns to its own. runc
 *                       grants a container's processes no CAP_SYS_ADMIN to do it themselves. If
 *                       it ever cannot return to its own namespace it exits at once: it must
 *                       never set the host's hostname.
 *   send SOCKET FILE    Sends FILE's bytes to conmon's attach socket SOCKET, which writes them to
 *                       the container's stdin (gVisor's pooled init reads its job there), then
 *                       disconnects, which makes conmon close that stdin.
 *   start FIFO PID      What `runc start` does, without a runc process (a Go binary: ~10 ms of
 *                       CPU per job here): a created container's init (PID) waits to open its
 *                       exec FIFO for writing; a reader lets it write one byte and exec the
 *                       container's process, which closes the FIFO. Reading to that end and
 *                       removing the FIFO is the start (runc's libcontainer `exec()`). Done here,
 *                       not in Boxcar's process, so a start under way completes even if Boxcar
 *                       is killed (the init would get EPIPE if its reader died first): the
 *                       helper finishes the requests it has read before it sees its input end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* conmon reads each attach packet into a buffer of 8 KiB or more and drops what does not fit. */
#define PACKET 4096

static int home_uts;

static void set_hostname(const char *pid_text, const char *name) {
  char *end;
  long pid = strtol(pid_text, &end, 10);
  if (*end || pid <= 0 || !*name || strlen(name) > 64) {
    printf("error malformed request\n");
    return;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/ns/uts", pid);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) {
    printf("error %s: %s\n", path, strerror(errno));
    return;
  }
  int joined = setns(ns, CLONE_NEWUTS);
  int err = errno;
  close(ns);
  if (joined != 0) {
    printf("error setns %ld: %s\n", pid, strerror(err));
    return;
  }
  int set = sethostname(name, strlen(name));
  err = errno;
  if (setns(home_uts, CLONE_NEWUTS) != 0) _exit(2);
  if (set != 0) printf("error sethostname: %s\n", strerror(err));
  else printf("ok\n");
}

static void send_file(const char *socket_path, const char *file) {
  int in = open(file, O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    printf("error %s: %s\n", file, strerror(errno));
    return;
  }
  /* Through /proc/self/fd, as podman does: a sandbox's path can be longer than sun_path. */
  int dir = open(socket_path, O_PATH | O_CLOEXEC);
  int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d", dir);
  if (dir < 0 || sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
    printf("error connecting to %s: %s\n", socket_path, strerror(errno));
    goto out;
  }
  char buf[PACKET];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      printf("error reading %s: %s\n", file, strerror(errno));
      goto out;
    }
    if (n == 0) break;
    if (send(sock, buf, (size_t)n, MSG_NOSIGNAL) != n) {
      printf("error sending to %s: %s\n", socket_path, strerror(errno));
      goto out;
    }
  }
  printf("ok\n");
out:
  if (sock >= 0) close(sock);
  if (dir >= 0) close(dir);
  close(in);
}

/* What runc names its init while it waits on the FIFO: the process's comm until its exec. */
#define RUNC_INIT_COMM "runc:[2:INIT]"

/* 1: the init waits for its start; 0: it has exec'd the container's process; -1: it is gone. */
static int init_state(long pid) {
  char path[64], comm[64] = "";
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  char state = 0;
  int got = fscanf(f, "%*d (%63[^)]) %c", comm, &state);
  fclose(f);
  if (got != 2 || state == 'Z' || state == 'X') return -1;
  return strcmp(comm, RUNC_INIT_COMM) == 0;
}

static void start_container(const char *fifo, const char *pid_text) {
  char *end;
  long pid = strtol(pid_text, &end, 10);
  if (*end || pid <= 0) {
    printf("error malformed request\n");
    return;
  }
  int state = init_state(pid);
  if (state < 0) {
    printf("error the container's init (pid %ld) died before its process started\n", pid);
    return;
  }
  if (state == 0) {
    /* A start that was cut off between the init's exec and the FIFO's removal: finish it. */
    if (unlink(fifo) != 0 && errno != ENOENT) printf("error removing %s: %s\n", fifo, strerror(errno));
    else printf("ok\n");
    return;
  }
  int fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    printf("error %s: %s\n", fifo, strerror(errno));
    return;
  }
  size_t got = 0;
  int dead_before = 0;
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) {
      printf("error poll %s: %s\n", fifo, strerror(errno));
      close(fd);
      return;
    }
    if (ready > 0) {
      char buf[16];
      ssize_t n = read(fd, buf, sizeof buf);
      if (n > 0) got += (size_t)n;
      if (n == 0) break; /* the init's exec closed its end */
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        printf("error reading %s: %s\n", fifo, strerror(errno));
        close(fd);
        return;
      }
      continue;
    }
    /* A process that started and ended between two looks left its byte and end in the FIFO:
     * a dead init fails the start only at the look after, once those had their turn. */
    if (init_state(pid) < 0) {
      if (dead_before) {
        printf("error the container's init (pid %ld) died before its process started\n", pid);
        close(fd);
        return;
      }
      dead_before = 1;
    }
  }
  close(fd);
  if (got == 0) printf("error cannot start an already running container\n");
  else if (unlink(fifo) != 0) printf("error removing %s: %s\n", fifo, strerror(errno));
  else printf("ok\n");
}

int main(void) {
  home_uts = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
  if (home_uts < 0) {
    perror("open /proc/self/ns/uts");
    return 1;
  }
  char line[8192];
  setvbuf(stdout, NULL, _IOLBF, 0);
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = '\0';
    char *rest = line;
    char *op = strsep(&rest, "\t");
    char *a = rest ? strsep(&rest, "\t") : NULL;
    char *b = rest ? strsep(&rest, "\t") : NULL;
    if (!a || !b || rest) printf("error malformed request\n");
    else if (strcmp(op, "hostname") == 0) set_hostname(a, b);
    else if (strcmp(op, "send") == 0) send_file(a, b);
    else if (strcmp(op, "start") == 0) start_container(a, b);
    else printf("error unknown request %s\n", op);
  }
  return 0;
}
