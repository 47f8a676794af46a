"""Every templates/<name>/ (a Dockerfile and a test.json) run under $FWATCHDOG as its image would,
without a container engine, plus static checks of its Dockerfile and template.yml, and of the
deploy/ manifests. See conftest.py for how the image's layout and environment are reproduced.

test.json:
  {"build": [[argv...], ...],            optional, run in a copy of the template directory
   "requests": [{"method": "POST", "path": "/", "headers": {...},
                 "body": "text" | "chunks": ["piece", ...],      (chunks: sent chunked)
                 "expect": {"status": 200, "body": "exact" | "body_contains": "...",
                            "headers": {"Name": "exact value"}}}]}
"""
import json
import re
import shutil

import pytest

from conftest import (
    DEPLOY, PATH, ROOT, TEMPLATES, TemplateRun, check_response, http_request, lay_out,
    load_test_json, map_workdir, parse_dockerfile, parse_duration, parse_env,
    parse_exec_form, parse_healthcheck, parse_yaml, template_dirs,
)

# The templates this suite was written with; others are picked up from templates/*/.
KNOWN = {"bash-classic", "python3", "python3-http", "node-http", "c-classic"}
TEMPLATE_DIRS = template_dirs()
IDS = [d.name for d in TEMPLATE_DIRS]
MODES = {"streaming", "serializing", "classic", "static", "http", "warm"}


def test_templates_present():
    names = {d.name for d in TEMPLATE_DIRS}
    assert KNOWN <= names, f"missing templates (Dockerfile + test.json): {KNOWN - names}"
    # faas-cli template pull reads <repo>/template/: a symlink to templates/.
    assert (ROOT / "template").resolve() == TEMPLATES.resolve(), "template -> templates missing"
    for d in sorted(p for p in TEMPLATES.iterdir() if p.is_dir()):
        missing = [f for f in ("Dockerfile", "template.yml", "README.md", "test.json")
                   if not (d / f).is_file()]
        assert not missing, f"templates/{d.name} lacks {missing}"


# --------------------------------------------------------------------------------------------
# Static checks


@pytest.mark.parametrize("tdir", TEMPLATE_DIRS, ids=IDS)
def test_template_static(tdir):
    stages = parse_dockerfile((tdir / "Dockerfile").read_text())
    assert len(stages) >= 2, "multi-stage: a build stage for the watchdog, then the runtime"
    final = stages[-1]
    env = final.env()

    # The watchdog: built from this repository in a debian:bookworm stage, `make ... static`,
    # copied to /fwatchdog and used as the entrypoint.
    copies = [a for a in final.all("COPY") if "fwatchdog-static" in a]
    assert copies, "the final stage must COPY the static watchdog"
    src_stage = re.search(r"--from=(\S+)", copies[0])
    assert src_stage and copies[0].split()[-1] == "/fwatchdog", copies[0]
    builder = next((s for s in stages if s.name == src_stage.group(1)), None)
    assert builder is not None, f"no stage named {src_stage.group(1)}"
    assert builder.base.startswith("debian:bookworm"), builder.base
    assert any(re.search(r"\bmake\b.*\bstatic\b", a) for a in builder.all("RUN")), \
        "the watchdog stage must run `make static`"
    assert parse_exec_form(final.last("ENTRYPOINT") or "") == ["/fwatchdog"]
    hc = final.last("HEALTHCHECK")
    assert hc, "no HEALTHCHECK"
    assert parse_healthcheck(hc)[1] == ["/fwatchdog", "-run-healthcheck"], hc

    # A user that is not root; numeric in FROM scratch (no /etc/passwd to look a name up in).
    user = final.last("USER")
    assert user, "no USER: the function would run as root"
    name = user.strip().split(":")[0]
    assert name not in ("root", "0"), user
    if final.base == "scratch":
        assert re.fullmatch(r"[0-9]+(:[0-9]+)?", user.strip()), \
            f"scratch needs a numeric USER: {user}"

    # Watchdog settings.
    mode = env.get("mode", "streaming")
    assert mode in MODES, mode
    if mode != "static":
        assert env.get("fprocess") or env.get("function_process"), "no fprocess in ENV"
    if mode == "http":
        assert env.get("upstream_url") or env.get("http_upstream_url"), "mode http: no upstream_url"
    for k in ("exec_timeout", "read_timeout", "write_timeout", "healthcheck_interval",
              "shutdown_grace"):
        if env.get(k):
            parse_duration(env[k])

    # template.yml: OpenFaaS's keys; fprocess and `environment` agree with the Dockerfile.
    meta = parse_yaml((tdir / "template.yml").read_text())
    assert len(meta) == 1 and isinstance(meta[0], dict), "template.yml: one mapping"
    meta = meta[0]
    assert meta.get("language") == tdir.name
    assert isinstance(meta.get("welcome_message"), str) and meta["welcome_message"].strip()
    assert meta.get("fprocess") == (env.get("function_process") or env.get("fprocess")), \
        "template.yml fprocess != the Dockerfile's ENV fprocess"
    for k, v in (meta.get("environment") or {}).items():
        assert k in env, f"template.yml environment.{k} is not in the Dockerfile's ENV"
        assert str(v) == env[k], f"template.yml environment.{k}={v!r}, Dockerfile {env[k]!r}"

    # faas-cli new copies template/<lang>/function/ into the new function's directory and
    # faas-cli build copies that directory back over function/: the user's code lives there.
    assert (tdir / "function").is_dir(), "no function/ directory (faas-cli's handler folder)"
    copied = " ".join(final.all("COPY") + [a for s in stages for a in s.all("COPY")])
    assert re.search(r"(^|\s)(\./)?function/?(\s|$)|(^|\s)\.\s", copied), \
        "the Dockerfile never copies function/"
    load_test_json(tdir / "test.json")


