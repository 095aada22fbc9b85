// C baseline for the interrupt-path latency (test/lab/interrupts.test.ts): on a VFIO device fd
// it inherited, bind one MSI-X (or MSI) vector to an eventfd, then N times: write a device
// register that raises it (pwrite), poll() the eventfd, read it. Prints the median and p90 in ns.
// Before each (untimed), CLEAR_VALUE is written at CLEAR_OFFSET if given (e1000e: ICR, W1C).
// Usage: irq-latency DEVFD INDEX VECTOR REG_OFFSET VALUE N [CLEAR_OFFSET CLEAR_VALUE]  (INDEX: 1 MSI, 2 MSI-X)
#define _GNU_SOURCE
#include <linux/vfio.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

static int set_irqs(int dev, unsigned index, unsigned count, const int32_t *fds) {
  size_t sz = sizeof(struct vfio_irq_set) + 4 * count;
  struct vfio_irq_set *s = calloc(1, sz);
  s->argsz = sz; s->index = index; s->start = 0; s->count = count;
  s->flags = VFIO_IRQ_SET_ACTION_TRIGGER | (count ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE);
  for (unsigned i = 0; i < count; i++) ((int32_t *)s->data)[i] = fds[i];
  int r = ioctl(dev, VFIO_DEVICE_SET_IRQS, s);
  free(s);
  return r;
}

int main(int argc, char **argv) {
  if (argc < 7) { fprintf(stderr, "usage: irq-latency DEVFD INDEX VECTOR REG_OFFSET VALUE N\n"); return 2; }
  int dev = atoi(argv[1]);
  unsigned index = atoi(argv[2]), vec = atoi(argv[3]);
  off_t reg = strtoull(argv[4], 0, 0);
  uint32_t val = strtoul(argv[5], 0, 0);
  int n = atoi(argv[6]);
  off_t clear = argc > 8 ? (off_t)strtoull(argv[7], 0, 0) : -1;
  uint32_t clear_val = argc > 8 ? strtoul(argv[8], 0, 0) : 0;
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  int32_t fds[64];
  for (unsigned i = 0; i <= vec && i < 64; i++) fds[i] = i == vec ? efd : -1;
  if (set_irqs(dev, index, vec + 1, fds)) { perror("VFIO_DEVICE_SET_IRQS"); return 1; }
  double *t = calloc(n, sizeof *t);
  uint64_t cnt;
  int got = 0;
  for (int i = -10; i < n; i++) {
    if (clear >= 0 && pwrite(dev, &clear_val, 4, clear) != 4) { perror("pwrite (clear)"); return 1; }
    double t0 = now_ns();
    if (pwrite(dev, &val, 4, reg) != 4) { perror("pwrite"); return 1; }
    struct pollfd p = { .fd = efd, .events = POLLIN };
    if (poll(&p, 1, 2000) != 1) { fprintf(stderr, "no interrupt within 2 s (iteration %d)\n", i); return 1; }
    if (read(efd, &cnt, 8) != 8) { perror("read"); return 1; }
    double t1 = now_ns();
    if (i >= 0) t[got++] = t1 - t0;
  }
  set_irqs(dev, index, 0, 0);
  qsort(t, got, sizeof *t, cmp);
  printf("%.0f %.0f\n", t[got / 2], t[got * 9 / 10]);
  return 0;
}
