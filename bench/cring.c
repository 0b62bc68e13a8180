/*
 * cring: the kernel lab's three-semaphore bounded buffer, in C, as the floor shmfifo is measured
 * against. Same protocol as shmfifo's data path, minus crash safety and item framing:
 *
 *   put: sem_wait(empty); sem_wait(put_lock); copy into slot[head % capacity]; head++;
 *        sem_post(put_lock); sem_post(fill)
 *   get: sem_wait(fill);  sem_wait(take_lock); copy out of slot[tail % capacity]; tail++;
 *        sem_post(take_lock); sem_post(empty)
 *
 * MODE "mutex": put_lock and take_lock are one semaphore (the lab's single mutex).
 * MODE "split": two semaphores; empty/fill already keep producers and consumers off each
 * other's slots, so each side only needs to exclude its own kind.
 * Semaphore operations are full barriers, so a slot written before sem_post(fill) is visible to
 * the consumer that wins the matching sem_wait(fill).
 *
 * The segment is POSIX shared memory and the semaphores are named POSIX semaphores, as in
 * shmfifo. Every name is unlinked right after it is opened: forked children inherit the mapping
 * and the semaphore handles, so nothing can be left in /dev/shm however the run ends.
 *
 * Items and output files follow bench/delivery.py: each item starts with
 * (producer << 32 | seq, put_ns); each consumer writes OUT.c<i>.words = end_ns, then the words
 * it received; the latency run also writes OUT.lat (i64 get time - put_ns per item).
 *
 * usage:
 *   cring throughput MODE PRODUCERS CONSUMERS CAPACITY ITEM_SIZE PER_PRODUCER NAME OUT
 *   cring latency    MODE CAPACITY ITEM_SIZE COUNT RATE NAME OUT
 * prints one line: {"t0_ns": N}, the moment the workers were released.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STOP_WORD UINT64_MAX
#define HEADER_SIZE 16
#define CACHE_LINE 64
#define RUN_TIME_LIMIT_S 600 /* the Python harness bounds runs too; this covers a lost parent */

/* Shared header. head and tail sit on separate cache lines so that, with split locks, the
 * producer and consumer sides do not bounce one line between cores. */
struct ring {
    uint64_t head __attribute__((aligned(CACHE_LINE)));
    uint64_t tail __attribute__((aligned(CACHE_LINE)));
    sem_t ready __attribute__((aligned(CACHE_LINE))); /* workers -> parent: connected */
    sem_t go;                                         /* parent -> workers: start */
    unsigned char slots[] __attribute__((aligned(CACHE_LINE)));
};

static struct ring *ring;
static sem_t *empty, *fill, *put_lock, *take_lock;
static uint64_t capacity, item_size;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* sem_wait that survives signals (EINTR) instead of breaking the protocol. */
static void wait_sem(sem_t *sem)
{
    while (sem_wait(sem) != 0)
        if (errno != EINTR)
            die("sem_wait");
}

static void put(const unsigned char *item)
{
    wait_sem(empty);
    wait_sem(put_lock);
    memcpy(ring->slots + (ring->head % capacity) * item_size, item, item_size);
    ring->head++; /* the commit: sem_post(fill) below publishes the slot */
    sem_post(put_lock);
    sem_post(fill);
}

static void get(unsigned char *item)
{
    wait_sem(fill);
    wait_sem(take_lock);
    memcpy(item, ring->slots + (ring->tail % capacity) * item_size, item_size);
    ring->tail++;
    sem_post(take_lock);
    sem_post(empty);
}

static sem_t *open_sem(const char *name, const char *suffix, unsigned value)
{
    char full[256];
    snprintf(full, sizeof full, "/%s.%s", name, suffix);
    sem_t *sem = sem_open(full, O_CREAT | O_EXCL, 0600, value);
    if (sem == SEM_FAILED)
        die(full);
    sem_unlink(full);
    return sem;
}

static void setup(const char *name, int split)
{
    char shm_name[256];
    snprintf(shm_name, sizeof shm_name, "/%s.ring", name);
    int fd = shm_open(shm_name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0)
        die(shm_name);
    shm_unlink(shm_name);
    size_t size = sizeof(struct ring) + capacity * item_size;
    if (ftruncate(fd, (off_t)size) != 0)
        die("ftruncate");
    ring = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ring == MAP_FAILED)
        die("mmap");
    close(fd);
    ring->head = ring->tail = 1ull << 32;
    if (sem_init(&ring->ready, 1, 0) != 0 || sem_init(&ring->go, 1, 0) != 0)
        die("sem_init");
    empty = open_sem(name, "empty", (unsigned)capacity);
    fill = open_sem(name, "fill", 0);
    put_lock = open_sem(name, "mutex", 1);
    take_lock = split ? open_sem(name, "take", 1) : put_lock;
}

static void start_and_wait(void)
{
    sem_post(&ring->ready);
    wait_sem(&ring->go);
}

static void make_item(unsigned char *item, uint64_t word, uint64_t put_ns)
{
    memcpy(item, &word, 8); /* little endian, as bench/delivery.py expects */
    memcpy(item + 8, &put_ns, 8);
}

