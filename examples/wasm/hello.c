// Prints a line and exits with status 7: the smallest check of output and proc_exit.
#include <stdio.h>
int main(void) {
  printf("hello from wasm\n");
  return 7;
}
