/*
 * wake.c: an empty periodic loop in C, the floor under `npe run` with no interpreter in it.
 *
 * Why: `jitter.py measure` times an empty loop in Python. If that loop sometimes wakes a
 * whole period late, the cause could still be the interpreter. This loop has no Python,
 * no garbage collector and no GIL: it sleeps to absolute deadlines on CLOCK_MONOTONIC
 * (clock_nanosleep, TIMER_ABSTIME), optionally pinned to one core, optionally SCHED_FIFO,
 * with its memory locked, the way cyclictest measures wake-up latency. What it sees late is
 * late because of the kernel or the hypervisor, whatever code runs in the loop.
 *
 * Usage: wake HZ TICKS CPU FIFO_PRIORITY   (CPU -1: not pinned; FIFO_PRIORITY 0: normal)
 * Output: the first deadline's base time, then one line per wake-up: its lateness in ns.
 * `jitter.py measure --native` builds it, runs it and turns that into the usual JSON.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s HZ TICKS CPU FIFO_PRIORITY\n", argv[0]);
        return 2;
    }
    double hz = atof(argv[1]);
    long ticks = atol(argv[2]);
    int cpu = atoi(argv[3]);
    int prio = atoi(argv[4]);
    if (!(hz > 0) || ticks <= 0) {
        fprintf(stderr, "HZ and TICKS must be > 0\n");
        return 2;
    }
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set)) {
            perror("sched_setaffinity");
            return 1;
        }
    }
    if (prio > 0) {
        struct sched_param p = {.sched_priority = prio};
        if (sched_setscheduler(0, SCHED_FIFO, &p)) {
            perror("sched_setscheduler(SCHED_FIFO)");
            return 1;
        }
    }
    int64_t *late = calloc((size_t)ticks, sizeof *late);
    if (late == NULL) {
        perror("calloc");
        return 1;
    }
    mlockall(MCL_CURRENT | MCL_FUTURE); /* best effort: no page faults in the loop */
    int64_t period = (int64_t)(1e9 / hz);
    int64_t t0 = now_ns();
    for (long k = 0; k < ticks; k++) {
        int64_t d = t0 + (k + 1) * period;
        struct timespec ts = {d / 1000000000LL, d % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) {
        }
        late[k] = now_ns() - d;
    }
    printf("%lld %lld\n", (long long)t0, (long long)period);
    for (long k = 0; k < ticks; k++) printf("%lld\n", (long long)late[k]);
    return 0;
}
