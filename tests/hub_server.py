"""Loopback Hugging Face Hub for tests: serve model folders with olah.

``local_hub({"org/name": folder, ...})`` commits each folder into a bare git
repository at ``<tmp>/mirrors/models/<org>/<name>`` (branch ``main``, fixed
author and date, so a commit sha depends only on the content), starts olah
(``python -m olah.server``, its own process group) on a free loopback port and
yields a :class:`LocalHub` with ``.endpoint`` (for ``HF_ENDPOINT``) and
``.commits`` (repo id -> commit sha). On exit, pass or fail, olah is stopped
(SIGTERM to its process group, SIGKILL after 5 s) and the temp dir removed.
``LocalHub.commit(repo_id, folder)`` adds a new commit (e.g. to test pinning).
``LocalHub.env(home)`` gives the variables a *fresh* client process needs:
huggingface_hub reads ``HF_ENDPOINT``/``HF_HUB_OFFLINE``/``HF_HOME`` once, at
import, so they must be in the child's environment.

How olah is configured
----------------------
``mirrors-path`` and ``offline`` exist only in olah's TOML config (its CLI has
no flags for them) and, given ``--config``, olah takes host, port, paths and
upstream from that file; ``--log-path`` is the only other flag passed. The
config also points the "upstream Hub" (``hf-netloc``) at a closed loopback
port: offline mode already skips the startup connectivity check and every
upstream call we exercise, and anything that still tried the network would be
refused at once instead of hanging. Readiness is a bounded poll (default 30 s)
for any HTTP answer, then a check that every repo answers
``/api/models/<id>/revision/main`` with 200; failures raise
:class:`OlahStartupError` with the tail of olah's log.

The 401 (what fails, why, and the way round it)
-----------------------------------------------
olah answers a request from the local git mirror only when the mirror can
answer it directly: repo info at a revision, the tree of an *existing* path,
HEAD/GET of an *existing* file; ``main`` is resolved by git there. Any other
request falls through to olah's upstream logic, which in offline mode resolves
a branch name only from its own upstream-response cache (``repos-path``),
never from the mirror. That cache is empty, so olah answers
``error_repo_not_found()``: **401 + X-Error-Code: RepoNotFound**, where the
real Hub says 404 EntryNotFound. huggingface_hub turns that into
``RepositoryNotFoundError``, which loaders treat as fatal, unlike the
``RemoteEntryNotFoundError`` of a 404. In practice:

* ``GET /api/models/<org>/<name>/tree/main/additional_chat_templates`` -
  ``transformers.utils.hub.list_repo_templates``, called by every
  ``PreTrainedTokenizerBase.from_pretrained`` for a repo id, lists that folder
  with ``HfApi.list_repo_tree``. It swallows the Hub's 404 but re-raises
  ``RepositoryNotFoundError``, so ``AutoTokenizer``/``pipeline`` by repo id at
  a branch fail: this is the request in DESIGN.md's note.
* ``HEAD /<org>/<name>/resolve/main/<missing file>`` - the same 401 for any
  optional file a loader probes (generation_config.json, processor_config.json,
  ...).
* ``GET /api/models/<org>/<name>`` (no revision) - ``HfApi.repo_info`` from
  ``transformers.utils.hub.resolve_revision`` when no revision is given; here
  olah's offline newest-commit lookup also reads only its cache. transformers
  fails open (keeps ``revision=None``), so this one only shows up in the log.

The clean way round is to **pin ``revision=<full commit sha>``**, the sha
``local_hub`` returns (and ``scripts/publish.py`` prints). For a full sha
olah needs no branch resolution: ``get_commit_hf`` returns the sha as is,
``resolve_revision`` skips the network, and a missing folder or file gets
404 EntryNotFound exactly as on the real Hub, so the stock loaders need no
extra kwargs and olah no patches. It is also what remote code should use
anyway: ``trust_remote_code=True`` with a pinned revision runs the code you
reviewed, not whatever ``main`` points at later. ``revision="main"`` does
not help: transformers resolves it once, but its ``ResolvedRevision`` keeps
the branch name in the URLs it builds. For an unpinned load,
``snapshot_download("org/name")`` works (it resolves ``main`` through
``/revision/main``, which the mirror answers, then fetches by sha) and
loading from the folder it returns works; that is DESIGN.md's "download,
then load from the cache", kept for unpinned use, but it exercises local
folder loading rather than the by-repo-id loaders, hence the pinning.
tests/test_hub_server.py proves both paths and records the 401-vs-404
behaviour so an olah fix is noticed.
Rejected: seeding olah's private cache format with branch records (couples
the tests to olah internals), or patching olah (no longer the stock server).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

__all__ = ["LocalHub", "OlahStartupError", "local_hub", "git_commit_folder"]

#: Author and dates of every commit the harness makes: commit shas depend only
#: on the folder content (and parent), so they are reproducible across runs.
GIT_AUTHOR_NAME = "medheads-test"
GIT_AUTHOR_EMAIL = "medheads-test@localhost"
GIT_DATE = "2024-01-01T00:00:00+00:00"


class OlahStartupError(RuntimeError):
    """olah did not start answering within the allotted time (or exited)."""


@dataclass
class LocalHub:
    """What :func:`local_hub` yields."""

    endpoint: str
    commits: dict[str, str]
    mirrors_path: Path
    log_file: Path
    _process: subprocess.Popen | None = field(default=None, repr=False)

    def env(self, home: str | os.PathLike | None = None) -> dict[str, str]:
        """Environment variables for a *fresh* process that should talk to this hub.

        huggingface_hub reads them once at import time, so they must be in the
        child's environment, not set after import.
        """
        env = {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        if home is not None:
            env["HF_HOME"] = str(home)
        return env

    def commit(self, repo_id: str, folder: str | os.PathLike, message: str = "update") -> str:
        """Make ``folder``'s content the new head of ``main`` of ``repo_id`` (creating it if new).

        Files absent from ``folder`` are deleted in the new commit. Returns the
        new commit sha and records it in :attr:`commits`. olah reads the git
        repository on every request, so the change is visible immediately.
        """
        sha = git_commit_folder(self.mirrors_path / "models" / repo_id, Path(folder), message)
        self.commits[repo_id] = sha
        return sha

    def log_tail(self, n: int = 40) -> str:
        """Last ``n`` lines of olah's output (request log included); for failing-test messages."""
        return _log_tail(self.log_file, n)


