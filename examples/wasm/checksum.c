// A CI tool: CRC-32 and size of every regular file in a directory (default /workspace), like
// `cksum`, sorted by name. Exits 1 when the directory cannot be read.
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t table[256];

static void init_table(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/workspace";
  init_table();
  DIR *d = opendir(dir);
  if (!d) {
    perror(dir);
    return 1;
  }
  char *names[1024];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 1024) {
    if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof names[0], by_name);
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    uint32_t crc = 0xFFFFFFFFu;
    unsigned long size = 0;
    unsigned char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
      for (size_t j = 0; j < got; j++) crc = table[(crc ^ buf[j]) & 0xFF] ^ (crc >> 8);
      size += got;
    }
    fclose(f);
    printf("%08x %lu %s\n", crc ^ 0xFFFFFFFFu, size, names[i]);
  }
  return 0;
}
