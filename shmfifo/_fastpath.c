/* The non-blocking path of put and get in C: an optional accelerator for shmfifo/ring.py.
 *
 * It does exactly the steps of Client._put_run / Client._take_run for a run of bytes and str
 * items when no wait is needed, in the same order and with the same words (every position,
 * value and size is passed in by name from layout.py; nothing of the layout is written here):
 *
 *   put: phase = PUTTING, fence, epoch even and state RUNNING?, trywait(empty) for each item,
 *        trywait(put_lock), for each item pop a slot number from the free list, write the
 *        item into that pool slot and its number at ring[head + k], free_tail += n,
 *        head += n (commit), post(put_lock), post(fill) n times, puts = last seq,
 *        phase = IDLE
 *   get: phase = GETTING, fence, epoch even and state RUNNING or DRAINING?; if the record
 *        is TAKEN, acknowledge it first: trywait(take_lock), push its slot numbers onto the
 *        free list, free_head += n, record NONE, post(take_lock), post(loans) n times; then
 *        trywait(loans) and trywait(fill) for each item, trywait(take_lock), record
 *        PREPARED at tail, copy the numbers ring[tail..] into the record, tail += n
 *        (commit), record TAKEN, pay debt, post(take_lock), post(empty) for each item not
 *        paid as debt, gets += n, phase = IDLE; the items are then copied out of their
 *        slots, which are this client's until its next acknowledgement
 *   ack: the acknowledgement above alone
 *
 * Whenever a step would have to wait (no token, lock busy, a recovery, a state change), it
 * gives back what it took, sets the phase back to IDLE and returns None: the Python code then
 * does the whole operation, waits included. It has the same crash points as the Python path.
 * Items of other types take the Python path to be put; taken, they leave as (tag, payload).
 *
 * Shared words are aligned 64-bit words accessed with __atomic builtins; the fence is
 * __atomic_thread_fence(SEQ_CST), the same full barrier the Python code gets from a lock.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Every call returns None when it did nothing that needs undoing and the Python path must do
 * (or look at) the whole operation; otherwise its result. */

/* How a step waits before it gives up to the slow path (which sleeps on the semaphore):
 *
 * 1. SPIN_TRIES tries of sem_trywait with a pause: a lock is held for well under a
 *    microsecond, and with the other side running on the other core a token arrives within
 *    a few tries (measured: 2 to 15 on average).
 * 2. YIELD_TRIES tries, each after a sched_yield(): when there are more clients than cores,
 *    the process we wait for is often not running at all (preempted, maybe inside its lock
 *    section), and only giving up the CPU lets it run. Yielding, unlike sleeping in sem_wait,
 *    registers no waiter on the semaphore: glibc's sem_post makes a futex_wake system call
 *    for as long as any waiter is registered, and a woken waiter stays registered until it
 *    is scheduled, which with many clients on few cores takes milliseconds; every post in
 *    that time pays the system call (docs/design.md point 11). With nothing else runnable on
 *    the core a yield returns at once, so this costs a waiter about 30 system calls before
 *    it sleeps.
 */
