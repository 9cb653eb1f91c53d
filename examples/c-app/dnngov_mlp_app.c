/*
 * dnngov_mlp_app: a C app that dnngovd governs, doing real CPU work per inference.
 *
 * Each frame is 96 feature vectors of 256 values; an inference runs them through a
 * multilayer perceptron (ReLU hidden layers, a 16-class head) on one core. The library's
 * sub-networks differ in hidden width and depth and are slices of one set of weights
 * (the first `width` units of the first `depth` layers), so a switch costs nothing but a
 * pointer change, as in a weight-shared super-network. The weights and the frames are
 * deterministic pseudo-random numbers: this is a CPU workload, not a trained model, and
 * the accuracies it declares are synthetic (rising with size), for the governor to trade.
 *
 * At each frame it runs the sub-network the agent asks for (dnngov_current_subnet),
 * acknowledges a switch (dnngov_ack_subnet) and marks the inference (dnngov_begin /
 * dnngov_end); frames follow an absolute schedule at --fps; SIGINT or SIGTERM ends the run
 * after the current frame; the last line on stdout is a JSON report. See README.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dnngov.h"

#define ROWS 96          /* feature vectors per frame */
#define INPUT 256        /* values per feature vector */
#define CLASSES 16       /* outputs of the head */
#define MAX_WIDTH 1024   /* widest hidden layer */
#define MAX_DEPTH 4      /* most hidden layers */
#define BLOCK 64         /* output columns per pass: a block of Y stays in L1 */

/* Least to most accurate, as dnngov wants the library. Widths are multiples of BLOCK so
 * every inner loop has a constant trip count the compiler vectorises. */
static const struct {
    const char *name;
    int width;
    int depth;
    double accuracy_pct; /* synthetic, see the top of the file */
} LIBRARY[] = {
    {"w384-d2", 384, 2, 61.0},
    {"w512-d2", 512, 2, 66.5},
    {"w640-d3", 640, 3, 70.5},
    {"w768-d4", 768, 4, 73.5},
    {"w896-d4", 896, 4, 75.5},
    {"w1024-d4", 1024, 4, 77.0},
};
#define N_SUBNETS (sizeof LIBRARY / sizeof LIBRARY[0])

/* The shared weights: layer 0 is INPUT x MAX_WIDTH, hidden layers MAX_WIDTH x MAX_WIDTH,
 * the head MAX_WIDTH x CLASSES, all row-major (input index first). */
static float *weights[MAX_DEPTH];
static float *biases[MAX_DEPTH];
static float *head_weights;
static float head_bias[CLASSES];

static float activations[2][ROWS][MAX_WIDTH];
static float frame_input[ROWS][INPUT];

static volatile sig_atomic_t stop_requested;

static void on_signal(int signal_number) {
    (void)signal_number;
    stop_requested = 1;
}

