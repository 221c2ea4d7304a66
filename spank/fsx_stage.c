/*
 * fsx_stage.c - SPANK plugin adding `--fsx-stage=SPEC` to sbatch, salloc and srun.
 *
 * Every occurrence of the option (#SBATCH lines and the command line) is
 * checked cheaply at submit time and accumulated in order. Once all options are
 * processed (slurm_spank_init_post_opt, allocator or local context) the values
 * are exported to the job control environment as FSX_STAGE, which Slurm hands
 * to the Prolog and Epilog as SPANK_FSX_STAGE.
 *
 * Encoding contract (decoded by the Python package; do not change it): each
 * value is percent-encoded byte by byte: every byte that is not ASCII
 * alphanumeric and not one of `-._~/:,=@+` becomes `%XX` (uppercase hex); the
 * encoded values are joined with `;`. No value can split or forge another, and
 * any byte survives.
 *
 * Each value's shape (KIND,SRC,DST) is checked here as it is read. When the
 * plugstack.conf line names the checker (`fsx_stage=/opt/fsx-stage/bin/fsx-stage`,
 * optionally `config=/etc/fsx-stage/config.toml`), sbatch, salloc and srun then
 * run `fsx-stage check --directive VALUE...` with every value, as the submitting
 * user (execv, no shell, no PATH lookup, a minimal environment, 10 s at most):
 * exit 2 refuses the job with the checker's messages (the grammar and the site
 * policy, as the Prolog would apply them); a checker that cannot run, crashes or
 * times out only warns: the Prolog still validates.
 *
 * Works with the SPANK API of Slurm 22.05 and later.
 */

#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(fsx_stage, 1);

#define OPTION_NAME "fsx-stage"
#define ENV_NAME "FSX_STAGE"

#define CHECK_TIMEOUT_MS 10000
#define CHECK_OUTPUT_MAX 16384 /* bytes of the checker's messages kept */
#define CHECK_EXIT_REFUSED 2   /* `fsx-stage check`: the directives have problems */

/* The encoded, ';'-joined values seen so far in this process. */
static char *encoded = NULL;
static size_t encoded_len = 0;
static size_t encoded_cap = 0;

/* The same values as given, for the checker. */
static char **values = NULL;
static size_t values_len = 0;

static int fsx_stage_opt_cb(int val, const char *optarg, int remote);
static int remember(const char *value);

static struct spank_option fsx_stage_option = {
	OPTION_NAME,
	"KIND,SRC,DST[,OPT=VAL]...",
	"Stage data between S3 and scratch (repeatable)",
	1,
	0,
	fsx_stage_opt_cb,
};

static int is_unreserved(unsigned char c)
{
	if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("-._~/:,=@+", c) != NULL;
}

/* Make room for `extra` more bytes plus the terminating NUL. */
static int reserve(size_t extra)
{
	size_t need = encoded_len + extra + 1;
	size_t cap;
	char *grown;

	if (need <= encoded_cap)
		return 0;
	cap = encoded_cap ? encoded_cap : 256;
	while (cap < need)
		cap *= 2;
	grown = realloc(encoded, cap);
	if (!grown)
		return -1;
	encoded = grown;
	encoded_cap = cap;
	return 0;
}

/* Append one value, percent-encoded, after a ';' when not the first. */
static int append_encoded(const char *value)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	/* Worst case: every byte becomes %XX, plus the separator. */
	if (reserve(3 * strlen(value) + 1) < 0)
		return -1;
	if (encoded_len > 0)
		encoded[encoded_len++] = ';';
	for (p = (const unsigned char *)value; *p; p++) {
		if (is_unreserved(*p)) {
			encoded[encoded_len++] = (char)*p;
		} else {
			encoded[encoded_len++] = '%';
			encoded[encoded_len++] = hex[*p >> 4];
			encoded[encoded_len++] = hex[*p & 0x0F];
		}
	}
	encoded[encoded_len] = '\0';
	return 0;
}

/*
 * Length of the field starting at `s`: up to the first comma not preceded by
 * a backslash, or the end of the string.
 */
