/*
 * Starts a container's monitor (conmon) in a mount namespace of its own, with the job's root
 * mounted there (see job-root.ts and conmon-driver.ts). One small process does what `unshare`,
 * a shell, two `mount`s and two `mkdir`s did: a job's start paid for six programs before.
 *
 *   job-launcher TMPFS_OPTS RW UPPER WORK OVERLAY_CWD OVERLAY_OPTS ROOT DIR COPY_FROM COPY_TO FIFO
 *                COMMAND [ARG…]
 *
 * The first seven are job-root.ts's (`JobRootMount.args`): a tmpfs at RW with TMPFS_OPTS, UPPER
 * and WORK made in it, the overlay mounted at ROOT from OVERLAY_CWD (its lower layers are
 * relative to it). Then, when not empty: COPY_FROM copied to COPY_TO (a pooled init put in the
 * root), FIFO made (a pooled container's command channel). Then COMMAND runs in DIR.
 * mount(8)'s flag words in an options string (nosuid, nodev, noexec, ro) become mount flags.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

static void fail(const char *what, const char *path) {
  fprintf(stderr, "job-launcher: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

/* Splits mount(8)'s flag words out of `options` (in place); returns their MS_ flags. */
static unsigned long flag_words(char *options) {
  static const struct {
    const char *word;
    unsigned long flag;
  } words[] = {{"nosuid", MS_NOSUID}, {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC}, {"ro", MS_RDONLY}};
  unsigned long flags = 0;
  char *out = options;
  char *rest = options;
  char *word;
  int first = 1;
  while ((word = strsep(&rest, ",")) != NULL) {
    int known = 0;
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
      if (strcmp(word, words[i].word) == 0) {
        flags |= words[i].flag;
        known = 1;
      }
    if (known || !*word) continue;
    if (!first) *out++ = ',';
    memmove(out, word, strlen(word));
    out += strlen(word);
    first = 0;
  }
  *out = '\0';
  return flags;
}

static void copy_file(const char *from, const char *to) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0) fail("open", from);
  struct stat st;
  if (fstat(in, &st) != 0) fail("stat", from);
  int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777);
  if (out < 0) fail("create", to);
  for (off_t left = st.st_size; left > 0;) {
    ssize_t n = sendfile(out, in, NULL, (size_t)left);
    if (n <= 0) fail("copy to", to);
    left -= n;
  }
  close(in);
  if (close(out) != 0) fail("close", to);
}

int main(int argc, char **argv) {
  if (argc < 13) {
    fprintf(stderr, "usage: job-launcher TMPFS_OPTS RW UPPER WORK OVERLAY_CWD OVERLAY_OPTS ROOT DIR "
                    "COPY_FROM COPY_TO FIFO COMMAND [ARG...]\n");
    return 2;
  }
  char *tmpfs_opts = argv[1], *rw = argv[2], *upper = argv[3], *work = argv[4];
  char *overlay_cwd = argv[5], *overlay_opts = argv[6], *root = argv[7], *dir = argv[8];
  char *copy_from = argv[9], *copy_to = argv[10], *fifo = argv[11];

  if (unshare(CLONE_NEWNS) != 0) fail("unshare", "the mount namespace");
  /* What `unshare --mount --propagation private` does: nothing mounted here reaches the host. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail("make private", "/");
  unsigned long tmpfs_flags = flag_words(tmpfs_opts);
  if (mount("tmpfs", rw, "tmpfs", tmpfs_flags, tmpfs_opts) != 0) fail("mount tmpfs at", rw);
  /* The merged root takes the upper directory's mode: 0755, as every layer's root has. */
  if (mkdir(upper, 0755) != 0) fail("mkdir", upper);
  if (chmod(upper, 0755) != 0) fail("chmod", upper);
  if (mkdir(work, 0755) != 0) fail("mkdir", work);
  if (chdir(overlay_cwd) != 0) fail("chdir", overlay_cwd);
  unsigned long overlay_flags = flag_words(overlay_opts);
  if (mount("overlay", root, "overlay", overlay_flags, overlay_opts) != 0) fail("mount overlay at", root);
  if (*copy_from) copy_file(copy_from, copy_to);
  if (*fifo && mkfifo(fifo, 0600) != 0 && errno != EEXIST) fail("mkfifo", fifo);
  if (chdir(dir) != 0) fail("chdir", dir);
  execvp(argv[12], &argv[12]);
  fail("exec", argv[12]);
}
