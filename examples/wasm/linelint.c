// A CI linter: every file in a directory (default /workspace) must have lines of at most
// MAX (default 100) characters and no trailing whitespace. Prints each finding as
// file:line: message and exits 1 when there is any.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/workspace";
  int max = argc > 2 ? atoi(argv[2]) : 100;
  DIR *d = opendir(dir);
  if (!d) {
    perror(dir);
    return 2;
  }
  int findings = 0, files = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    files++;
    char line[65536];
    int no = 0;
    while (fgets(line, sizeof line, f)) {
      no++;
      size_t len = strcspn(line, "\n");
      if ((int)len > max) printf("%s:%d: line is %zu characters (max %d)\n", e->d_name, no, len, max), findings++;
      if (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t')) printf("%s:%d: trailing whitespace\n", e->d_name, no), findings++;
    }
    fclose(f);
  }
  closedir(d);
  printf("%d files, %d findings\n", files, findings);
  return findings ? 1 : 0;
}
