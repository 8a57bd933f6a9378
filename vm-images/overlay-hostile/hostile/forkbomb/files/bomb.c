/* hostile/forkbomb: starts up to CAP processes, each in its own session (out of the
 * caller's process group) and living LIFE seconds, then reports how many it got and why it
 * stopped. Bounded on purpose: a broken limit must not take a shared host down for long. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	long cap = argc > 1 ? atol(argv[1]) : 5000;
	unsigned life = argc > 2 ? (unsigned)atoi(argv[2]) : 150;
	long started = 0;
	int why = 0;
	for (; started < cap; started++) {
		pid_t pid = fork();
		if (pid < 0) {
			why = errno;
			break;
		}
		if (pid == 0) {
			setsid();
			/* Keep nothing of the caller's open: Portage and the agent wait on pipes. */
			for (int fd = 0; fd < 1024; fd++)
				close(fd);
			sleep(life);
			_exit(0);
		}
	}
	printf("GAH-HOSTILE forkbomb.started info %ld of %ld (%s), each lives %u s\n", started, cap,
	       why ? strerror(why) : "cap reached", life);
	printf("GAH-HOSTILE forkbomb.limited %s started %ld of %ld\n", started < cap ? "denied" : "allowed", started, cap);
	return 0;
}
