// C baseline for bench/ffi: N preads and pwrites of 4 bytes on a memfd, median ns per call
// over R rounds. Usage: pio N R   (prints: pread_ns pwrite_ns)
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 200000, r = argc > 2 ? atol(argv[2]) : 9;
  int fd = memfd_create("bar", 0);
  if (fd < 0 || ftruncate(fd, 16384)) return 1;
  uint32_t v = 0;
  double rd[64], wr[64];
  for (long k = 0; k < r && k < 64; k++) {
    double t0 = now_ns();
    for (long i = 0; i < n; i++) if (pread(fd, &v, 4, 0x8 + (i & 0xff) * 4) != 4) return 1;
    double t1 = now_ns();
    for (long i = 0; i < n; i++) if (pwrite(fd, &v, 4, 0x8 + (i & 0xff) * 4) != 4) return 1;
    double t2 = now_ns();
    rd[k] = (t1 - t0) / n; wr[k] = (t2 - t1) / n;
  }
  qsort(rd, r, sizeof *rd, cmp); qsort(wr, r, sizeof *wr, cmp);
  printf("%.1f %.1f\n", rd[r / 2], wr[r / 2]);
  return 0;
}
