/* The C end-to-end test app: same behaviour as dnngov-test-app, through dnngov.h.
 * Usage: test_app SOCKET WANTED_SUBNET INFERENCES */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "dnngov.h"

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: test_app SOCKET WANTED_SUBNET INFERENCES\n");
        return 2;
    }
    uint32_t wanted = (uint32_t)strtoul(argv[2], NULL, 10);
    int inferences = atoi(argv[3]);
    dnngov_subnet lib[] = {
        {10, "small", 70.0, 5.0, 0},
        {11, "medium", 72.0, 5.0, 0},
        {12, "large", 75.0, 5.0, 0},
    };
    dnngov_target target = {50.0, 0, 0, 1};
    dnngov_session *s = dnngov_register("c-test-app", DNNGOV_DEVICE_CPU | DNNGOV_DEVICE_GPU,
                                        lib, 3, &target, argv[1]);
    if (!s) {
        fprintf(stderr, "registration failed: %s\n", dnngov_last_error());
        return 1;
    }
    printf("registered %u %u\n", dnngov_app_id(s), dnngov_current_subnet(s));
    fflush(stdout);
    int waited = 0;
    while (dnngov_current_subnet(s) != wanted) {
        if (waited++ > 10000) {
            printf("timeout %u\n", dnngov_current_subnet(s));
            return 1;
        }
        sleep_ms(1);
    }
    dnngov_ack_subnet(s, wanted);
    printf("switched %u\n", wanted);
    for (int i = 0; i < inferences; i++) {
        dnngov_begin(s, 50000000ull);
        sleep_ms(1);
        dnngov_end(s);
    }
    printf("done %d 0\n", inferences);
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
    }
    dnngov_close(s);
    return 0;
}
