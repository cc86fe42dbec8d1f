/*
 * boxcar-agent: PID 1 of a Boxcar microVM. It loads the virtio modules, opens two virtio-serial
 * ports ("ctl": requests from the host, replies; "out": the job's output and exit, which QEMU
 * writes to a file that outlives any host process), says hello, and waits. A snapshot is taken
 * at that point; every restored clone then gets one job: it mounts the job's disk (and its
 * workspace disk when the host made one), runs the command in fresh namespaces with the job's
 * limits, capabilities and seccomp filter, frames its output, reports the exit and idles until
 * the host ends the VM.
 *
 * Frames on both ports: 1 type byte, 4-byte big-endian length, payload. The job cannot forge
 * them: its bytes only ever travel inside 'o'/'e' frames, and it cannot reach the ports (a
 * virtio port opens once, the agent holds both, and the job has no device nodes nor
 * CAP_MKNOD).
 * Built statically by Boxcar (gcc -static) into the guest's initramfs.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/random.h>
#include <linux/seccomp.h>
#include <linux/vm_sockets.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define JOB_ROOT "/job"
#define IMAGE_MNT "/mnt/image"
/*
 * The second virtio disk of every VM (the host attaches it after the root disk, in both VMMs):
 * an ext4 of the job's workspace files when the run request says so, else left alone.
 */
#define WORKSPACE_DEV "/dev/vdb"
#define WORKSPACE_MNT "/mnt/workspace"
#define CGROUP "/sys/fs/cgroup"
#define JOB_CGROUP CGROUP "/job"
/* A warm-up run (W) has its own cgroup, so the job's peak memory is the job's alone. */
#define WARM_CGROUP CGROUP "/warm"
#define MAX_FIELDS 16
/* The largest frame the host may send (protocol.ts FRAME_MAX_BYTES). */
#define MAX_FRAME (1u << 20)

static int ctl_fd = -1, out_fd = -1;
/* Under Firecracker (no virtio-serial): one vsock connection carries both, re-accepted after a drop. */
#define AGENT_VSOCK_PORT 1024
static int vsock_listener = -1;

static void vsock_accept(void) {
  int c;
  while ((c = accept4(vsock_listener, NULL, NULL, SOCK_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (ctl_fd >= 0) close(ctl_fd);
  ctl_fd = out_fd = c;
}
static int sigchld_pipe[2];

static void logmsg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "boxcar-agent: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int send_frame(int fd, char type, const void *data, uint32_t len) {
  unsigned char head[5] = {(unsigned char)type, len >> 24, len >> 16, len >> 8, len};
  for (;;) {
    if (write_all(fd, head, 5) == 0 && (len == 0 || write_all(fd, data, len) == 0)) return 0;
    if (vsock_listener < 0) return -1;
    vsock_accept(); /* the host went away: the job's output waits for the next one */
    fd = ctl_fd;
  }
}

static void send_text(int fd, char type, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n >= (int)sizeof buf) n = sizeof buf - 1;
  send_frame(fd, type, buf, (uint32_t)n);
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int r = write_all(fd, text, strlen(text));
  close(fd);
  return r;
}

static long long read_number(const char *path, const char *key) {
  char buf[4096];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  if (!key) return atoll(buf);
  size_t kl = strlen(key);
  for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
    if (strncmp(line, key, kl) == 0 && line[kl] == ' ') return atoll(line + kl + 1);
  return -1;
}

/* Reads exactly n bytes; 0 on EOF before any byte (no host connected), -1 on error. */
static int read_exact(int fd, void *buf, size_t n) {
  char *p = buf;
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) {
      if (got == 0) return 0;
      usleep(2000); /* the host went away mid-frame: its next connection carries the rest */
      continue;
    }
    got += (size_t)r;
  }
  return 1;
}

