"""Site policy: where a job may stage on scratch, and which S3 prefixes it may read or write.

Paths are checked lexically after normalisation (``..`` cannot escape a root);
symlinks are the transfer core's business, which writes as the job user. S3 access
is default-deny: a ``[[s3.allow]]`` rule must grant the access for the bucket and a
prefix of the key.
"""

from __future__ import annotations

import grp
import posixpath
from collections.abc import Callable, Iterable

from fsx_stage.config import Access, AllowRule, SiteConfig
from fsx_stage.directives import OPTION_NAME, Kind, printable
from fsx_stage.durations import format_duration
from fsx_stage.job import JobIdentity
from fsx_stage.plan_entry import PlanEntry
from fsx_stage.s3url import S3Url

#: What each kind of directive does with its S3 side (a checkpoint is also restored).
_ACCESS: dict[Kind, tuple[Access, ...]] = {
    Kind.IN: (Access.READ,),
    Kind.OUT: (Access.WRITE,),
    Kind.CHECKPOINT: (Access.READ, Access.WRITE),
}

#: Resolves a group name to its gid (None when unknown).
GroupResolver = Callable[[str], "int | None"]


class PolicyError(ValueError):
    """A directive the site policy refuses; the message is meant for the job's user."""


def system_group_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def normalise_path(path: str) -> str:
    """Lexically normalise an absolute path, keeping a trailing ``/``."""
    normal = "/" + posixpath.normpath(path).lstrip("/")
    if path.endswith("/") and normal != "/":
        normal += "/"
    return normal


def is_under(path: str, root: str) -> bool:
    """Whether normalised ``path`` is ``root`` or below it (both absolute)."""
    path_n = normalise_path(path).rstrip("/") or "/"
    root_n = normalise_path(root).rstrip("/") or "/"
    return root_n == "/" or path_n == root_n or path_n.startswith(root_n + "/")


def _template_value(value: str | None) -> str | None:
    """A user or account name usable in a path or prefix template, else None."""
    if not value or value in (".", "..") or "/" in value or "\0" in value:
        return None
    return value


def expand_template(template: str, job: JobIdentity) -> str | None:
    """``template`` with ``{user}``/``{account}`` filled in, or None if a value is unusable."""
    result = template
    for name, raw in (("user", job.user), ("account", job.account)):
        field = "{" + name + "}"
        if field in result:
            value = _template_value(raw)
            if value is None:
                return None
            result = result.replace(field, value)
    return result


class Policy:
    """The checks :func:`fsx_stage.plan.build_plan` applies to every plan entry."""

    def __init__(self, config: SiteConfig, resolve_group: GroupResolver = system_group_gid) -> None:
        self._config = config
        self._resolve_group = resolve_group

    def scratch_roots(self, job: JobIdentity) -> list[str]:
        """The job's scratch roots, expanded and normalised (trailing ``/``)."""
        roots = (expand_template(t, job) for t in self._config.scratch_roots)
        return [normalise_path(r.rstrip("/") + "/") for r in roots if r is not None]

    def umask_for(self, path: str, job: JobIdentity) -> int:
        """The umask for what the hooks create at ``path``: that of the deepest
        ``root_umask`` root holding it, else the site's ``umask``."""
        best, mask = -1, self._config.umask
        for template, root_mask in self._config.root_umask.items():
            root = expand_template(template, job)
            if root is None:
                continue
            root = normalise_path(root.rstrip("/") + "/")
            if is_under(path, root) and len(root) > best:
                best, mask = len(root), root_mask
        return mask

    def rules_for(self, job: JobIdentity) -> list[AllowRule]:
        return [rule for rule in self._config.s3.allow if self._applies(rule, job)]

    def allowed_prefixes(self, job: JobIdentity, access: Access) -> list[S3Url]:
        urls: list[S3Url] = []
        for rule in self.rules_for(job):
            prefix = expand_template(rule.prefix, job)
            if access in rule.access and prefix is not None:
                urls.append(S3Url(bucket=rule.bucket, key=prefix))
        return urls

    def check(self, entry: PlanEntry, job: JobIdentity) -> None:
        """Raise :class:`PolicyError` when ``entry`` is not allowed for ``job``."""
        # The side read from first: the first refusal is the one the user reads.
        if entry.is_download:
            self._check_s3(entry, entry.s3_side, _ACCESS[entry.kind], job)
        self._check_path(entry, entry.scratch_side, job)
        if not entry.is_download:
            self._check_s3(entry, entry.s3_side, _ACCESS[entry.kind], job)
        if entry.kind is Kind.CHECKPOINT:
            self._check_every(entry)

    def _check_every(self, entry: PlanEntry) -> None:
        least = self._config.checkpoints.min_every
        if entry.every is not None and entry.every < least:
            raise PolicyError(
                f"{_label(entry)}: every={format_duration(entry.every)} is more often than "
                f"this site allows: at least every={format_duration(least)} "
                "([checkpoints] min_every)"
            )

    def _applies(self, rule: AllowRule, job: JobIdentity) -> bool:
        if "*" in rule.users or job.user in rule.users:
            return True
        if job.account is not None and job.account in rule.accounts:
            return True
        gids = job.all_gids()
        return any(gid in gids for gid in self._rule_gids(rule.groups))

    def _rule_gids(self, groups: Iterable[str | int]) -> Iterable[int]:
        for group in groups:
            if isinstance(group, int):
                yield group
            elif group.isdigit():
                yield int(group)
            else:
                gid = self._resolve_group(group)
                if gid is not None:
                    yield gid

    def _check_path(self, entry: PlanEntry, path: str, job: JobIdentity) -> None:
        roots = self.scratch_roots(job)
        if any(is_under(path, root) for root in roots):
            return
        allowed = ", ".join(roots) if roots else "none (no scratch root applies to you)"
        raise PolicyError(
            f"{_label(entry)}: {printable(path)} is outside your scratch roots; allowed: {allowed}"
        )

    def _check_s3(
        self, entry: PlanEntry, url_text: str, needed: tuple[Access, ...], job: JobIdentity
    ) -> None:
        url = S3Url.parse(url_text)
        for access in needed:
            prefixes = self.allowed_prefixes(job, access)
            if any(p.bucket == url.bucket and url.key.startswith(p.key) for p in prefixes):
                continue
            verb = "reading" if access is Access.READ else "writing"
            allowed = ", ".join(str(p) for p in prefixes) or "nothing"
            who = f"user {job.user}" + (f", account {job.account}" if job.account else "")
            raise PolicyError(
                f"{_label(entry)}: {verb} {printable(url_text)} is not allowed for {who}; "
                f"you may {access.value}: {allowed}"
            )


def _label(entry: PlanEntry) -> str:
    return f"{OPTION_NAME}={printable(entry.directive)}"
