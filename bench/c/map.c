// C baseline for bench/map: map and unmap SIZE bytes of a memfd into an iommufd IOAS with an
// NVMe cdev attached (IOMMU_IOAS_MAP_FILE at IOVA 0, then IOMMU_IOAS_UNMAP), ROUNDS times.
// Usage: map <cdev> <size-MiB> <rounds>    prints the median map and unmap times in ms.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e3 + t.tv_nsec / 1e6; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
#define DIE(what) do { perror(what); return 1; } while (0)

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: map <cdev> <size-MiB> <rounds>\n"); return 2; }
  unsigned long long size = strtoull(argv[2], 0, 10) << 20;
  int rounds = atoi(argv[3]);
  int iommu = open("/dev/iommu", O_RDWR), dev = open(argv[1], O_RDWR);
  if (iommu < 0 || dev < 0) DIE("open");
  struct iommu_ioas_alloc alloc = {.size = sizeof alloc};
  if (ioctl(iommu, IOMMU_IOAS_ALLOC, &alloc)) DIE("IOMMU_IOAS_ALLOC");
  struct vfio_device_bind_iommufd bind = {.argsz = sizeof bind, .iommufd = iommu};
  if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind)) DIE("BIND");
  struct vfio_device_attach_iommufd_pt at = {.argsz = sizeof at, .pt_id = alloc.out_ioas_id};
  if (ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at)) DIE("ATTACH");
  int memfd = memfd_create("ram", 0);
  if (memfd < 0 || ftruncate(memfd, size)) DIE("memfd");
  double m[64], u[64];
  for (int r = 0; r < rounds && r < 64; r++) {
    struct iommu_ioas_map_file mf = {.size = sizeof mf, .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                                     .ioas_id = alloc.out_ioas_id, .fd = memfd, .start = 0, .length = size, .iova = 0};
    double t0 = now_ms();
    if (ioctl(iommu, IOMMU_IOAS_MAP_FILE, &mf)) DIE("IOMMU_IOAS_MAP_FILE");
    double t1 = now_ms();
    struct iommu_ioas_unmap um = {.size = sizeof um, .ioas_id = alloc.out_ioas_id, .iova = 0, .length = size};
    if (ioctl(iommu, IOMMU_IOAS_UNMAP, &um)) DIE("IOMMU_IOAS_UNMAP");
    double t2 = now_ms();
    m[r] = t1 - t0; u[r] = t2 - t1;
  }
  qsort(m, rounds, sizeof *m, cmp); qsort(u, rounds, sizeof *u, cmp);
  printf("%.3f %.3f\n", m[rounds / 2], u[rounds / 2]);
  return 0;
}