/* One frame from the host; waits (re-reading after EOF) while no host is connected. */
static char *read_frame(char *type, uint32_t *len, int block) {
  unsigned char head[5];
  for (int backoff = 1;;) {
    int r = read_exact(ctl_fd, head, 5);
    if (r > 0) break;
    if (vsock_listener >= 0) {
      if (!block) return NULL;
      vsock_accept();
      continue;
    }
    if (r < 0 || !block) return NULL;
    usleep(backoff * 1000);
    if (backoff < 200) backoff *= 2;
  }
  *type = (char)head[0];
  *len = ((uint32_t)head[1] << 24) | ((uint32_t)head[2] << 16) | ((uint32_t)head[3] << 8) | head[4];
  /* Bounded before the allocation: `*len + 1` would wrap to 0 for a length of 2^32-1. */
  if (*len > MAX_FRAME) return NULL;
  char *data = malloc((size_t)*len + 1);
  if (!data) return NULL;
  if (*len && read_exact(ctl_fd, data, *len) <= 0) {
    free(data);
    return NULL;
  }
  data[*len] = 0;
  return data;
}

static void load_modules(void) {
  FILE *f = fopen("/etc/modules.order", "r");
  if (!f) return;
  char path[512];
  while (fgets(path, sizeof path, f)) {
    path[strcspn(path, "\n")] = 0;
    if (!*path) continue;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) < 0)
      if (errno != EEXIST) logmsg("loading %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
  }
  fclose(f);
}

/* Whether a virtio device of this type (virtio spec device id) is present. */
static int has_virtio_device(int id) {
  DIR *d = opendir("/sys/bus/virtio/devices");
  struct dirent *e;
  int found = 0;
  while (d && !found && (e = readdir(d))) {
    char p[300];
    snprintf(p, sizeof p, "/sys/bus/virtio/devices/%s/device", e->d_name);
    long long v = -1;
    char buf[32] = {0};
    int fd = open(p, O_RDONLY);
    if (fd >= 0) {
      if (read(fd, buf, sizeof buf - 1) > 0) v = strtoll(buf, NULL, 16);
      close(fd);
    }
    found = v == id;
  }
  if (d) closedir(d);
  return found;
}

#define VIRTIO_ID_CONSOLE 3