#define SPIN_TRIES 100
#define YIELD_TRIES 30

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Crash points, for the crash-window tests: SHMFIFO_CRASH_AT=step[:n] SIGKILLs this process
 * the n-th time it reaches the named step (see crashpoints.py; the names are the same as
 * the Python path's). Read once, when the module is imported; unset, each is one branch. */
static char crash_step[64];
static long crash_left;
static int crash_signal = SIGKILL;     /* SHMFIFO_CRASH_SIGNAL=STOP: SIGSTOP (crashpoints.py) */

static void crash(const char *step) {
    if (crash_left > 0 && strcmp(step, crash_step) == 0 && --crash_left == 0)
        kill(getpid(), crash_signal);
}

#define CRASH(step) do { if (crash_left) crash(step); } while (0)

/* A step reached by a section that then gives up to the Python path, which reaches it again:
 * counted once (crashpoints.py counts both paths with crash()). */
static void uncount(const char *step) {
    if (crash_left > 0 && strcmp(step, crash_step) == 0)
        crash_left++;
}

#define UNCOUNT(step) do { if (crash_left) uncount(step); } while (0)

static void crash_init(void) {
    const char *sig = getenv("SHMFIFO_CRASH_SIGNAL");
    if (sig != NULL && strcmp(sig, "STOP") == 0)
        crash_signal = SIGSTOP;
    const char *spec = getenv("SHMFIFO_CRASH_AT");
    if (spec == NULL || *spec == '\0')
        return;
    const char *colon = strchr(spec, ':');
    size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
    if (len >= sizeof crash_step)
        return;
    memcpy(crash_step, spec, len);
    crash_step[len] = '\0';
    crash_left = colon ? strtol(colon + 1, NULL, 10) : 1;
}

static int try_spin(sem_t *sem) {
    for (int i = 0; i < SPIN_TRIES; i++) {
        if (sem_trywait(sem) == 0)
            return 0;
        cpu_relax();
    }
    for (int i = 0; i < YIELD_TRIES; i++) {
        sched_yield();
        if (sem_trywait(sem) == 0)
            return 0;
    }
    return -1;
}

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int have_view;
    char *base;
    uint64_t *w;
    sem_t *empty, *fill, *put_lock, *take_lock, *loans;
    /* word indices */
    Py_ssize_t h_head, h_tail, h_free_head, h_free_tail, h_debt, h_state, h_epoch;
    Py_ssize_t e_phase, e_puts, e_gets, e_inflight, e_index, e_n;
    Py_ssize_t record, ring, free;          /* first word of each list */
    /* values */
    uint64_t putting, getting, idle, running, stopped, prepared, taken, none, tag_bytes, tag_str;
    uint64_t blocked_full, blocked_empty;
    /* geometry, bytes */
    Py_ssize_t pool, slot_size, item_size, header;
    /* the slot header as u64 words: word 0 = length | tag << tag_shift | host << host_shift
     * (layout.py); a put here writes host 0, this machine */
    Py_ssize_t producer_word, seq_word, put_ns_word;
    int tag_shift, host_shift;
    uint64_t nslots, batch_max, pid;
    /* the tag of the raw tuple for a record naming a slot beyond the pool (record_item) */
    uint64_t bad_slot;
    /* whether the in-flight limit can bind (ring.py: Client._use_loans) */
    int use_loans;
    /* The thread that created this Ring: its client's entry is that thread's alone. */
    unsigned long owner;
    /* free_head as this client last read it, and the epoch it was read in: a lower bound of
     * free_head until the next recovery (only consumers move it, and only up; a recovery
     * rebuilds the free list and moves the epoch on). A put reads the consumers' cache line
     * only when the bound no longer covers it (put_section). */
    uint64_t seen_free_head, seen_epoch;
} Ring;

#define LOAD(i) __atomic_load_n(&self->w[(i)], __ATOMIC_RELAXED)
#define STORE(i, v) __atomic_store_n(&self->w[(i)], (uint64_t)(v), __ATOMIC_RELAXED)

static sem_t *open_sem(const char *name) {
    sem_t *s = sem_open(name, 0);
    if (s == SEM_FAILED) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, name);
        return NULL;
    }
    return s;
}

static void ring_release(Ring *self) {
    if (self->have_view) {
        PyBuffer_Release(&self->view);
        self->have_view = 0;
    }
    /* With the lab's single mutex take_lock is put_lock, opened once: close it once. glibc
     * maps a named semaphore once per process and counts its opens, so a second sem_close
     * would unmap it under every other handle of this process. */
    if (self->take_lock == self->put_lock)
        self->take_lock = NULL;
    sem_t **sems[] = {&self->empty, &self->fill, &self->put_lock, &self->take_lock,
                      &self->loans};
    for (int i = 0; i < 5; i++) {
        if (*sems[i] != NULL) {
            sem_close(*sems[i]);
            *sems[i] = NULL;
        }
    }
    self->base = NULL;
    self->w = NULL;
}