static size_t field_len(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++) {
		if (s[i] == ',' && (i == 0 || s[i - 1] != '\\'))
			break;
	}
	return i;
}

/* 1-based character position of byte `offset` (UTF-8: continuation bytes do not count). */
static size_t char_position(const char *s, size_t offset)
{
	size_t pos = 1;
	size_t i;

	for (i = 0; i < offset && s[i]; i++) {
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			pos++;
	}
	return pos;
}

/*
 * Check the shape of a SPEC: KIND in|out|checkpoint, then non-empty SRC and
 * DST. Positions are 1-based character positions in the value, as in the
 * Python parser's messages. Returns 0 when fine.
 */
static int check_spec(const char *spec)
{
	static const char *const kinds[] = { "in", "out", "checkpoint" };
	size_t len = field_len(spec);
	size_t src, dst;
	size_t i;
	int kind_ok = 0;

	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (len == strlen(kinds[i]) && strncmp(spec, kinds[i], len) == 0)
			kind_ok = 1;
	}
	if (!kind_ok) {
		slurm_error("--%s: '%s': expected KIND in|out|checkpoint at position 1",
			    OPTION_NAME, spec);
		return -1;
	}
	if (spec[len] != ',') {
		slurm_error("--%s: '%s': expected ',SRC' after KIND at position %zu",
			    OPTION_NAME, spec, char_position(spec, len));
		return -1;
	}
	src = len + 1;
	len = field_len(spec + src);
	if (len == 0) {
		slurm_error("--%s: '%s': expected a non-empty SRC at position %zu",
			    OPTION_NAME, spec, char_position(spec, src));
		return -1;
	}
	if (spec[src + len] != ',') {
		slurm_error("--%s: '%s': expected ',DST' after SRC at position %zu",
			    OPTION_NAME, spec, char_position(spec, src + len));
		return -1;
	}
	dst = src + len + 1;
	if (field_len(spec + dst) == 0) {
		slurm_error("--%s: '%s': expected a non-empty DST at position %zu",
			    OPTION_NAME, spec, char_position(spec, dst));
		return -1;
	}
	return 0;
}

/* Called once per occurrence of --fsx-stage, in command-line order. */
static int fsx_stage_opt_cb(int val, const char *optarg, int remote)
{
	(void)val;
	if (!optarg) {
		slurm_error("--%s: expected a value KIND,SRC,DST[,OPT=VAL]...", OPTION_NAME);
		return -1;
	}
	/* Remote contexts re-read the options already checked at submit time. */
	if (!remote && check_spec(optarg) != 0)
		return -1;
	if (append_encoded(optarg) < 0 || (!remote && remember(optarg) < 0)) {
		slurm_error("--%s: out of memory", OPTION_NAME);
		return -1;
	}
	return 0;
}

/* Keep a copy of `value` for the checker. */
static int remember(const char *value)
{
	char **grown = realloc(values, (values_len + 1) * sizeof(*values));

	if (!grown)
		return -1;
	values = grown;
	values[values_len] = strdup(value);
	if (!values[values_len])
		return -1;
	values_len++;
	return 0;
}

/* The plugstack.conf arguments: `fsx_stage=PATH` (the checker), `config=PATH`. */
struct checker_args {
	const char *program;
	const char *config;
};

static void parse_args(int ac, char **av, struct checker_args *args)
{
	int i;

	args->program = NULL;
	args->config = NULL;
	for (i = 0; i < ac; i++) {
		if (strncmp(av[i], "fsx_stage=", 10) == 0 && av[i][10] == '/')
			args->program = av[i] + 10;
		else if (strncmp(av[i], "config=", 7) == 0 && av[i][7] == '/')
			args->config = av[i] + 7;
		else
			slurm_spank_log("warning: fsx_stage plugin: ignoring argument '%s': "
					"expected fsx_stage=/ABSOLUTE/PATH or config=/ABSOLUTE/PATH",
					av[i]);
	}
}

