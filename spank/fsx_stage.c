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
 * The full meaning of a SPEC (KIND,SRC,DST[,OPT=VAL]...) is checked by the
 * Python side against site policy; here only the shape is checked, so that a
 * typo is refused by sbatch instead of failing the job later.
 *
 * Works with the SPANK API of Slurm 22.05 and later.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <slurm/spank.h>

SPANK_PLUGIN(fsx_stage, 1);

#define OPTION_NAME "fsx-stage"
#define ENV_NAME "FSX_STAGE"

/* The encoded, ';'-joined values seen so far in this process. */
static char *encoded = NULL;
static size_t encoded_len = 0;
static size_t encoded_cap = 0;

static int fsx_stage_opt_cb(int val, const char *optarg, int remote);

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
	if (append_encoded(optarg) < 0) {
		slurm_error("--%s: out of memory", OPTION_NAME);
		return -1;
	}
	return 0;
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
	spank_err_t rc;

	(void)ac;
	(void)av;
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
	(void)sp;
	(void)ac;
	(void)av;
	free(encoded);
	encoded = NULL;
	encoded_len = 0;
	encoded_cap = 0;
	return 0;
}