static uint32_t next_random(uint32_t *state) {
    /* xorshift32: deterministic and the same on every machine. */
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* Uniform in [-scale, scale). */
static float uniform(uint32_t *state, float scale) {
    return scale * ((float)(next_random(state) >> 8) / 8388608.0f - 1.0f);
}

/* sqrt without libm, for the initialisation scale only. */
static float square_root(float v) {
    float x = v > 1.0f ? v : 1.0f;
    for (int i = 0; i < 30; i++) x = 0.5f * (x + v / x);
    return x;
}

static float *random_matrix(size_t rows, size_t cols, uint32_t *state) {
    float *m = malloc(rows * cols * sizeof *m);
    if (!m) {
        fprintf(stderr, "dnngov_mlp_app: out of memory for the weights\n");
        exit(1);
    }
    /* He initialisation keeps the activations' scale through the ReLU layers, so no
     * value drifts into the denormals, which would slow the arithmetic down. */
    float scale = square_root(6.0f / (float)rows);
    for (size_t i = 0; i < rows * cols; i++) m[i] = uniform(state, scale);
    return m;
}

static void make_weights(void) {
    uint32_t state = 2024;
    for (int layer = 0; layer < MAX_DEPTH; layer++) {
        weights[layer] = random_matrix(layer == 0 ? INPUT : MAX_WIDTH, MAX_WIDTH, &state);
        biases[layer] = random_matrix(1, MAX_WIDTH, &state);
        for (int j = 0; j < MAX_WIDTH; j++) biases[layer][j] *= 0.01f;
    }
    head_weights = random_matrix(MAX_WIDTH, CLASSES, &state);
    for (int j = 0; j < CLASSES; j++) head_bias[j] = 0.0f;
}

/* The input of frame `frame`: what a camera or a sensor would deliver. */
static void make_frame(uint64_t frame) {
    uint32_t state = (uint32_t)(frame * 2654435761u) | 1u;
    for (int r = 0; r < ROWS; r++)
        for (int i = 0; i < INPUT; i++) frame_input[r][i] = uniform(&state, 1.0f);
}

/* out[r][0..width) = relu(in[r][0..n_in) . w[0..n_in)[0..width) + b), w's rows MAX_WIDTH
 * apart. Columns go in blocks of BLOCK so each block of out stays in L1 while the weights
 * stream past once. */
static void dense_relu(const float *restrict in, int in_stride, int n_in,
                       const float *restrict w, const float *restrict b,
                       float *restrict out, int width) {
    for (int j0 = 0; j0 < width; j0 += BLOCK) {
        for (int r = 0; r < ROWS; r++)
            for (int j = 0; j < BLOCK; j++) out[r * MAX_WIDTH + j0 + j] = b[j0 + j];
        for (int i = 0; i < n_in; i++) {
            const float *restrict w_row = w + (size_t)i * MAX_WIDTH + j0;
            for (int r = 0; r < ROWS; r++) {
                float x = in[r * in_stride + i];
                float *restrict o = out + r * MAX_WIDTH + j0;
                for (int j = 0; j < BLOCK; j++) o[j] += x * w_row[j];
            }
        }
        for (int r = 0; r < ROWS; r++)
            for (int j = 0; j < BLOCK; j++) {
                float *o = &out[r * MAX_WIDTH + j0 + j];
                if (*o < 0.0f) *o = 0.0f;
            }
    }
}

/* One inference of sub-network `s` on the current frame; returns a checksum of the
 * classes it chose, so the work cannot be optimised away. */
static uint32_t infer(size_t s) {
    int width = LIBRARY[s].width;
    const float *in = &frame_input[0][0];
    int in_stride = INPUT, n_in = INPUT;
    for (int layer = 0; layer < LIBRARY[s].depth; layer++) {
        float *out = &activations[layer & 1][0][0];
        dense_relu(in, in_stride, n_in, weights[layer], biases[layer], out, width);
        in = out;
        in_stride = MAX_WIDTH;
        n_in = width;
    }
    uint32_t checksum = 0;
    for (int r = 0; r < ROWS; r++) {
        float scores[CLASSES];
        for (int c = 0; c < CLASSES; c++) scores[c] = head_bias[c];
        for (int i = 0; i < n_in; i++) {
            float x = in[r * in_stride + i];
            for (int c = 0; c < CLASSES; c++) scores[c] += x * head_weights[i * CLASSES + c];
        }
        int best = 0;
        for (int c = 1; c < CLASSES; c++)
            if (scores[c] > scores[best]) best = c;
        checksum = checksum * 31u + (uint32_t)best;
    }
    return checksum;
}

/* Multiply-accumulates of one inference, for the relative cost the library declares. */
static double macs(size_t s) {
    double w = LIBRARY[s].width;
    return ROWS * (INPUT * w + (LIBRARY[s].depth - 1) * w * w + w * CLASSES);
}

struct options {
    const char *name;
    double fps;
    double deadline_ms; /* 0: one period */
    double accuracy_floor_pct;
    uint64_t frames;    /* 0: until SIGINT or SIGTERM */
    const char *socket;
    int cycle;
};

static void usage(FILE *to) {
    fprintf(to,
            "usage: dnngov_mlp_app [--name NAME] [--fps F] [--deadline-ms MS] [--accuracy-floor PCT]\n"
            "                      [--frames N] [--socket PATH] [--cycle]\n"
            "  --name NAME           the app's name, as dnngovctl apps shows it (default mlp)\n"
            "  --fps F               frames per second (default 30)\n"
            "  --deadline-ms MS      deadline per inference (default: one period)\n"
            "  --accuracy-floor PCT  lowest acceptable declared accuracy (default: none)\n"
            "  --frames N            stop after N frames (default: at SIGINT or SIGTERM)\n"
            "  --socket PATH         the agent's socket (default $DNNGOV_SOCKET, else\n"
            "                        /run/dnngov/agent.sock)\n"
            "  --cycle               run the sub-networks in turn, one per frame, instead of\n"
            "                        the agent's choice (to measure the library)\n");
}

static void bad_option(const char *option, const char *value, const char *want) {
    fprintf(stderr, "dnngov_mlp_app: %s: expected %s, got \"%s\"\n", option, want, value);
    usage(stderr);
    exit(2);
}

static double positive_number(const char *option, const char *value, int zero_allowed) {
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || *end || !(v == v) || v < 0 || (!zero_allowed && v == 0) || v > 1e9)
        bad_option(option, value, zero_allowed ? "a number >= 0" : "a number > 0");
    return v;
}

