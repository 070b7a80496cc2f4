/*
 * The pod sandbox's first process (what Kubernetes' registry.k8s.io/pause is, built here because no
 * registry is reachable): it holds the pod's namespaces, reaps the zombies that a shared PID namespace
 * leaves it, and exits 0 on SIGINT or SIGTERM. Built static, it is the whole image (FROM scratch).
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
    struct sigaction stop = {.sa_handler = quit}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
        sigaction(SIGCHLD, &child, NULL) < 0)
        return 1;
    for (;;) pause();
}