static void ring_dealloc(Ring *self) {
    ring_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Ring(**layout): every word position, value and size comes from Python by name
 * (ring.py's Client._make_fastpath, from layout.py); nothing of the layout is written here. */
static int ring_init(Ring *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {
        "buffer", "empty", "fill", "put_lock", "take_lock", "loans",
        "head", "tail", "free_head", "free_tail", "debt", "state", "epoch",
        "phase", "puts", "gets", "inflight", "inflight_index", "inflight_n",
        "record", "ring", "free",
        "PUTTING", "GETTING", "IDLE", "RUNNING", "STOPPED", "PREPARED", "TAKEN", "NONE",
        "TAG_BYTES", "TAG_STR", "BLOCKED_FULL", "BLOCKED_EMPTY",
        "pool", "slot_size", "item_size", "header_size",
        "tag_shift", "host_shift", "producer_word", "seq_word", "put_ns_word", "nslots",
        "batch_max",
        "pid", "BAD_SLOT", "use_loans", NULL};
    PyObject *buffer;
    const char *n_empty, *n_fill, *n_put, *n_take, *n_loans;
    unsigned long long pid, nslots, batch_max;
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "Ring takes keyword arguments only");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds,
                                     "$Osssss" "nnnnnnn" "nnnnnn" "nnn" "KKKKKKKKKKKK" "nnnn"
                                     "iinnnKKKKp",
                                     kwlist, &buffer, &n_empty, &n_fill, &n_put, &n_take,
                                     &n_loans, &self->h_head, &self->h_tail,
                                     &self->h_free_head, &self->h_free_tail, &self->h_debt,
                                     &self->h_state, &self->h_epoch,
                                     &self->e_phase, &self->e_puts, &self->e_gets,
                                     &self->e_inflight, &self->e_index, &self->e_n,
                                     &self->record, &self->ring, &self->free,
                                     &self->putting, &self->getting, &self->idle,
                                     &self->running, &self->stopped, &self->prepared,
                                     &self->taken, &self->none, &self->tag_bytes,
                                     &self->tag_str, &self->blocked_full, &self->blocked_empty,
                                     &self->pool, &self->slot_size, &self->item_size,
                                     &self->header, &self->tag_shift, &self->host_shift,
                                     &self->producer_word, &self->seq_word,
                                     &self->put_ns_word, &nslots, &batch_max, &pid,
                                     &self->bad_slot, &self->use_loans))
        return -1;
    ring_release(self);
    if (PyObject_GetBuffer(buffer, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    self->have_view = 1;
    self->base = self->view.buf;
    self->w = (uint64_t *)self->view.buf;
    self->nslots = nslots;
    self->batch_max = batch_max;
    self->pid = pid;
    self->owner = PyThread_get_thread_ident();
    if ((uintptr_t)self->base % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "mapping is not 8-byte aligned");
        ring_release(self);
        return -1;
    }
    if (!(self->empty = open_sem(n_empty)) || !(self->fill = open_sem(n_fill)) ||
        !(self->put_lock = open_sem(n_put)) || !(self->loans = open_sem(n_loans))) {
        ring_release(self);
        return -1;
    }
    if (strcmp(n_put, n_take) == 0) {
        self->take_lock = self->put_lock;
    } else if (!(self->take_lock = open_sem(n_take))) {
        ring_release(self);
        return -1;
    }
    return 0;
}

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The UTF-8 or bytes payload of an item for the fast path, or NULL (and no error set) if the
 * item is of another type or does not fit. */
static const char *payload_of(Ring *self, PyObject *item, Py_ssize_t *n, uint64_t *tag) {
    const char *data;
    if (PyBytes_CheckExact(item)) {
        data = PyBytes_AS_STRING(item);
        *n = PyBytes_GET_SIZE(item);
        *tag = self->tag_bytes;
    } else if (PyUnicode_CheckExact(item)) {
        data = PyUnicode_AsUTF8AndSize(item, n);  /* cached in the str object */
        if (data == NULL) {                       /* e.g. lone surrogates: Python encodes those */
            PyErr_Clear();
            return NULL;
        }
        *tag = self->tag_str;
    } else {
        return NULL;
    }
    return *n <= self->item_size ? data : NULL;
}

/* The position after pos in the ring or the free list, both nslots long: one division per
 * run of positions instead of one per item (a 64-bit division costs tens of cycles). */
static inline uint64_t next_pos(Ring *self, uint64_t pos) {
    return ++pos == self->nslots ? 0 : pos;
}

