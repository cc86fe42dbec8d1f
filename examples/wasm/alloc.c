// Allocates 1 MiB blocks, touching each and keeping them all (so the compiler cannot drop
// them), until malloc fails; reports how far it got and exits 3.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
  long limit = argc > 1 ? atol(argv[1]) : 1L << 20;
  long mib = 0;
  void **head = NULL;
  while (mib < limit) {
    void **p = malloc(1 << 20);
    if (!p) {
      printf("allocation failed after %ld MiB\n", mib);
      return 3;
    }
    memset(p, 1, 1 << 20);
    *p = head;
    head = p;
    mib++;
  }
  printf("allocated %ld MiB (%p)\n", mib, (void *)head);
  return 0;
}