/* The /dev node of the virtio-serial port called `name`. */
static int open_port(const char *name) {
  if (!has_virtio_device(VIRTIO_ID_CONSOLE)) return -1;
  for (int tries = 0; tries < 500; tries++) {
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    while (d && (e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      char p[300], buf[64] = {0};
      snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
      int fd = open(p, O_RDONLY);
      if (fd < 0) continue;
      ssize_t n = read(fd, buf, sizeof buf - 1);
      close(fd);
      if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
      if (strcmp(buf, name) == 0) {
        snprintf(p, sizeof p, "/dev/%s", e->d_name);
        int port = open(p, O_RDWR | O_CLOEXEC);
        if (port >= 0) {
          closedir(d);
          return port;
        }
      }
    }
    if (d) closedir(d);
    usleep(10000);
  }
  return -1;
}

static int if_configure(const char *name, const char *addr, int prefix);

static void setup_guest(void) {
  mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL);
  int con = open("/dev/console", O_RDWR);
  if (con >= 0) {
    dup2(con, 1);
    dup2(con, 2);
    if (con > 2) close(con);
  }
  load_modules();
  if_configure("lo", NULL, 0); /* the job's loopback, as a container has */
  /* Report freed guest memory to the host in 64 KiB blocks (free page reporting). */
  write_file("/sys/module/page_reporting/parameters/page_reporting_order", "4");
  mount("cgroup2", CGROUP, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  write_file(CGROUP "/cgroup.subtree_control", "+pids +memory +cpu");
  mkdir(JOB_CGROUP, 0755);
  mkdir(WARM_CGROUP, 0755);
  /* Our own memory must never be swapped out or ballooned from under the job. */
  write_file("/proc/sys/vm/overcommit_memory", "0");
}

/* Fields of a run request: each a 4-byte length and its bytes. */
struct request {
  char *field[MAX_FIELDS];
  uint32_t flen[MAX_FIELDS];
  int n;
};

static int parse_request(char *data, uint32_t len, struct request *req) {
  uint32_t off = 0;
  req->n = 0;
  while (off + 4 <= len && req->n < MAX_FIELDS) {
    uint32_t fl = ((uint32_t)(unsigned char)data[off] << 24) | ((uint32_t)(unsigned char)data[off + 1] << 16) |
                  ((uint32_t)(unsigned char)data[off + 2] << 8) | (unsigned char)data[off + 3];
    off += 4;
    if (fl > len - off) return -1;
    req->field[req->n] = data + off;
    req->flen[req->n] = fl;
    req->n++;
    off += fl;
  }
  return off == len ? 0 : -1;
}

/* A NUL-separated list as a NULL-terminated array (the field's bytes are reused). */
static char **split_list(char *s, uint32_t len) {
  int count = 0;
  for (uint32_t i = 0; i < len; i++)
    if (s[i] == 0) count++;
  char **v = calloc((size_t)count + 2, sizeof *v);
  int k = 0;
  for (uint32_t i = 0; i < len;) {
    v[k++] = s + i;
    i += (uint32_t)strlen(s + i) + 1;
  }
  v[k] = NULL;
  return v;
}

enum {
  F_HOSTNAME, F_TIME, F_SEED, F_OUTPUT_CAP, F_PIDS, F_MEMORY, F_CPU, F_TMP, F_WORKSPACE, F_CAPS,
  F_SECCOMP, F_ARGV, F_ENV, F_NETWORK, F_WORKSPACE_DISK, F_COUNT
};

static char *field_str(struct request *r, int i) {
  /* Text fields are copied so they end with a NUL. */
  char *s = malloc(r->flen[i] + 1);
  memcpy(s, r->field[i], r->flen[i]);
  s[r->flen[i]] = 0;
  return s;
}

static void mount_or_die(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
  if (mount(src, dst, type, flags, data) < 0) {
    dprintf(2, "boxcar-agent: mount %s on %s: %s\n", type ? type : src, dst, strerror(errno));
    _exit(126);
  }
}

static void mknod_dev(const char *path, int major, int minor) {
  mknod(path, S_IFCHR | 0666, makedev(major, minor));
  chmod(path, 0666);
}

/* Sets an interface up, with an IPv4 address and prefix when `addr` is given. */
static int if_configure(const char *name, const char *addr, int prefix) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  struct ifreq ifr = {0};
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  int r = 0;
  if (addr) {
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    inet_pton(AF_INET, addr, &sin->sin_addr);
    r |= ioctl(s, SIOCSIFADDR, &ifr);
    sin->sin_addr.s_addr = prefix ? htonl(0xffffffffu << (32 - prefix)) : 0;
    r |= ioctl(s, SIOCSIFNETMASK, &ifr);
  }
  r |= ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  r |= ioctl(s, SIOCSIFFLAGS, &ifr);
  close(s);
  return r;
}

/* "a.b.c.d/prefix gateway": the job's address on eth0 and its default route. */
static int configure_network(const char *spec) {
  char addr[32], gw[32];
  int prefix;
  if (sscanf(spec, "%31[0-9.]/%d %31s", addr, &prefix, gw) != 3) return -1;
  if (if_configure("lo", NULL, 0) < 0 || if_configure("eth0", addr, prefix) < 0) return -1;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct rtentry rt = {0};
  struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst, *g = (struct sockaddr_in *)&rt.rt_gateway,
                     *mask = (struct sockaddr_in *)&rt.rt_genmask;
  dst->sin_family = g->sin_family = mask->sin_family = AF_INET;
  inet_pton(AF_INET, gw, &g->sin_addr);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  int r = ioctl(s, SIOCADDRT, &rt);
  close(s);
  return r;
}

struct job_setup {
  struct request *req;
  char **argv, **envp;
  int out[2], err[2], errpipe[2], go[2];
};

static const char *MASKED[] = {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                               "/proc/latency_stats", NULL};
static const char *READONLY[] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/fs", "/proc/irq", NULL};