# --------------------------------------------------------------------------------------------
# Running each template


@pytest.mark.parametrize("tdir", TEMPLATE_DIRS, ids=IDS)
def test_template_runs(tdir, tmp_path, fwatchdog):
    spec = load_test_json(tdir / "test.json")
    text = (tdir / "Dockerfile").read_text()
    for tool in ("node", "python3", "bash"):
        if re.search(rf'fprocess="?{tool}\b', text) and shutil.which(tool, path=PATH) is None:
            pytest.fail(f"{tool} is not installed (CI installs it)")
    run = TemplateRun(tdir, tmp_path, spec.get("build", []))
    failures = []
    with run:
        run.wait_ready()
        rc, out = run.healthcheck()
        assert rc == 0, f"-run-healthcheck exited {rc}: {out}\n" + run.log_text()
        for n, r in enumerate(spec["requests"]):
            resp = http_request(run.port, r.get("method", "GET"), r.get("path", "/"),
                                headers=r.get("headers"), body=r.get("body"),
                                chunks=r.get("chunks"))
            try:
                check_response(resp, r["expect"])
            except AssertionError as e:
                failures.append(f"requests[{n}] {r.get('method', 'GET')} {r.get('path', '/')}: {e}")
    logs = run.log_text()
    assert not failures, "\n".join(failures) + "\nwatchdog log:\n" + logs
    assert not run.needed_sigkill, f"watchdog did not exit within 10 s of SIGTERM:\n{logs}"
    assert run.returncode == 0, f"exit status {run.returncode} after SIGTERM:\n{logs}"
    assert not run.survivors, f"processes survived the watchdog: {run.survivors}"


# --------------------------------------------------------------------------------------------
# The harness itself: it must be able to fail, and read Dockerfiles and YAML correctly.


def test_check_response_rejects_mismatches():
    resp = {"status": 200, "headers": {"content-type": "text/plain"}, "body": b"hello"}
    check_response(resp, {"status": 200, "body": "hello", "body_contains": "ell",
                          "headers": {"Content-Type": "text/plain"}})
    for bad in ({"status": 201}, {"body": "hello\n"}, {"body_contains": "bye"},
                {"headers": {"Content-Type": "text/html"}}, {"headers": {"X-Missing": "1"}}):
        with pytest.raises(AssertionError):
            check_response(resp, bad)


def test_load_test_json_rejects_unknown_keys(tmp_path):
    p = tmp_path / "test.json"
    for bad in ({"requests": [{"expect": {"stauts": 200}}]},
                {"requests": [{"path": "/", "expected": {"status": 200}}]},
                {"requests": []}, {"request": [{"expect": {"status": 200}}]}):
        p.write_text(json.dumps(bad))
        with pytest.raises(AssertionError):
            load_test_json(p)


DOCKERFILE = r"""
# comment
ARG X=1
FROM debian:bookworm AS build
WORKDIR /src
COPY a.c .
RUN cc -o a a.c \
 && echo done

FROM scratch
COPY --from=build /src/a /home/app/a
COPY --from=build /etc/passwd /etc/passwd
WORKDIR /home
WORKDIR app
COPY --chown=1:1 lib/ lib/
COPY x.txt y.txt ./sub/
ENV one=1 two="two words" \
    # a comment inside a continuation
    three='it''s' four=a\ b path=/home/app/bin:/home/application
ENV legacy value with spaces
ENV one=uno
USER 10001:10001
ENTRYPOINT ["/fwatchdog"]
HEALTHCHECK --interval=5s --timeout=3s CMD ["/fwatchdog", "-run-healthcheck"]
"""