static struct options parse_options(int argc, char **argv) {
    struct options o = {"mlp", 30.0, 0.0, 0.0, 0, NULL, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--cycle")) {
            o.cycle = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "dnngov_mlp_app: %s: %s\n", a,
                    strncmp(a, "--", 2) ? "unknown argument" : "missing value (or unknown option)");
            usage(stderr);
            exit(2);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--name")) {
            o.name = v;
        } else if (!strcmp(a, "--fps")) {
            o.fps = positive_number(a, v, 0);
        } else if (!strcmp(a, "--deadline-ms")) {
            o.deadline_ms = positive_number(a, v, 0);
        } else if (!strcmp(a, "--accuracy-floor")) {
            o.accuracy_floor_pct = positive_number(a, v, 1);
            if (o.accuracy_floor_pct > 100) bad_option(a, v, "a percentage from 0 to 100");
        } else if (!strcmp(a, "--frames")) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            if (errno || end == v || *end || n == 0 || v[0] == '-') bad_option(a, v, "a whole number > 0");
            o.frames = n;
        } else if (!strcmp(a, "--socket")) {
            o.socket = v;
        } else {
            fprintf(stderr, "dnngov_mlp_app: unknown option %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    return o;
}

static uint64_t timespec_ns(struct timespec t) {
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static struct timespec ns_timespec(uint64_t ns) {
    struct timespec t = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    return t;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return timespec_ns(t);
}

/* `text` as a JSON string: the app's name is the user's. */
static void print_json_string(const char *text) {
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c == '"' || *c == '\\')
            printf("\\%c", *c);
        else if (*c < 0x20)
            printf("\\u%04x", *c);
        else
            putchar(*c);
    }
    putchar('"');
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    struct options o = parse_options(argc, argv);
    uint64_t period_ns = (uint64_t)(1e9 / o.fps);
    double deadline_ms = o.deadline_ms > 0 ? o.deadline_ms : 1000.0 / o.fps;
    uint64_t deadline_ns = (uint64_t)(deadline_ms * 1e6);

    make_weights();
    dnngov_subnet library[N_SUBNETS];
    for (size_t s = 0; s < N_SUBNETS; s++) {
        /* Latency left unknown (0): it depends on the machine, and the agent learns it. */
        library[s] = (dnngov_subnet){(uint32_t)s, LIBRARY[s].name, LIBRARY[s].accuracy_pct, 0.0,
                                     macs(s) / macs(N_SUBNETS - 1)};
    }
    dnngov_target target = {deadline_ms, 1000.0 / o.fps, o.accuracy_floor_pct, 0};
    dnngov_session *session =
        dnngov_register(o.name, DNNGOV_DEVICE_CPU, library, N_SUBNETS, &target, o.socket);
    if (!session) {
        fprintf(stderr, "dnngov_mlp_app: dnngov: %s\n", dnngov_last_error());
        return 1;
    }

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal; /* no SA_RESTART: a signal cuts the wait short */
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);

    size_t capacity = 1024, frames = 0;
    uint64_t *latencies = malloc(capacity * sizeof *latencies);
    uint64_t per_subnet_frames[N_SUBNETS] = {0};
    double per_subnet_latency_ms[N_SUBNETS] = {0};
    uint64_t misses = 0, switches = 0;
    double accuracy_sum = 0.0, latency_sum_ms = 0.0;
    uint32_t checksum = 0;
    size_t running = N_SUBNETS; /* none yet */
    uint64_t due = now_ns();

    while (!stop_requested && (o.frames == 0 || frames < o.frames)) {
        uint64_t now = now_ns();
        if (now > due + period_ns) {
            /* More than a period late: start at once and take the schedule from here,
             * rather than running the missed frames back to back. */
            due = now;
        }
        while (!stop_requested && now_ns() < due) {
            struct timespec at = ns_timespec(due);
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
        }
        if (stop_requested) break;

        /* The sub-network at the inference boundary: the agent's, or the next in turn. */
        size_t wanted = o.cycle ? frames % N_SUBNETS : dnngov_current_subnet(session);
        if (wanted >= N_SUBNETS) /* not an id of the library: keep what runs */
            wanted = running < N_SUBNETS ? running : N_SUBNETS - 1;
        if (wanted != running) {
            if (running != N_SUBNETS) switches++;
            running = wanted;
            dnngov_ack_subnet(session, (uint32_t)running);
        }

        make_frame(frames);
        dnngov_begin(session, deadline_ns);
        checksum ^= infer(running);
        uint64_t latency = dnngov_end(session);

        if (frames == capacity) {
            capacity *= 2;
            uint64_t *grown = realloc(latencies, capacity * sizeof *latencies);
            if (!grown) {
                fprintf(stderr, "dnngov_mlp_app: out of memory for the latencies\n");
                break;
            }
            latencies = grown;
        }
        latencies[frames++] = latency;
        latency_sum_ms += latency / 1e6;
        misses += latency > deadline_ns;
        per_subnet_frames[running]++;
        per_subnet_latency_ms[running] += latency / 1e6;
        accuracy_sum += LIBRARY[running].accuracy_pct;
        due += period_ns;
    }
    int connected = dnngov_is_connected(session);
    dnngov_close(session);

    double p99_ms = 0.0;
    if (frames > 0) {
        qsort(latencies, frames, sizeof *latencies, by_value);
        p99_ms = latencies[(size_t)((double)(frames - 1) * 0.99 + 0.5)] / 1e6;
    }
    double n = frames > 0 ? (double)frames : 1.0;
    printf("{\"app\":");
    print_json_string(o.name);
    printf(",\"frames\":%zu,\"latency_mean_ms\":%.4f,\"latency_p99_ms\":%.4f,"
           "\"deadline_ms\":%.4f,\"deadline_misses\":%" PRIu64 ",\"switches\":%" PRIu64
           ",\"declared_accuracy_mean_pct\":%.4f,\"frames_per_subnet\":[",
           frames, latency_sum_ms / n, p99_ms, deadline_ms, misses, switches, accuracy_sum / n);
    for (size_t s = 0; s < N_SUBNETS; s++)
        printf("%s[\"%s\",%" PRIu64 "]", s ? "," : "", LIBRARY[s].name, per_subnet_frames[s]);
    printf("],\"latency_mean_ms_per_subnet\":[");
    for (size_t s = 0; s < N_SUBNETS; s++) {
        double mean = per_subnet_frames[s] ? per_subnet_latency_ms[s] / per_subnet_frames[s] : 0.0;
        printf("%s[\"%s\",%.4f]", s ? "," : "", LIBRARY[s].name, mean);
    }
    printf("],\"connected\":%s,\"checksum\":%" PRIu32 "}\n", connected ? "true" : "false", checksum);
    free(latencies);
    return 0;
}
