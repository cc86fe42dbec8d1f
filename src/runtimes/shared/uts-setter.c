/*
 * Sets the hostname of pooled containers (see hostname-setter.ts): a job's hostname is its
 * own, but its container was made before the job came, and runc granted its processes no
 * CAP_SYS_ADMIN to set it. One long-lived process does it for every take-over, since a process
 * started per job would cost a pooled start a third of its time.
 *
 * Reads lines "PID HOSTNAME" on stdin; for each, joins PID's UTS namespace, sets the hostname,
 * returns to its own namespace, and answers "ok" or "error <why>". If it ever cannot return to
 * its own namespace it exits at once: it must never set the host's hostname.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
  int home = open("/proc/self/ns/uts", O_RDONLY | O_CLOEXEC);
  if (home < 0) {
    perror("open /proc/self/ns/uts");
    return 1;
  }
  char line[512];
  setvbuf(stdout, NULL, _IOLBF, 0);
  while (fgets(line, sizeof line, stdin)) {
    char name[256];
    int pid;
    if (sscanf(line, "%d %255s", &pid, name) != 2 || pid <= 0) {
      printf("error malformed request\n");
      continue;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/uts", pid);
    int ns = open(path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      printf("error %s: %s\n", path, strerror(errno));
      continue;
    }
    int joined = setns(ns, CLONE_NEWUTS);
    int err = errno;
    close(ns);
    if (joined != 0) {
      printf("error setns %d: %s\n", pid, strerror(err));
      continue;
    }
    int set = sethostname(name, strlen(name));
    err = errno;
    if (setns(home, CLONE_NEWUTS) != 0) _exit(2);
    if (set != 0) printf("error sethostname: %s\n", strerror(err));
    else printf("ok\n");
  }
  return 0;
}