/* With take_lock held: push the record's n slot numbers onto the free list and mark it NONE
 * (ring.py: Client._ack_push). */
static void ack_push(Ring *self, uint64_t n) {
    uint64_t fhead = LOAD(self->h_free_head);
    uint64_t at = fhead % self->nslots;
    for (uint64_t i = 0; i < n; i++) {
        STORE(self->free + (Py_ssize_t)at, LOAD(self->record + (Py_ssize_t)i));
        at = next_pos(self, at);
    }
    __atomic_store_n(&self->w[self->h_free_head], fhead + n, __ATOMIC_RELEASE);
    CRASH("ack.pushed");
    STORE(self->e_inflight, self->none);
    CRASH("ack.cleared");
}

/* The acknowledgement of a TAKEN record alone, inside an operation that has stored its phase,
 * fenced and found the epoch even: one take_lock section around ack_push, then its loans
 * tokens back. 1: done; 0: the lock is busy or the record contradicts the geometry (the
 * Python path waits or reports). */
static int ack_section(Ring *self) {
    uint64_t n = LOAD(self->e_n);
    if (n < 1 || n > self->batch_max)
        return 0;
    if (try_spin(self->take_lock) != 0)
        return 0;
    CRASH("ack.lock");
    ack_push(self, n);
    sem_post(self->take_lock);
    CRASH("ack.unlock");
    if (self->use_loans)
        for (uint64_t i = 0; i < n; i++)
            sem_post(self->loans);
    CRASH("ack.done");
    return 1;
}

/* The put lock section for items[0..count), all checked by payload_of beforehand: returns how
 * many were put (1..count), or 0 when a step would wait (then nothing is held or changed). */
static Py_ssize_t put_section(Ring *self, PyObject *const *items, Py_ssize_t count,
                              uint64_t seq) {
    STORE(self->e_phase, self->putting);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t epoch = LOAD(self->h_epoch);
    if ((epoch & 1) || LOAD(self->h_state) != self->running)
        goto slow;
    if (try_spin(self->empty) != 0)
        goto slow;
    Py_ssize_t got = 1;
    while (got < count && sem_trywait(self->empty) == 0)
        got++;
    CRASH("put.empty");
    if (try_spin(self->put_lock) != 0) {
        for (Py_ssize_t i = 0; i < got; i++)
            sem_post(self->empty);
        UNCOUNT("put.empty");
        goto slow;
    }
    CRASH("put.lock");
    uint64_t head = LOAD(self->h_head), ftail = LOAD(self->h_free_tail);
    /* The empty tokens guarantee free slots (layout.py: Geometry); the check is against
     * scribbled words, which the Python path then reports. */
    uint64_t available = self->seen_free_head - ftail;
    if (epoch != self->seen_epoch || available < (uint64_t)got || available > self->nslots) {
        self->seen_free_head = __atomic_load_n(&self->w[self->h_free_head], __ATOMIC_ACQUIRE);
        self->seen_epoch = epoch;
        available = self->seen_free_head - ftail;
        if (available < (uint64_t)got || available > self->nslots)
            goto undo;
    }
    uint64_t now = monotonic_ns();
    uint64_t from = ftail % self->nslots, to = head % self->nslots;
    for (Py_ssize_t i = 0; i < got; i++) {
        uint64_t slot_no = LOAD(self->free + (Py_ssize_t)from);
        from = next_pos(self, from);
        if (slot_no >= self->nslots)
            goto undo;
        Py_ssize_t n;
        uint64_t tag;
        const char *data = payload_of(self, items[i], &n, &tag);
        char *slot = self->base + self->pool + (Py_ssize_t)slot_no * self->slot_size;
        uint64_t *hdr = (uint64_t *)slot;
        hdr[0] = (uint64_t)n | (tag << self->tag_shift);
        hdr[self->producer_word] = self->pid;
        hdr[self->seq_word] = seq + i;
        hdr[self->put_ns_word] = now;
        memcpy(slot + self->header, data, (size_t)n);
        STORE(self->ring + (Py_ssize_t)to, slot_no);
        to = next_pos(self, to);
    }
    CRASH("put.written");
    STORE(self->h_free_tail, ftail + got);   /* popped before they show */
    CRASH("put.popped");
    /* commit: the slots are written before head shows them */
    __atomic_store_n(&self->w[self->h_head], head + got, __ATOMIC_RELEASE);
    CRASH("put.commit");
    sem_post(self->put_lock);
    CRASH("put.unlock");
    for (Py_ssize_t i = 0; i < got; i++)
        sem_post(self->fill);
    STORE(self->e_puts, seq + got - 1);
    STORE(self->e_phase, self->idle);
    CRASH("put.done");
    return got;
undo:
    sem_post(self->put_lock);
    for (Py_ssize_t i = 0; i < got; i++)
        sem_post(self->empty);
slow:
    STORE(self->e_phase, self->idle);
    return 0;
}



