"""The container image: the Dockerfile builds from the context its .dockerignore leaves, and
docker-compose.yml stays valid.

No Docker daemon exists where the tests run, so the build is reproduced: the context is
rebuilt by applying the .dockerignore rules to the working tree (as the Docker client does),
the build stage's WORKDIR and COPY instructions are replayed into a scratch directory, and the
stage's `cargo build` command runs there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
import yaml

from conftest import REPO, TEST_JWT_SECRET

DOCKERFILE = REPO / "Dockerfile"


# --- .dockerignore -------------------------------------------------------------------------

@dataclass
class IgnoreRule:
    """One .dockerignore line: a path pattern, excluding or (with a leading `!`) including."""

    regex: re.Pattern
    segments: list[str]
    include: bool


def _glob_to_regex(pattern: str) -> str:
    """Docker's pattern language (Go filepath.Match plus `**`): `*` and `?` stay within one
    path segment, `**` spans segments."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i):
                out.append("/?")
                i += 1
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i)
            out.append(pattern[i:end + 1].replace("[!", "[^"))
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return "^" + "".join(out) + "$"


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if include else line).lstrip("/")
        rules.append(IgnoreRule(re.compile(_glob_to_regex(pattern)), pattern.split("/"), include))
    return rules


def is_excluded(rel: str, rules: list[IgnoreRule]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories
    decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for rule in rules:
        if any(rule.regex.match(p) for p in prefixes):
            excluded = not rule.include
    return excluded


def may_include_below(rel_dir: str, rules: list[IgnoreRule]) -> bool:
    """Whether an include rule could match something inside the excluded directory `rel_dir`
    (if not, the walk skips it: target/ holds gigabytes)."""
    depth = len(rel_dir.split("/"))
    for rule in rules:
        if rule.include and len(rule.segments) > depth:
            head = re.compile(_glob_to_regex("/".join(rule.segments[:depth])))
            if head.match(rel_dir) or "**" in "/".join(rule.segments[:depth]):
                return True
    return False


def build_context(source: Path, dest: Path) -> list[str]:
    """Copies the files of `source` that its .dockerignore lets into a build context to
    `dest`; returns their relative paths."""
    rules = parse_dockerignore((source / ".dockerignore").read_text())
    copied = []
    for root, dirs, files in os.walk(source):
        rel_root = os.path.relpath(root, source)
        rel_root = "" if rel_root == "." else rel_root
        kept = []
        for d in sorted(dirs):
            rel = f"{rel_root}/{d}" if rel_root else d
            if not is_excluded(rel, rules) or may_include_below(rel, rules):
                kept.append(d)
        dirs[:] = kept
        for f in sorted(files):
            rel = f"{rel_root}/{f}" if rel_root else f
            if not is_excluded(rel, rules):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / rel, dest / rel)
                copied.append(rel)
    return copied


# --- Dockerfile ----------------------------------------------------------------------------

@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for k, args in self.instructions if k == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions (keyword upper-cased, line continuations joined)."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", args, re.IGNORECASE)
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def replay_build_stage(stage: Stage, context: Path, root: Path) -> tuple[Path, str, dict]:
    """Replays the stage's WORKDIR, ENV and COPY instructions under `root` (the stage's
    filesystem); returns the working directory, the stage's `cargo build` command and its
    environment."""
    workdir, env, cargo_build = PurePosixPath("/"), {}, None
    for keyword, args in stage.instructions:
        if keyword == "WORKDIR":
            workdir = workdir / args
            (root / workdir.relative_to("/")).mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            for assignment in shlex.split(args):
                name, _, value = assignment.partition("=")
                env[name] = value
        elif keyword == "COPY":
            assert "--from" not in args, "the build stage copies from the context only"
            *sources, target = shlex.split(args)
            target_path = workdir / target
            dest = root / target_path.relative_to("/")
            if len(sources) > 1 or target.endswith("/"):
                dest.mkdir(parents=True, exist_ok=True)
            for src in sources:
                src_path = context / src
                assert src_path.exists(), f"COPY {src}: not in the build context"
                if src_path.is_dir():
                    shutil.copytree(src_path, dest, dirs_exist_ok=True)
                elif dest.is_dir():
                    shutil.copy2(src_path, dest / src_path.name)
                else:
                    shutil.copy2(src_path, dest)
        elif keyword == "RUN":
            for command in args.split("&&"):
                if command.strip().startswith("cargo build"):
                    cargo_build = command.strip()
    assert cargo_build, "the build stage has no `cargo build` command"
    return root / workdir.relative_to("/"), cargo_build, env


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_dockerignore_matches_like_docker():
    rules = parse_dockerignore("*\n!src\n!Cargo.toml\nsrc/**/*.bak\n")
    assert is_excluded("target/debug/fanout", rules)
    assert is_excluded("README.md", rules)
    assert not is_excluded("src/main.rs", rules)
    assert not is_excluded("src/broker/redis/mod.rs", rules)
    assert is_excluded("src/broker/x.bak", rules)
    assert not is_excluded("Cargo.toml", rules)
    assert not may_include_below("target", rules)
    assert may_include_below("target", parse_dockerignore("*\n!target/keep.txt\n"))