def _git(git_dir: Path, work_tree: Path | None, *args: str) -> str:
    cmd = ["git", f"--git-dir={git_dir}"]
    if work_tree is not None:
        cmd.append(f"--work-tree={work_tree}")
    env = {
        **os.environ,
        # Ignore the user's and system's git configuration (hooks, signing,
        # templates, default branch): the result must not depend on the machine.
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": GIT_AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": GIT_AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": GIT_AUTHOR_NAME,
        "GIT_COMMITTER_EMAIL": GIT_AUTHOR_EMAIL,
        "GIT_AUTHOR_DATE": GIT_DATE,
        "GIT_COMMITTER_DATE": GIT_DATE,
    }
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    proc = subprocess.run(cmd + list(args), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def git_commit_folder(git_dir: Path, folder: Path, message: str) -> str:
    """Commit the content of ``folder`` as the head of branch ``main`` of the bare repo ``git_dir``.

    The repository is bare (``--work-tree`` points at ``folder``), so the staged
    folder is neither copied nor modified. Returns the commit sha.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    git_dir = Path(git_dir)
    if not (git_dir / "HEAD").exists():
        git_dir.mkdir(parents=True, exist_ok=True)
        _git(git_dir, None, "init", "--quiet", "--bare", "--initial-branch=main")
    # -A stages deletions too; --force ignores any .gitignore in the folder.
    _git(git_dir, folder, "add", "--all", "--force", ".")
    _git(git_dir, folder, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", message)
    return _git(git_dir, None, "rev-parse", "refs/heads/main")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_config(path: Path, host: str, port: int, mirrors: Path, repos: Path, dead_upstream: str) -> None:
    # Only the TOML config can set `mirrors-path` and `offline`; olah's CLI has
    # no flags for them. With a config file olah ignores its other CLI flags
    # except --log-path.
    path.write_text(
        "\n".join(
            [
                "[basic]",
                f"host = {_toml_str(host)}",
                f"port = {port}",
                f"repos-path = {_toml_str(str(repos))}",
                f"mirrors-path = [{_toml_str(str(mirrors))}]",
                'mirror-scheme = "http"',
                f"mirror-netloc = {_toml_str(f'{host}:{port}')}",
                f"mirror-lfs-netloc = {_toml_str(f'{host}:{port}')}",
                # Belt and braces with offline mode: any code path that still
                # tries the upstream Hub hits a closed loopback port and fails
                # at once instead of hanging on the network.
                'hf-scheme = "http"',
                f"hf-netloc = {_toml_str(dead_upstream)}",
                f"hf-lfs-netloc = {_toml_str(dead_upstream)}",
                "",
                "[accessibility]",
                "offline = true",
                "",
            ]
        )
    )


def _log_tail(log_file: Path, n: int = 40) -> str:
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n:]) or "<empty log>"


def _get_status(url: str) -> int | None:
    """HTTP status of GET ``url`` (no proxies), or None if nothing answered."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=grace)


def _start_olah(
    workdir: Path, host: str, port: int, mirrors: Path, repo_ids: list[str], timeout: float
) -> tuple[subprocess.Popen, Path]:
    config = workdir / "olah.toml"
    repos = workdir / "cache"
    logs = workdir / "logs"
    repos.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    _write_config(config, host, port, mirrors, repos, dead_upstream=f"127.0.0.1:{_free_port('127.0.0.1')}")
    log_file = workdir / "olah.stdout.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLAH_")}
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "--config", str(config), "--log-path", str(logs)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: killpg reaches everything it spawns
        )
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise OlahStartupError(
                    f"olah exited with code {proc.returncode} before answering on {base}.\n"
                    f"--- {log_file} (tail) ---\n{_log_tail(log_file)}"
                )
            # Any HTTP answer means uvicorn is serving (olah's own "/" page is a
            # 500 with recent starlette, so do not ask for a success code here).
            if _get_status(f"{base}/api/medheads-readiness-probe") is not None:
                break
            if time.monotonic() > deadline:
                raise OlahStartupError(
                    f"olah did not answer on {base} within {timeout:.0f} s.\n"
                    f"--- {log_file} (tail) ---\n{_log_tail(log_file)}"
                )
            time.sleep(0.1)
        for repo_id in repo_ids:
            status = _get_status(f"{base}/api/models/{repo_id}/revision/main")
            if status != 200:
                raise OlahStartupError(
                    f"olah is up on {base} but does not serve {repo_id!r} from {mirrors} "
                    f"(GET /api/models/{repo_id}/revision/main -> {status}).\n"
                    f"--- {log_file} (tail) ---\n{_log_tail(log_file)}"
                )
        return proc, log_file
    except BaseException:
        _stop(proc)
        raise