/* The take lock section for up to max_items items into the in-flight record: returns how
 * many were taken, or 0 when a step would wait (then only the previous take's
 * acknowledgement happened). */
/* spin_fill: try_spin, or for spin_ns nanoseconds when the caller polls (attach(spin_us)). */
static int spin_fill(Ring *self, uint64_t spin_ns) {
    if (!spin_ns)
        return try_spin(self->fill);
    uint64_t deadline = monotonic_ns() + spin_ns;
    for (unsigned i = 0;; i++) {
        if (sem_trywait(self->fill) == 0)
            return 0;
        if ((i & 63) == 63 && monotonic_ns() >= deadline)
            return -1;
        cpu_relax();
    }
}

static Py_ssize_t take_section(Ring *self, Py_ssize_t max_items, uint64_t spin_ns) {
    STORE(self->e_phase, self->getting);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t state = LOAD(self->h_state);   /* takes run while running or draining */
    if ((LOAD(self->h_epoch) & 1) || state >= self->stopped || state < self->running)
        goto slow;
    /* The previous take is acknowledged before any wait: in this take's lock section when an
     * item is there at once and the in-flight limit cannot bind, else alone (ring.py). */
    uint64_t acked = 0;
    Py_ssize_t got = 0;
    uint64_t inflight = LOAD(self->e_inflight);
    if (inflight != self->taken && inflight != self->none)
        goto slow;          /* a slot lent to a put_view (ring.py gives it back) */
    if (inflight == self->taken) {
        uint64_t n = LOAD(self->e_n);
        if (!self->use_loans && n >= 1 && n <= self->batch_max && sem_trywait(self->fill) == 0) {
            acked = n;
            got = 1;
        } else if (!ack_section(self)) {
            goto slow;
        }
    }
    Py_ssize_t limit = max_items;
    if (!got) {
        if (self->use_loans) {
            if (try_spin(self->loans) != 0)
                goto slow;
            limit = 1;
            while (limit < max_items && sem_trywait(self->loans) == 0)
                limit++;
        }
        if (spin_fill(self, spin_ns) != 0) {
            if (self->use_loans)
                for (Py_ssize_t i = 0; i < limit; i++)
                    sem_post(self->loans);
            goto slow;
        }
        got = 1;
    }
    while (got < limit && sem_trywait(self->fill) == 0)
        got++;
    if (self->use_loans)
        for (Py_ssize_t i = got; i < limit; i++)
            sem_post(self->loans);
    CRASH("get.fill");
    if (try_spin(self->take_lock) != 0) {
        for (Py_ssize_t i = 0; i < got; i++) {
            sem_post(self->fill);
            if (self->use_loans)
                sem_post(self->loans);
        }
        UNCOUNT("get.fill");
        goto slow;
    }
    CRASH("get.lock");
    if (acked)
        ack_push(self, acked);
    uint64_t tail = LOAD(self->h_tail);
    STORE(self->e_index, tail);
    STORE(self->e_n, got);
    STORE(self->e_inflight, self->prepared);
    CRASH("get.prepared");
    uint64_t at = tail % self->nslots;
    for (Py_ssize_t i = 0; i < got; i++) {
        STORE(self->record + i, LOAD(self->ring + (Py_ssize_t)at));
        at = next_pos(self, at);
    }
    CRASH("get.copied");
    /* commit: the slot numbers are in our record first */
    __atomic_store_n(&self->w[self->h_tail], tail + got, __ATOMIC_RELEASE);
    CRASH("get.commit");
    STORE(self->e_inflight, self->taken);
    CRASH("get.taken");
    Py_ssize_t room = got;
    uint64_t debt = LOAD(self->h_debt);
    if (debt) {           /* re-queued items beyond the capacity have no empty token */
        uint64_t paid = debt < (uint64_t)got ? debt : (uint64_t)got;
        STORE(self->h_debt, debt - paid);
        room -= (Py_ssize_t)paid;
    }
    sem_post(self->take_lock);
    CRASH("get.unlock");
    for (Py_ssize_t i = 0; i < room; i++)
        sem_post(self->empty);
    STORE(self->e_gets, LOAD(self->e_gets) + got);
    STORE(self->e_phase, self->idle);
    CRASH("get.done");
    return got;
slow:
    STORE(self->e_phase, self->idle);
    return 0;
}

