/*
 * peakrss CMD [ARG...]: run CMD (its stdout on /dev/null) and print its peak
 * resident set size in KiB (wait4(2) ru_maxrss), then exit with its status.
 *
 * Why C: Linux counts a process's peak RSS from before its execve(2), so a
 * command forked by Python starts with Python's own RSS as its peak.  Forked
 * from this small program, it starts from a few hundred KiB instead.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	struct rusage ru;
	pid_t pid;
	int status, null;

	if (argc < 2) {
		fprintf(stderr, "usage: peakrss command [arg ...]\n");
		return 2;
	}
	pid = fork();
	if (pid < 0) {
		perror("peakrss: fork");
		return 2;
	}
	if (pid == 0) {
		null = open("/dev/null", O_WRONLY);
		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		execvp(argv[1], argv + 1);
		perror("peakrss: exec");
		_exit(127);
	}
	if (wait4(pid, &status, 0, &ru) < 0) {
		perror("peakrss: wait4");
		return 2;
	}
	printf("%ld\n", (long)ru.ru_maxrss);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