def test_runtime_stage_is_small_non_root_and_health_checked(stages):
    build, runtime = stages[0], stages[-1]
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    assert runtime.base.startswith("debian:") and runtime.base.endswith("-slim")
    user = runtime.all("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"numeric non-root USER, got {user!r}"
    (healthcheck,) = runtime.all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "8080" in runtime.all("EXPOSE")[0]
    # The binary the runtime stage copies is where the build stage's cargo build puts it.
    (copy_from,) = [a for a in runtime.all("COPY") if a.startswith(f"--from={build.name}")]
    workdir = build.all("WORKDIR")[-1]
    assert copy_from.split()[1] == f"{workdir}/target/release/fanout"
    assert "--bin fanout" in " ".join(build.all("RUN")) and "--release" in " ".join(build.all("RUN"))


def test_dockerfile_builds_from_its_context(stages, tmp_path):
    """Rebuilds the context, replays the build stage into it and runs its cargo build,
    exactly as the Dockerfile writes it (release profile).

    Why the exact command rather than a cheaper dev-profile build sharing the test suite's
    artifacts: a dev build of this crate from the scratch directory would overwrite
    target/debug/fanout with a binary whose rust-embed files (the demo page and JS client;
    read from disk at run time in dev builds) live in the scratch directory, deleted when the
    test ends, breaking every later test of the demo; and `cargo build --bin fanout` resolves
    dependency features without the dev-dependencies, so it recompiles much of the tree
    anyway. A release build writes only target/release (CARGO_TARGET_DIR is the repository's
    target/, so it is incremental after the first run and shared with the benchmarks' release
    builds) and embeds the files in the binary. A cold release build takes about 4-5 minutes
    on 2 cores. DEPLOY_SKIP_IMAGE_BUILD=1 checks the context and the replay but skips cargo."""
    context = tmp_path / "context"
    context.mkdir()
    copied = build_context(REPO, context)
    assert "Cargo.toml" in copied and "src/main.rs" in copied
    assert not any(p.startswith(("target/", ".git/", ".venv/")) for p in copied)

    build = stages[0]
    workdir, command, env = replay_build_stage(build, context, tmp_path / "stage")
    # Every target Cargo.toml declares must exist in the replayed tree, or Cargo rejects it.
    for declared in re.findall(r'^path\s*=\s*"([^"]+)"', (workdir / "Cargo.toml").read_text(), re.M):
        assert (workdir / declared).exists(), f"Cargo.toml declares {declared}, missing from the image build"
    for bench in re.findall(r'^\[\[bench\]\]\s*\nname\s*=\s*"([^"]+)"', (workdir / "Cargo.toml").read_text(), re.M):
        assert (workdir / "benches" / f"{bench}.rs").exists(), f"bench {bench} missing from the image build"
    # So must every workspace member, built or not: its manifest and its sources.
    manifest = tomllib.loads((workdir / "Cargo.toml").read_text())
    for member in manifest.get("workspace", {}).get("members", []):
        assert (workdir / member / "Cargo.toml").is_file(), f"workspace member {member} missing from the image build"
        assert (workdir / member / "src").is_dir(), f"sources of workspace member {member} missing from the image build"

    # Files the sources pull in at compile time must be in the replayed tree too: rust-embed
    # folders (relative to the manifest) and include_str!/include_bytes! (relative to the file).
    for source in (workdir / "src").rglob("*.rs"):
        text = source.read_text()
        for folder in re.findall(r'#\[folder\s*=\s*"([^"]+)"\]', text):
            assert (workdir / folder).is_dir(), f"{source.relative_to(workdir)} embeds {folder}, missing from the image build"
        for included in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', text):
            assert (source.parent / included).is_file(), f"{source.relative_to(workdir)} includes {included}, missing from the image build"

    if os.environ.get("DEPLOY_SKIP_IMAGE_BUILD") == "1":
        pytest.skip("DEPLOY_SKIP_IMAGE_BUILD=1: context and replay checked, cargo build skipped")
    argv = shlex.split(command)
    assert argv[:2] == ["cargo", "build"] and "--release" in argv
    target_dir = REPO / "target"
    result = subprocess.run(
        argv, cwd=workdir, env=dict(os.environ, **env, CARGO_TARGET_DIR=str(target_dir)),
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stderr[-4000:]}"
    version = subprocess.run([target_dir / "release" / "fanout", "--version"],
                             capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("fanout ")


# --- docker-compose ------------------------------------------------------------------------

def test_docker_compose_config_is_valid(tmp_path):
    """The compose file (whose validity without a JWT secret tests/cluster/deployment.rs
    checks) gives the nodes a file-descriptor limit and a stop timeout beyond the drain, and
    Prometheus its alert rules."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANOUT_")}
    result = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"],
                            cwd=REPO, env=env | {"FANOUT_JWT_SECRET": TEST_JWT_SECRET},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    nodes = [s for name, s in services.items() if name.startswith("fanout")]
    assert len(nodes) == 3
    for node in nodes:
        assert node["environment"]["FANOUT_JWT_SECRET"] == TEST_JWT_SECRET
        assert node["ulimits"]["nofile"]["hard"] >= 100_000
        drain_s = int(node["environment"]["FANOUT_DRAIN_S"])
        assert int(node["stop_grace_period"].rstrip("s")) > drain_s
        assert Path(node["build"]["context"]) == REPO

    # Prometheus as compose mounts it: its configuration and the rules beside it.
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    for source, target in mounts.items():
        shutil.copy(REPO / source, tmp_path / Path(target).name)
    check = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", check.stdout), check.stdout