static int child_main(void *arg) {
  struct job_setup *js = arg;
  struct request *r = js->req;
  char c;
  close(js->go[1]);
  if (read(js->go[0], &c, 1) != 1) _exit(126); /* placed in the job's cgroup first */
  close(js->go[0]);
  close(js->out[0]);
  close(js->err[0]);
  close(js->errpipe[0]);
  dup2(js->out[1], 1);
  dup2(js->err[1], 2);
  int devnull = open("/dev/null", O_RDONLY);
  dup2(devnull, 0);
  if (devnull > 2) close(devnull);
  close(js->out[1]);
  close(js->err[1]);

  char tmpopt[64], wsopt[64];
  snprintf(tmpopt, sizeof tmpopt, "mode=1777,size=%s", field_str(r, F_TMP));
  snprintf(wsopt, sizeof wsopt, "mode=0755,size=%s", field_str(r, F_WORKSPACE));
  mount_or_die(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
  mount_or_die(IMAGE_MNT, JOB_ROOT, NULL, MS_BIND | MS_REC, NULL);
  mount_or_die(NULL, JOB_ROOT, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
  mount_or_die("proc", JOB_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  for (const char **p = READONLY; *p; p++) {
    char path[128];
    snprintf(path, sizeof path, JOB_ROOT "%s", *p);
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) == 0)
      mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  }
  mount_or_die("tmpfs", JOB_ROOT "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
  mknod_dev(JOB_ROOT "/dev/null", 1, 3);
  mknod_dev(JOB_ROOT "/dev/zero", 1, 5);
  mknod_dev(JOB_ROOT "/dev/full", 1, 7);
  mknod_dev(JOB_ROOT "/dev/random", 1, 8);
  mknod_dev(JOB_ROOT "/dev/urandom", 1, 9);
  mknod_dev(JOB_ROOT "/dev/tty", 5, 0);
  symlink("/proc/self/fd", JOB_ROOT "/dev/fd");
  symlink("/proc/self/fd/0", JOB_ROOT "/dev/stdin");
  symlink("/proc/self/fd/1", JOB_ROOT "/dev/stdout");
  symlink("/proc/self/fd/2", JOB_ROOT "/dev/stderr");
  mkdir(JOB_ROOT "/dev/pts", 0755);
  mkdir(JOB_ROOT "/dev/shm", 01777);
  mount_or_die("devpts", JOB_ROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
  mount_or_die("shm", JOB_ROOT "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
  for (const char **p = MASKED; *p; p++) {
    char path[128];
    snprintf(path, sizeof path, JOB_ROOT "%s", *p);
    mount(JOB_ROOT "/dev/null", path, NULL, MS_BIND, NULL);
  }
  mount_or_die("sysfs", JOB_ROOT "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL);
  mount_or_die("tmpfs", JOB_ROOT "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmpopt);
  if (r->flen[F_WORKSPACE_DISK] > 0) {
    mount_or_die(WORKSPACE_MNT, JOB_ROOT "/workspace", NULL, MS_BIND, NULL);
    mount_or_die(NULL, JOB_ROOT "/workspace", NULL, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV, NULL);
  } else {
    mount_or_die("tmpfs", JOB_ROOT "/workspace", "tmpfs", MS_NOSUID | MS_NODEV, wsopt);
  }
  if (chdir(JOB_ROOT) < 0 || mount(JOB_ROOT, "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/workspace") < 0) {
    dprintf(2, "boxcar-agent: entering the job's root: %s\n", strerror(errno));
    _exit(126);
  }
  char *host = field_str(r, F_HOSTNAME);
  sethostname(host, strlen(host));
  struct rlimit nofile = {1024, 1024};
  setrlimit(RLIMIT_NOFILE, &nofile);
  setsid();

  /* Capabilities: the same set container jobs get, nothing more after exec. */
  unsigned long long caps = strtoull(field_str(r, F_CAPS), NULL, 10);
  for (int cap = 0; cap <= 63; cap++)
    if (!(caps & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno == EINVAL) break;
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {{(uint32_t)caps, (uint32_t)caps, 0}, {(uint32_t)(caps >> 32), (uint32_t)(caps >> 32), 0}};
  int err = 0;
  if (syscall(SYS_capset, &hdr, data) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) err = errno;
  extern char **environ;
  environ = js->envp;
  if (!err && r->flen[F_SECCOMP] > 0) {
    struct sock_fprog prog = {(unsigned short)(r->flen[F_SECCOMP] / 8), (struct sock_filter *)r->field[F_SECCOMP]};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) err = errno;
  }
  if (!js->argv[0]) _exit(0); /* a warm-up: everything but the exec */
  if (!err) {
    execvp(js->argv[0], js->argv);
    err = errno;
  }
  write_all(js->errpipe[1], &err, sizeof err);
  _exit(127);
}

static void on_sigchld(int sig) {
  (void)sig;
  int e = errno;
  if (write(sigchld_pipe[1], "c", 1) < 0) { /* the pipe is full: a wake-up is already pending */
  }
  errno = e;
}

static void cg_write(const char *cg, const char *file, const char *text) {
  char path[128];
  snprintf(path, sizeof path, "%s/%s", cg, file);
  write_file(path, text);
}

static long long cg_read(const char *cg, const char *file, const char *key) {
  char path[128];
  snprintf(path, sizeof path, "%s/%s", cg, file);
  return read_number(path, key);
}

static void set_limits(struct request *r, const char *cg) {
  char buf[64];
  cg_write(cg, "pids.max", field_str(r, F_PIDS));
  cg_write(cg, "memory.max", field_str(r, F_MEMORY));
  cg_write(cg, "memory.swap.max", "0");
  long long millis = atoll(field_str(r, F_CPU));
  snprintf(buf, sizeof buf, "%lld 100000", millis * 100);
  cg_write(cg, "cpu.max", buf);
}

static void set_clock_and_entropy(struct request *r) {
  char *t = field_str(r, F_TIME);
  struct timespec ts = {0, 0};
  ts.tv_sec = strtoll(t, &t, 10);
  if (*t == '.') ts.tv_nsec = strtol(t + 1, NULL, 10);
  clock_settime(CLOCK_REALTIME, &ts);
  /* Every clone of a snapshot starts with the same RNG state: mix in the host's fresh bytes. */
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct {
      int entropy_count, buf_size;
      unsigned char buf[64];
    } e;
    e.buf_size = r->flen[F_SEED] > 64 ? 64 : (int)r->flen[F_SEED];
    e.entropy_count = e.buf_size * 8;
    memcpy(e.buf, r->field[F_SEED], (size_t)e.buf_size);
    ioctl(fd, RNDADDENTROPY, &e);
    close(fd);
  }
}

/* Opens a block device once it is there, and drops what the guest cached of it. */
static int fresh_block_device(const char *dev) {
  int fd = -1;
  for (int i = 0; i < 200 && (fd = open(dev, O_RDONLY | O_CLOEXEC)) < 0; i++) usleep(10000);
  if (fd < 0) return -1;
  ioctl(fd, BLKFLSBUF, 0); /* blocks read at probe time belong to the snapshot's disk, not this job's */
  close(fd);
  return 0;
}

/* The job's workspace disk at WORKSPACE_MNT, bound onto its /workspace in child_main. */
static int mount_workspace(void) {
  if (fresh_block_device(WORKSPACE_DEV) < 0) return -1;
  mkdir(WORKSPACE_MNT, 0755);
  return mount(WORKSPACE_DEV, WORKSPACE_MNT, "ext4", MS_NOSUID | MS_NODEV, "");
}

/*
 * After the job: everything it left in its workspace is on the disk before its exit is
 * reported, since the host reads the disk as soon as it sees the exit. Read-only from now on;
 * if a dying process still holds a file open for writing, a sync does it.
 */
static void settle_workspace(void) {
  if (mount(NULL, WORKSPACE_MNT, NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0) sync();
}

static int mount_image(void) {
  static int mounted = 0; /* a warm-up run mounted it already */
  if (mounted) return 0;
  if (fresh_block_device("/dev/vda") < 0) return -1;
  mkdir(IMAGE_MNT, 0755);
  int r = mount("/dev/vda", IMAGE_MNT, "ext4", MS_RDONLY | MS_NOSUID | MS_NODEV, "noload");
  mounted = r == 0;
  return r;
}

static void forward(int fd, char type, long long *left, int *noted) {
  char buf[32768];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n <= 0) return;
  /* The cap counts whole frames, headers too: the host caps the log file by its size. */
  if (n + 5 > *left) n = *left > 5 ? (ssize_t)(*left - 5) : 0;
  if (n > 0) {
    *left -= n + 5;
    send_frame(out_fd, type, buf, (uint32_t)n);
    return;
  }
  *left = 0;
  if (!*noted) send_text(out_fd, 'n', "output exceeded the log size cap; later output dropped");
  *noted = 1;
}

/*
 * Runs the job (or, with `warm`, everything a job's start does short of its exec, so a pooled
 * VM under TCG has translated that path before its job comes; it answers W, not S).
 */
static void run_job(struct request *r, int warm) {
  struct job_setup js = {.req = r};
  const char *cg = warm ? WARM_CGROUP : JOB_CGROUP;
  js.argv = split_list(r->field[F_ARGV], r->flen[F_ARGV]);
  js.envp = split_list(r->field[F_ENV], r->flen[F_ENV]);
  set_clock_and_entropy(r);
  set_limits(r, cg);
  if (!js.argv[0] && !warm) {
    send_text(ctl_fd, 'E', "no command given");
    return;
  }
  if (r->flen[F_NETWORK] > 0 && configure_network(field_str(r, F_NETWORK)) < 0) {
    send_text(ctl_fd, 'E', "configuring the job's network: %s", strerror(errno));
    return;
  }
  if (mount_image() < 0) {
    send_text(ctl_fd, 'E', "mounting the job's disk: %s", strerror(errno));
    return;
  }
  /* A warm-up never has one: its pooled VM's workspace disk is filled only once its job comes. */
  int workspace = r->flen[F_WORKSPACE_DISK] > 0;
  if (workspace && mount_workspace() < 0) {
    send_text(ctl_fd, 'E', "mounting the job's workspace disk: %s", strerror(errno));
    return;
  }
  if (pipe2(js.out, O_CLOEXEC) < 0 || pipe2(js.err, O_CLOEXEC) < 0 || pipe2(js.errpipe, O_CLOEXEC) < 0 ||
      pipe2(js.go, O_CLOEXEC) < 0) {
    send_text(ctl_fd, 'E', "pipe: %s", strerror(errno));
    return;
  }
  static char stack[256 * 1024];
  /*
   * No network namespace of its own: the guest is the job's alone and has no NIC unless the
   * job has network (a new namespace costs ~20 ms of a restored guest's start under TCG).
   */
  int flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD;
  pid_t pid = clone(child_main, stack + sizeof stack, flags, &js);
  if (pid < 0) {
    send_text(ctl_fd, 'E', "clone: %s", strerror(errno));
    return;
  }
  char pidtext[32];
  snprintf(pidtext, sizeof pidtext, "%d", pid);
  cg_write(cg, "cgroup.procs", pidtext);
  close(js.go[0]);
  write_all(js.go[1], "g", 1);
  close(js.go[1]);
  close(js.out[1]);
  close(js.err[1]);
  close(js.errpipe[1]);
  int exec_err = 0;
  ssize_t n;
  while ((n = read(js.errpipe[0], &exec_err, sizeof exec_err)) < 0 && errno == EINTR) {
  }
  close(js.errpipe[0]);
  if (n == sizeof exec_err) {
    waitpid(pid, NULL, 0);
    send_text(ctl_fd, 'E', "exec %s: %s", js.argv[0], strerror(exec_err));
    return;
  }
  if (!warm) send_text(ctl_fd, 'S', "%d", pid);

  long long left = atoll(field_str(r, F_OUTPUT_CAP));
  int noted = 0, status = 0, reaped = 0, out_open = 1, err_open = 1, ctl_open = 1;
  while (!reaped || out_open || err_open) {
    /* With the host gone: under vsock, wait for it to come back; under virtio-serial, poll. */
    int host_fd = ctl_open ? ctl_fd : vsock_listener;
    struct pollfd p[4] = {{out_open ? js.out[0] : -1, POLLIN, 0},
                          {err_open ? js.err[0] : -1, POLLIN, 0},
                          {sigchld_pipe[0], POLLIN, 0},
                          {host_fd, POLLIN, 0}};
    if (poll(p, 4, host_fd >= 0 ? -1 : 200) < 0 && errno != EINTR) break;
    if (!ctl_open && vsock_listener >= 0) {
      if (p[3].revents & POLLIN) {
        vsock_accept();
        ctl_open = 1;
      }
      p[3].revents = 0;
    }
    if (p[0].revents & POLLIN) forward(js.out[0], 'o', &left, &noted);
    else if (p[0].revents) out_open = 0;
    if (p[1].revents & POLLIN) forward(js.err[0], 'e', &left, &noted);
    else if (p[1].revents) err_open = 0;
    if (p[2].revents) {
      char drain[64];
      while (read(sigchld_pipe[0], drain, sizeof drain) > 0) {
      }
    }
    int st;
    for (pid_t w; (w = waitpid(-1, &st, WNOHANG)) > 0;) /* the job, or orphans of its namespace */
      if (w == pid) {
        reaped = 1;
        status = st;
      }
    if ((!ctl_open && vsock_listener < 0) || (p[3].revents & (POLLIN | POLLHUP))) {
      /* A signal request from the host; while no host is connected, look again every 200 ms. */
      char type;
      uint32_t len;
      char *msg = read_frame(&type, &len, 0);
      ctl_open = msg != NULL;
      if (msg && type == 'K' && len == 1 && !reaped) kill(pid, (unsigned char)msg[0]);
      free(msg);
    }
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (warm) {
    send_text(ctl_fd, 'W', "%d", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return;
  }
  if (workspace) settle_workspace();
  long long forks_refused = cg_read(cg, "pids.events", "max");
  if (forks_refused > 0)
    send_text(out_fd, 'n', "the job reached its process limit (pids %s): %lld forks refused", field_str(r, F_PIDS),
              forks_refused);
  long long oom = cg_read(cg, "memory.events", "oom_kill");
  long long peak = cg_read(cg, "memory.peak", NULL);
  long long cpu = cg_read(cg, "cpu.stat", "usage_usec");
  send_text(out_fd, 'x', "%d %d %lld %lld", code, oom > 0, peak, cpu);
}

int main(void) {
  if (getpid() != 1) {
    fprintf(stderr, "boxcar-agent runs as PID 1 of a Boxcar microVM only\n");
    return 2;
  }
  setup_guest();
  /* Not dumpable: a job (root in the guest) cannot ptrace or read the agent through /proc. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) logmsg("pipe: %s", strerror(errno));
  struct sigaction sa = {0};
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  ctl_fd = open_port("ctl");
  out_fd = open_port("out");
  if (ctl_fd < 0 || out_fd < 0) {
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_port = AGENT_VSOCK_PORT, .svm_cid = VMADDR_CID_ANY};
    vsock_listener = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (vsock_listener < 0 || bind(vsock_listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(vsock_listener, 1) < 0) {
      logmsg("neither virtio-serial ports ctl/out nor vsock: %s", strerror(errno));
      reboot(RB_AUTOBOOT);
    }
    vsock_accept();
  }
  struct utsname u;
  uname(&u);
  send_text(ctl_fd, 'H', "%s", u.release);
  for (;;) {
    char type;
    uint32_t len;
    char *msg = read_frame(&type, &len, 1);
    if (!msg) continue;
    if (type != 'R' && type != 'W') {
      free(msg);
      continue; /* a stop before the job started, or after it ended: nothing to do */
    }
    struct request req;
    if (parse_request(msg, len, &req) < 0 || req.n < F_COUNT) {
      send_text(ctl_fd, type == 'W' ? 'W' : 'E', "malformed request (%d fields)", req.n);
      continue;
    }
    run_job(&req, type == 'W');
    /* One job per VM: after it, the VM idles until the host destroys it (after reading its figures). */
    if (type == 'R') {
      for (;;) free(read_frame(&type, &len, 1));
    }
  }
}