def test_dockerfile_reader(tmp_path):
    stages = parse_dockerfile(DOCKERFILE)
    assert [(s.base, s.name) for s in stages] == [("debian:bookworm", "build"), ("scratch", None)]
    assert stages[0].all("RUN") == ["cc -o a a.c && echo done"]
    final = stages[1]
    assert final.workdir == "/home/app"
    assert final.env() == {"one": "uno", "two": "two words", "three": "its", "four": "a b",
                           "path": "/home/app/bin:/home/application",
                           "legacy": "value with spaces"}
    assert parse_env('a=1 b="x y"') == {"a": "1", "b": "x y"}
    assert map_workdir(final.env()["path"], final.workdir, "/L") == "/L/bin:/home/application"
    assert parse_healthcheck(final.last("HEALTHCHECK")) == (
        {"interval": "5s", "timeout": "3s"}, ["/fwatchdog", "-run-healthcheck"])
    assert parse_exec_form(final.last("ENTRYPOINT")) == ["/fwatchdog"]

    ctx = tmp_path / "ctx"
    (ctx / "lib" / "m").mkdir(parents=True)
    (ctx / "lib" / "m" / "f.py").write_text("f")
    (ctx / "x.txt").write_text("x")
    (ctx / "y.txt").write_text("y")
    (ctx / "a").write_text("built")
    app = tmp_path / "app"
    skipped = lay_out(stages, ctx, app)
    got = sorted(str(p.relative_to(app)) for p in app.rglob("*") if p.is_file())
    assert got == ["a", "lib/m/f.py", "sub/x.txt", "sub/y.txt"]
    assert [why for _, why in skipped] == ["destination outside the WORKDIR"]
    (ctx / "x.txt").unlink()
    with pytest.raises(AssertionError):
        lay_out(stages, ctx, tmp_path / "app2")


def test_durations():
    assert parse_duration("30") == 30
    assert parse_duration("1m30s") == 90
    assert parse_duration("250ms") == 0.25
    for bad in ("", "10x", "1m 3s", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# --------------------------------------------------------------------------------------------
# deploy/ manifests


def _env_map(container):
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def _settings(env):
    """The watchdog's shutdown timings in seconds, with its defaults."""
    write = parse_duration(env.get("write_timeout", "30s"))
    hc = parse_duration(env["healthcheck_interval"]) if env.get("healthcheck_interval") else write
    return {
        "write_timeout": write,
        "healthcheck_interval": hc,
        "shutdown_grace": parse_duration(env.get("shutdown_grace", "5s")),
        "exec_timeout": parse_duration(env["exec_timeout"]) if env.get("exec_timeout") else None,
    }


def _probe_port_ok(probe, container, watchdog_port):
    port = probe["httpGet"].get("port")
    if port is None:
        return True
    if isinstance(port, str):
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        port = named.get(port)
    return port == watchdog_port


def test_kubernetes_manifest():
    docs = parse_yaml((DEPLOY / "kubernetes.yaml").read_text())
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service"} <= set(kinds), list(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = _env_map(c)
    wd_port = int(env.get("port") or env.get("PORT") or 8080)
    assert wd_port in [p["containerPort"] for p in c["ports"]]
    for kind in ("readinessProbe", "livenessProbe"):
        probe = c[kind]
        assert probe["httpGet"]["path"] == "/_/health", kind
        assert probe["httpGet"].get("port") is not None, f"{kind}: plain Kubernetes needs a port"
        assert _probe_port_ok(probe, c, wd_port), f"{kind} does not probe the watchdog's port"
    s = _settings(env)
    need = s["healthcheck_interval"] + s["write_timeout"] + s["shutdown_grace"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= need, (f"terminationGracePeriodSeconds {grace} < healthcheck_interval + "
                           f"write_timeout + shutdown_grace = {need}")
    # The unready wait must let the readiness probe fail before the listener closes.
    r = c["readinessProbe"]
    assert s["healthcheck_interval"] >= r.get("periodSeconds", 10) * r.get("failureThreshold", 3)
    if s["exec_timeout"]:
        assert s["exec_timeout"] <= s["write_timeout"]
    # The Service selects the pods and targets the watchdog's port.
    svc = kinds["Service"]["spec"]
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert svc["selector"].items() <= labels.items()
    assert kinds["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    targets = [p["targetPort"] for p in svc["ports"]]
    named = {p.get("name"): p["containerPort"] for p in c["ports"]}
    assert any(t == wd_port or named.get(t) == wd_port for t in targets), targets


def test_knative_manifest():
    (ksvc,) = parse_yaml((DEPLOY / "knative-service.yaml").read_text())
    assert ksvc["apiVersion"] == "serving.knative.dev/v1" and ksvc["kind"] == "Service"
    spec = ksvc["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = _env_map(c)
    # Knative sets PORT to the containerPort; the watchdog honours PORT unless `port` is set.
    assert "port" not in env and "PORT" not in env, "let Knative set PORT"
    ports = c.get("ports") or [{"containerPort": 8080}]
    assert len(ports) == 1
    wd_port = ports[0]["containerPort"]
    for kind in ("readinessProbe", "livenessProbe"):
        probe = c[kind]
        assert probe["httpGet"]["path"] == "/_/health", kind
        assert _probe_port_ok(probe, c, wd_port), kind
    s = _settings(env)
    timeout = spec["timeoutSeconds"]
    # The watchdog answers (504) before Knative gives up on the request.
    assert s["exec_timeout"] and s["exec_timeout"] <= s["write_timeout"] <= timeout
    # Knative's concurrency limit and the watchdog's agree, so the watchdog never 429s.
    if "max_inflight" in env:
        assert spec["containerConcurrency"] == int(env["max_inflight"]), \
            "containerConcurrency != max_inflight"
    # The shutdown sequence fits the grace period Knative gives the pod (its timeoutSeconds).
    assert s["healthcheck_interval"] + s["write_timeout"] + s["shutdown_grace"] <= timeout