/* Item i of the in-flight record, copied out of its slot while the take's caller still
 * holds the GIL: bytes or str; or, for any other type and for anything that is not a clean
 * bytes or str item (a length beyond the item size, bytes that are not UTF-8), a raw tuple
 * (tag, payload, length, producer, seq, host) for Python to decode or reject (Client._item) without
 * reading the record again, which another thread may have released by then. The payload is
 * never read past the slot, whatever the length word says. *raw is set to 1 for a tuple. */
static PyObject *record_item(Ring *self, Py_ssize_t i, int *raw) {
    uint64_t slot_no = LOAD(self->record + i);
    if (slot_no >= self->nslots) {
        /* A ring word no put writes: Python names it (Client._item on this raw tuple). */
        *raw = 1;
        return Py_BuildValue("(Ky#KKKK)", (unsigned long long)self->bad_slot, "",
                             (Py_ssize_t)0, (unsigned long long)slot_no, 0ull, 0ull, 0ull);
    }
    char *slot = self->base + self->pool + (Py_ssize_t)slot_no * self->slot_size;
    uint64_t *hdr = (uint64_t *)slot;
    uint64_t length = hdr[0] & ((1ull << self->tag_shift) - 1);
    uint64_t tag = (hdr[0] >> self->tag_shift) & 0xFFFF;
    if (length <= (uint64_t)self->item_size) {
        if (tag == self->tag_bytes)
            return PyBytes_FromStringAndSize(slot + self->header, (Py_ssize_t)length);
        if (tag == self->tag_str) {
            PyObject *text = PyUnicode_DecodeUTF8(slot + self->header, (Py_ssize_t)length,
                                                  "surrogatepass");
            if (text != NULL || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                return text;
            PyErr_Clear();
        }
    }
    Py_ssize_t readable = (Py_ssize_t)(length < (uint64_t)(self->slot_size - self->header)
                                       ? length : (uint64_t)(self->slot_size - self->header));
    *raw = 1;
    /* a bytearray: the one copy of the get side, which decoding keeps (items.py) */
    PyObject *payload = PyByteArray_FromStringAndSize(slot + self->header, readable);
    if (payload == NULL)
        return NULL;
    return Py_BuildValue("(KNKKKK)", (unsigned long long)tag, payload,
                         (unsigned long long)length,
                         (unsigned long long)hdr[self->producer_word],
                         (unsigned long long)hdr[self->seq_word],
                         (unsigned long long)(hdr[0] >> self->host_shift));
}

/* A Ring that is closed (its handle was closed by another thread between the caller's look at
 * it and this call) or called from a thread other than its owner does nothing and answers
 * "take the slow path": the handle then finds the calling thread's own client, or raises
 * HandleClosed. So a handle may offer its first client's Ring to every thread unchecked. */
#define NOT_USABLE(self) ((self)->w == NULL || PyThread_get_thread_ident() != (self)->owner)

/* ack() -> True when the last take is acknowledged (or there was none), None when the
 * Python path must do it (a recovery, a busy lock, a state other than running or draining) */
static PyObject *ring_ack(Ring *self, PyObject *unused) {
    if (NOT_USABLE(self))
        Py_RETURN_NONE;
    uint64_t inflight = LOAD(self->e_inflight);
    if (inflight == self->none)
        Py_RETURN_TRUE;
    if (inflight != self->taken)
        Py_RETURN_NONE;     /* a slot lent to a put_view: ring.py gives it back */
    STORE(self->e_phase, self->getting);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t state = LOAD(self->h_state);
    int done = !(LOAD(self->h_epoch) & 1) && state >= self->running && state <= self->stopped
               && ack_section(self);
    STORE(self->e_phase, self->idle);
    if (!done)
        Py_RETURN_NONE;
    Py_RETURN_TRUE;
}

/* put(item, seq: int) -> True if put, None (the slow path must do it; nothing changed) */
static PyObject *ring_put(Ring *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "put(item, seq)");
        return NULL;
    }
    if (NOT_USABLE(self))
        Py_RETURN_NONE;
    uint64_t seq = PyLong_AsUnsignedLongLong(args[1]);
    if (seq == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n;
    uint64_t tag;
    if (payload_of(self, args[0], &n, &tag) == NULL || !put_section(self, args, 1, seq))
        Py_RETURN_NONE;
    Py_RETURN_TRUE;
}