@contextlib.contextmanager
def local_hub(
    repos: Mapping[str, str | os.PathLike],
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[LocalHub]:
    """Serve ``{"org/name": folder}`` as model repos of a loopback Hub; yield a :class:`LocalHub`."""
    workdir = Path(tempfile.mkdtemp(prefix="medheads-hub-"))
    proc = None
    try:
        mirrors = workdir / "mirrors"
        commits: dict[str, str] = {}
        for repo_id, folder in repos.items():
            if repo_id.count("/") != 1:
                raise ValueError(f"repo id must be 'org/name', got {repo_id!r}")
            commits[repo_id] = git_commit_folder(mirrors / "models" / repo_id, Path(folder), f"Upload {repo_id}")
        (mirrors / "models").mkdir(parents=True, exist_ok=True)

        attempts = 1 if port is not None else 3
        for attempt in range(attempts):
            p = port if port is not None else _free_port(host)
            try:
                proc, log_file = _start_olah(workdir, host, p, mirrors, list(commits), startup_timeout)
                break
            except OlahStartupError as e:
                # A port picked with _free_port can be taken before olah binds it.
                if attempt + 1 < attempts and "address already in use" in str(e).lower():
                    continue
                raise
        hub = LocalHub(
            endpoint=f"http://{host}:{p}",
            commits=commits,
            mirrors_path=mirrors,
            log_file=log_file,
            _process=proc,
        )
        yield hub
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