/* A new string `prefix` followed by `value`, or NULL. */
static char *join(const char *prefix, const char *value)
{
	size_t a = strlen(prefix), b = strlen(value);
	char *out = malloc(a + b + 1);

	if (out) {
		memcpy(out, prefix, a);
		memcpy(out + a, value, b + 1);
	}
	return out;
}

static long elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000L + (now.tv_nsec - start->tv_nsec) / 1000000L;
}

/*
 * In the child: stdin and stdout to /dev/null, stderr to `err_fd`, then exec.
 * Only async-signal-safe calls here (srun may have threads).
 */
static void exec_checker(char *const argv[], char *const envp[], int err_fd)
{
	sigset_t none;
	int null_fd = open("/dev/null", O_RDWR);
	long fd, max_fd = sysconf(_SC_OPEN_MAX);

	if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		_exit(127);
	if (max_fd < 0 || max_fd > 65536)
		max_fd = 65536;
	for (fd = 3; fd < max_fd; fd++)
		close((int)fd);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(argv[0], argv, envp);
	if (write(2, "exec failed\n", 12) < 0)
		_exit(127);
	_exit(127);
}

/*
 * Read the child's stderr into `out` (NUL-terminated, truncated to `cap`) until
 * it closes or the deadline passes. Returns 0, or -1 on timeout.
 */
static int read_output(int fd, char *out, size_t cap, const struct timespec *start)
{
	size_t len = 0;
	char chunk[4096];

	out[0] = '\0';
	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		long left = CHECK_TIMEOUT_MS - elapsed_ms(start);
		ssize_t n;
		int ready;

		if (left <= 0)
			return -1;
		ready = poll(&pfd, 1, (int)left);
		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0)
			return ready == 0 ? -1 : 0;
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0;
		if (len + 1 < cap) {
			size_t take = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;

			memcpy(out + len, chunk, take);
			len += take;
			out[len] = '\0';
		}
	}
}

/* Log each line of `text` as an error (`error` 1) or as it is (warnings). */
static void log_lines(char *text, int error)
{
	char *line = text;

	while (line && *line) {
		char *end = strchr(line, '\n');

		if (end)
			*end = '\0';
		if (*line) {
			if (error)
				slurm_error("%s", line);
			else
				slurm_spank_log("%s", line);
		}
		line = end ? end + 1 : NULL;
	}
}

/*
 * Run `PROGRAM check --directive V1 --directive V2 ...` and wait for it.
 * Returns -1 when it refused the values (exit 2), 0 otherwise (a checker
 * that could not say only warns).
 */