/* put_many(items: list, start: int, seq: int) -> how many of items[start:] were put in one
 * lock section, or None (none; the Python path must do the rest). Refuses (None) up front if
 * any item of items[start:] is not bytes/str or does not fit, so that the Python path can
 * raise before anything of the batch is put. */
static PyObject *ring_put_many(Ring *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "put_many(items: list, start, seq)");
        return NULL;
    }
    if (NOT_USABLE(self))
        Py_RETURN_NONE;
    PyObject *items = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    uint64_t seq = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t total = PyList_GET_SIZE(items);
    if (start < 0 || start >= total)
        Py_RETURN_NONE;
    PyObject **first = &PyList_GET_ITEM(items, start);
    Py_ssize_t n;
    uint64_t tag;
    for (Py_ssize_t i = 0; i < total - start; i++)
        if (payload_of(self, first[i], &n, &tag) == NULL)
            Py_RETURN_NONE;
    Py_ssize_t done = put_section(self, first, total - start, seq);
    if (!done)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(done);
}

/* get() -> the bytes or str taken, a raw tuple for anything else (taken; Python decodes it,
 * see record_item), or None (the slow path must do it; only the previous acknowledgement
 * happened) */
static PyObject *ring_get(Ring *self, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t spin_ns = 0;        /* get(spin_ns): wait for an item by polling that long */
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "get([spin_ns])");
        return NULL;
    }
    if (nargs == 1) {
        spin_ns = PyLong_AsUnsignedLongLong(args[0]);
        if (spin_ns == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    }
    if (NOT_USABLE(self) || !take_section(self, 1, spin_ns))
        Py_RETURN_NONE;
    int raw = 0;
    return record_item(self, 0, &raw);
}

/* get_many(max_items) -> the 1..max_items items taken in one lock section: a list when all are
 * bytes or str, a tuple when some are raw tuples for Python to decode (see record_item); or
 * None (slow path). max_items must not exceed the in-flight record's size. */
static PyObject *ring_get_many(Ring *self, PyObject *arg) {
    Py_ssize_t max_items = PyLong_AsSsize_t(arg);
    if (max_items < 1) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "max_items >= 1");
        return NULL;
    }
    if (NOT_USABLE(self))
        Py_RETURN_NONE;
    Py_ssize_t got = take_section(self, max_items, 0);
    if (!got)
        Py_RETURN_NONE;
    PyObject *list = PyList_New(got);
    if (list == NULL)
        return NULL;
    int raw = 0;
    for (Py_ssize_t i = 0; i < got; i++) {
        PyObject *item = record_item(self, i, &raw);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    if (!raw)
        return list;
    PyObject *pairs = PyList_AsTuple(list);
    Py_DECREF(list);
    return pairs;
}

/* wait_ready(for_put, seconds, notify_fd) -> True, False or None: wait, without the GIL, until a token
 * of empty (for_put) or fill is there, by the protocol of an operation: phase, fence, an even
 * epoch and a running state first; the token is given straight back, the phase set back to
 * IDLE, and then 8 bytes are written to notify_fd (an event loop's wake-up). True: done;
 * False: no token within the time (at most one wait slice: the caller looks at its stop flag
 * between calls); None: nothing was waited for (a recovery, a state other than running, a
 * closed Ring or another thread's): Python's wait_ready must look. For aio.py's watchers. */