static void producer(unsigned id, uint64_t count, double rate)
{
    unsigned char *item = calloc(1, item_size);
    start_and_wait();
    uint64_t start = now_ns();
    for (uint64_t seq = 0; seq < count; seq++) {
        if (rate > 0) { /* absolute deadlines, as the latency workload requires */
            uint64_t due = start + (uint64_t)(seq * 1e9 / rate);
            struct timespec ts = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        }
        make_item(item, (uint64_t)id << 32 | seq, rate > 0 ? now_ns() : 0);
        put(item);
    }
    exit(0);
}

static void consumer(unsigned index, uint64_t most, const char *out, int latency)
{
    unsigned char *item = malloc(item_size);
    uint64_t *words = malloc((most + 1) * sizeof *words);
    int64_t *lat = latency ? malloc(most * sizeof *lat) : NULL;
    uint64_t n = 0;
    if (!item || !words || (latency && !lat))
        die("malloc");
    start_and_wait();
    words[0] = 0;
    for (;;) {
        get(item);
        uint64_t t = now_ns(), word, put_ns;
        memcpy(&word, item, 8);
        memcpy(&put_ns, item + 8, 8);
        if (word == STOP_WORD)
            break;
        words[++n] = word;
        if (latency)
            lat[n - 1] = (int64_t)(t - put_ns);
        words[0] = t;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.c%u.words", out, index);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(words, sizeof *words, n + 1, f) != n + 1 || fclose(f) != 0)
        die(path);
    if (latency) {
        snprintf(path, sizeof path, "%s.lat", out);
        f = fopen(path, "wb");
        if (!f || fwrite(lat, sizeof *lat, n, f) != n || fclose(f) != 0)
            die(path);
    }
    exit(0);
}

static pid_t *workers;
static unsigned worker_count;

/* A failed worker means the run is void; the others may be blocked forever, so end them. */
static void check_worker(pid_t pid, int status)
{
    if (pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    fprintf(stderr, "cring: worker %d failed (wait status %d)\n", (int)pid, status);
    for (unsigned i = 0; i < worker_count; i++)
        kill(workers[i], SIGKILL);
    exit(1);
}

static int run(const char *name, int split, unsigned producers, unsigned consumers,
               uint64_t per_producer, double rate, const char *out)
{
    setup(name, split);
    pid_t pids[producers + consumers];
    workers = pids;
    for (unsigned i = 0; i < consumers + producers; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            if (i < consumers)
                consumer(i, per_producer * producers, out, rate > 0);
            else
                producer(i - consumers, per_producer, rate);
        }
        pids[i] = pid;
        worker_count = i + 1;
    }
    for (unsigned i = 0; i < consumers + producers; i++)
        wait_sem(&ring->ready);
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < consumers + producers; i++)
        sem_post(&ring->go);

    for (unsigned i = consumers; i < consumers + producers; i++) {
        int status;
        pid_t pid = waitpid(pids[i], &status, 0);
        check_worker(pid, status);
    }
    /* One stop marker per consumer, each only after the previous consumer finished, as in the
     * Python harness. Only consumers are left, so any child that exits is one of them. */
    unsigned char *stop = calloc(1, item_size);
    make_item(stop, STOP_WORD, 0);
    for (unsigned i = 0; i < consumers; i++) {
        put(stop);
        int status;
        pid_t pid = wait(&status);
        check_worker(pid, status);
    }
    printf("{\"t0_ns\": %" PRIu64 "}\n", t0);
    return 0;
}

static int parse_mode(const char *mode)
{
    if (strcmp(mode, "mutex") == 0)
        return 0;
    if (strcmp(mode, "split") == 0)
        return 1;
    return -1;
}

int main(int argc, char **argv)
{
    alarm(RUN_TIME_LIMIT_S);
    int split = argc > 2 ? parse_mode(argv[2]) : -1;
    if (split < 0)
        goto usage;
    if (argc == 10 && strcmp(argv[1], "throughput") == 0) {
        capacity = strtoull(argv[5], NULL, 10);
        item_size = strtoull(argv[6], NULL, 10);
        if (capacity < 1 || item_size < HEADER_SIZE)
            goto usage;
        return run(argv[8], split, (unsigned)atoi(argv[3]),
                   (unsigned)atoi(argv[4]), strtoull(argv[7], NULL, 10), 0, argv[9]);
    }
    if (argc == 9 && strcmp(argv[1], "latency") == 0) {
        capacity = strtoull(argv[3], NULL, 10);
        item_size = strtoull(argv[4], NULL, 10);
        double rate = atof(argv[6]);
        if (capacity < 1 || item_size < HEADER_SIZE || rate <= 0)
            goto usage;
        return run(argv[7], split, 1, 1, strtoull(argv[5], NULL, 10),
                   rate, argv[8]);
    }
usage:
    fprintf(stderr,
            "usage: cring throughput MODE PRODUCERS CONSUMERS CAPACITY ITEM_SIZE PER_PRODUCER NAME OUT\n"
            "       cring latency    MODE CAPACITY ITEM_SIZE COUNT RATE NAME OUT\n"
            "MODE: mutex | split\n");
    return 2;
}
