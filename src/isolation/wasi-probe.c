/*
 * wasi-probe: the isolation probes for the wasm runtime, as a WASI program. One line per
 * attempt: "<name> blocked <detail>" or "<name> ESCAPED <detail>". argv[1] is a host file the
 * verifier created (another job's or the host's secret): it must be out of reach.
 * Built by Boxcar with clang --target=wasm32-wasi.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wasi/api.h>

static int escaped = 0;

static void open_probe(const char *name, const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) {
    printf("%s blocked %s\n", name, strerror(errno));
  } else {
    printf("%s ESCAPED opened %s\n", name, path);
    escaped = 1;
    close(fd);
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "spin") == 0) {
    volatile unsigned long n = 0;
    for (;;) n++;
  }
  const char *secret = argc > 1 ? argv[1] : "/etc/hostname";
  open_probe("host_files", "/etc/passwd");
  open_probe("host_secret_file", secret);
  open_probe("path_traversal", "/workspace/../../../../etc/passwd");
  open_probe("host_processes", "/proc/self/status");
  open_probe("raw_devices", "/dev/sda");

  /* A symlink inside the workspace pointing out of it must not be followed out. */
  if (symlink("/etc/passwd", "/workspace/escape") == 0) open_probe("symlink_escape", "/workspace/escape");
  else printf("symlink_escape blocked %s\n", strerror(errno));

  /* path_symlink to "..", then an open through it: must not reach the parent of the workspace. */
  if (symlink("..", "/workspace/up") == 0) open_probe("symlink_dotdot", "/workspace/up/etc/passwd");
  else printf("symlink_dotdot blocked %s\n", strerror(errno));

  /* WASI preview1 can only accept on sockets it was given; it was given none. */
  __wasi_fd_t conn;
  __wasi_errno_t e = __wasi_sock_accept(3, 0, &conn);
  if (e == 0) printf("sockets ESCAPED accepted a connection\n"), escaped = 1;
  else printf("sockets blocked wasi errno %d\n", e);

  /* Disk: the workspace is a tmpfs of the job's size. */
  FILE *f = fopen("/workspace/fill", "wb");
  long written = 0;
  if (f) {
    static char block[65536];
    while (written < 200L << 20 && fwrite(block, 1, sizeof block, f) == sizeof block) written += sizeof block;
    fclose(f);
  }
  printf("disk_fill wrote %ld\n", written);

  /* Memory: allocation stops at the job's limit. */
  long mib = 0;
  void **head = NULL;
  for (;;) {
    void **p = malloc(1 << 20);
    if (!p) break;
    memset(p, 1, 1 << 20);
    *p = head;
    head = p;
    if (++mib > 4096) break;
  }
  printf("memory_bomb allocated %ld %p\n", mib, (void *)head);
  return escaped;
}
