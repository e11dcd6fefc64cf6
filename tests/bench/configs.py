"""Configuration files of the data-path benchmark: sidecar static configs (one service, or 100
routes with 1,000 endpoints) and the HAProxy / nginx peers."""


def resources(echo_port, app_port_identity=""):
    """Static config for a client sidecar: service `echo` with one endpoint."""
    return [
        {"name": "echo", "version": "bench", "kind": {"cluster": {"name": "echo"}}},
        {"name": "echo", "version": "bench", "kind": {"endpoints": {
            "service": "echo",
            "endpoints": [{"address": f"127.0.0.1:{echo_port}", "weight": 1,
                           "identity": app_port_identity, "app_port": 0}]}}},
    ]


def listener(service, mode):
    """Listener resource for `service`; mode 2 = TLS_MODE_PERMISSIVE (plaintext accepted)."""
    return {"name": service, "version": "bench",
            "kind": {"listener": {"name": service, "tls_mode": mode}}}


def big_config(echo_port, services=100, per_service=10):
    """`services` routed services with `per_service` endpoints each (100 routes, 1,000
    endpoints by default): the config size the idle-RSS goal is stated for."""
    out = []
    for i in range(services):
        svc = f"svc-{i}"
        out.append({"name": svc, "version": "bench", "kind": {"cluster": {"name": svc}}})
        out.append({"name": svc, "version": "bench", "kind": {"route": {"service": svc, "rules": [
            {"name": "api", "matches": [{"path": {"kind": 2, "value": f"/api/{i}/"}}],
             "backends": [{"service": svc, "weight": 1}]}]}}})
        eps = [{"address": f"127.0.0.{1 + j // 200}:{20000 + i * per_service + j}", "weight": 1,
                "labels": {"version": "v1"}} for j in range(per_service)]
        out.append({"name": svc, "version": "bench",
                    "kind": {"endpoints": {"service": svc, "endpoints": eps}}})
    return out


def haproxy_conf(port, echo):
    return f"""global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server echo 127.0.0.1:{echo}
"""


def nginx_conf(port, echo, tmp):
    return f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp};
    upstream echo {{ server 127.0.0.1:{echo}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