static PyObject *ring_wait_ready(Ring *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "wait_ready(for_put, seconds, notify_fd)");
        return NULL;
    }
    int for_put = PyObject_IsTrue(args[0]);
    double seconds = PyFloat_AsDouble(args[1]);
    int fd = PyLong_AsLong(args[2]);
    if (for_put < 0 || PyErr_Occurred())
        return NULL;
    if (NOT_USABLE(self))
        Py_RETURN_NONE;
    sem_t *sem = for_put ? self->empty : self->fill;
    STORE(self->e_phase, for_put ? self->putting : self->getting);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint64_t state = LOAD(self->h_state);
    if ((LOAD(self->h_epoch) & 1) ||
        (for_put ? state != self->running : (state >= self->stopped || state < self->running))) {
        STORE(self->e_phase, self->idle);
        Py_RETURN_NONE;
    }
    STORE(self->e_phase, for_put ? self->blocked_full : self->blocked_empty);
    int got = 0;
    Py_BEGIN_ALLOW_THREADS
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    long long ns = until.tv_nsec + (long long)(seconds > 0 ? seconds * 1e9 : 0);
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    for (;;) {
        if (sem_clockwait(sem, CLOCK_MONOTONIC, &until) == 0) {
            got = 1;
            break;
        }
        if (errno != EINTR)
            break;
    }
    if (got) {
        sem_post(sem);
        STORE(self->e_phase, self->idle);
        uint64_t one = 1;
        ssize_t written = write(fd, &one, sizeof one);   /* EAGAIN: a wake-up is pending */
        (void)written;
    } else {
        STORE(self->e_phase, self->idle);
    }
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(got);
}

static PyObject *ring_close(Ring *self, PyObject *unused) {
    ring_release(self);
    Py_RETURN_NONE;
}

static PyMethodDef ring_methods[] = {
    {"put", (PyCFunction)(void (*)(void))ring_put, METH_FASTCALL,
     "put(item, seq) -> True if put, None if the slow path must do it"},
    {"get", (PyCFunction)(void (*)(void))ring_get, METH_FASTCALL,
     "get([spin_ns]) -> the bytes or str taken, a raw tuple to decode, or None"},
    {"ack", (PyCFunction)ring_ack, METH_NOARGS,
     "ack() -> True when the last take is acknowledged, None if the slow path must"},
    {"put_many", (PyCFunction)(void (*)(void))ring_put_many, METH_FASTCALL,
     "put_many(items: list, start, seq) -> how many were put, or None (the slow path must)"},
    {"get_many", (PyCFunction)ring_get_many, METH_O,
     "get_many(max_items) -> list of items, a tuple of items and pairs to decode, or None"},
    {"wait_ready", (PyCFunction)(void (*)(void))ring_wait_ready, METH_FASTCALL,
     "wait_ready(for_put, seconds, notify_fd) -> True (fd written), False (time) or None"},
    {"close", (PyCFunction)ring_close, METH_NOARGS, "release the mapping and semaphores"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmfifo._fastpath.Ring",
    .tp_basicsize = sizeof(Ring),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ring_init,
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_methods = ring_methods,
    .tp_doc = "The non-blocking put/get of one item of a FIFO segment (see the module source).",
};

/* crash(step): the crash point of the Python path, counted here with the C path's, so that
 * SHMFIFO_CRASH_AT=step:n means the n-th time this process reaches the step on either path
 * (crashpoints.py). */
static PyObject *module_crash(PyObject *module, PyObject *arg) {
    const char *step = PyUnicode_AsUTF8(arg);
    if (step == NULL)
        return NULL;
    CRASH(step);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"crash", (PyCFunction)module_crash, METH_O,
     "crash(step): count a crash point reached on the Python path"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "shmfifo._fastpath",
    "Optional C accelerator of shmfifo's non-blocking put/get path.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    crash_init();
    if (PyType_Ready(&RingType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RingType);
    if (PyModule_AddObject(m, "Ring", (PyObject *)&RingType) < 0) {
        Py_DECREF(&RingType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