static int run_checker(const struct checker_args *args)
{
	const char *job_name = getenv("SLURM_JOB_NAME");
	size_t argc = 0, i;
	char **argv = calloc(values_len + 4, sizeof(*argv));
	char *config_env = NULL;
	char *envp[4];
	char *output = malloc(CHECK_OUTPUT_MAX);
	struct sigaction dfl, old;
	struct timespec start;
	int pipe_fds[2], status = 0, timed_out, rc = 0;
	pid_t pid;

	if (!argv || !output)
		goto oom;
	if (access(args->program, X_OK) < 0) {
		slurm_spank_log("warning: --%s: cannot run %s: %s: the job is accepted, its "
				"directives are checked when it starts",
				OPTION_NAME, args->program, strerror(errno));
		goto out;
	}
	argv[argc++] = (char *)args->program;
	argv[argc++] = "check";
	/* OPTION=VALUE words: a value starting with '-' stays a value. */
	for (i = 0; i < values_len; i++) {
		argv[argc] = join("--directive=", values[i]);
		if (!argv[argc++])
			goto oom;
	}
	if (job_name && *job_name) { /* sbatch sets it before the plugins run (%x) */
		argv[argc] = join("--job-name=", job_name);
		if (!argv[argc++])
			goto oom;
	}
	i = 0;
	envp[i++] = "PATH=/usr/bin:/bin";
	envp[i++] = "LC_ALL=C.UTF-8";
	if (args->config) {
		config_env = join("FSX_STAGE_CONFIG=", args->config);
		if (!config_env)
			goto oom;
		envp[i++] = config_env;
	}
	envp[i] = NULL;

	/* waitpid needs SIGCHLD not ignored; the client's handler is put back after. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(SIGCHLD, &dfl, &old);
	if (pipe(pipe_fds) < 0) {
		slurm_spank_log("warning: --%s: cannot check at submission: pipe: %s", OPTION_NAME,
				strerror(errno));
		goto restore;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	pid = fork();
	if (pid == 0) {
		close(pipe_fds[0]);
		exec_checker(argv, envp, pipe_fds[1]);
	}
	close(pipe_fds[1]);
	if (pid < 0) {
		close(pipe_fds[0]);
		slurm_spank_log("warning: --%s: cannot check at submission: fork: %s", OPTION_NAME,
				strerror(errno));
		goto restore;
	}
	timed_out = read_output(pipe_fds[0], output, CHECK_OUTPUT_MAX, &start) < 0;
	close(pipe_fds[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (timed_out) {
		slurm_spank_log("warning: --%s: %s check did not answer within %d s: the job is "
				"accepted, its directives are checked when it starts",
				OPTION_NAME, args->program, CHECK_TIMEOUT_MS / 1000);
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == CHECK_EXIT_REFUSED &&
		   strstr(output, "--" OPTION_NAME "=")) {
		/* Refused only when the checker named a directive (not a usage error). */
		log_lines(output, 1);
		slurm_error("--%s: job refused: fix the directives above (`fsx-stage check "
			    "SCRIPT` checks a batch script before you submit it)", OPTION_NAME);
		rc = -1;
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		log_lines(output, 0); /* warnings, e.g. a filter that selects everything */
	} else {
		log_lines(output, 0);
		if (WIFEXITED(status))
			slurm_spank_log("warning: --%s: %s check failed (exit %d): the job is "
					"accepted, its directives are checked when it starts",
					OPTION_NAME, args->program, WEXITSTATUS(status));
		else
			slurm_spank_log("warning: --%s: %s check was killed by signal %d: the job "
					"is accepted, its directives are checked when it starts",
					OPTION_NAME, args->program,
					WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	}
restore:
	sigaction(SIGCHLD, &old, NULL);
	goto out;
oom:
	slurm_spank_log("warning: --%s: out of memory: not checked at submission", OPTION_NAME);
out:
	free(config_env);
	free(output);
	if (argv) {
		for (i = 2; i < argc; i++)
			free(argv[i]);
		free(argv);
	}
	return rc;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	spank_err_t rc;

	(void)ac;
	(void)av;
	rc = spank_option_register(sp, &fsx_stage_option);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("fsx_stage: cannot register --%s: %s", OPTION_NAME,
			    spank_strerror(rc));
		return -1;
	}
	return 0;
}

/* All options are processed: hand the values to the Prolog and Epilog. */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	spank_context_t ctx = spank_context();
	struct checker_args args;
	spank_err_t rc;

	if (ctx != S_CTX_ALLOCATOR && ctx != S_CTX_LOCAL)
		return 0;
	if (encoded_len == 0)
		return 0;
	/* srun inside an allocation launches a step: the Prolog ran already. */
	if (ctx == S_CTX_LOCAL && (getenv("SLURM_JOB_ID") || getenv("SLURM_JOBID"))) {
		slurm_spank_log("warning: --%s is ignored for a step of an existing job: "
				"give it to sbatch or salloc (or to srun outside a job)",
				OPTION_NAME);
		return 0;
	}
	parse_args(ac, av, &args);
	if (args.program && run_checker(&args) < 0)
		return -1;
	rc = spank_job_control_setenv(sp, ENV_NAME, encoded, 1);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("--%s: cannot pass the values to the job: %s", OPTION_NAME,
			    spank_strerror(rc));
		return -1;
	}
	return 0;
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	size_t i;

	(void)sp;
	(void)ac;
	(void)av;
	for (i = 0; i < values_len; i++)
		free(values[i]);
	free(values);
	values = NULL;
	values_len = 0;
	free(encoded);
	encoded = NULL;
	encoded_len = 0;
	encoded_cap = 0;
	return 0;
}
