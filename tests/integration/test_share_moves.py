"""The controller moves compute shares toward a model whose queue stays long,
as messages to the unit, and loses no request on the way. A sim unit
(simulated: modelled step times) hosts a busy model and a calm one at half
the unit each; only the busy one gets a burst."""

from __future__ import annotations

import threading

import requests

from conftest import admin_state_http, free_port, one_state, solo_config, start_serve, wait_until

ADMIN = "adm-shares"


def test_controller_moves_share_to_the_growing_queue(tmp_path):
    http, node, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / "shares.toml"
    cfg.write_text(solo_config(http, node, admin, f'admin_token = "{ADMIN}"') + """
[controller]
node = "solo"
move_shares = true
share_step = 0.125
share_cooldown_ms = 300

[[models]]
name = "busy"
backend = "sim"
architecture = "llama-7b"

[[models]]
name = "calm"
backend = "sim"
architecture = "llama-7b"

[[units]]
name = "u"
node = "solo"
time_scale = 20.0
max_running = 1
models = [ { name = "busy", share = 0.5 }, { name = "calm", share = 0.5 } ]
""")
    proc, base = start_serve(["--config", cfg], tmp_path, "serve-shares", __name__, http)
    try:
        ctl = one_state(admin_state_http(base, ADMIN), "controller")["state"]
        assert ctl["move_shares"] and ctl["shares"] == {"u": {"busy": 0.5, "calm": 0.5}}, ctl
        # A calm request first: the calm model's scheduler reports (an empty queue).
        r = requests.post(f"{base}/v1/completions", json={"model": "calm", "prompt": "hi", "max_tokens": 2},
                          timeout=60)
        assert r.status_code == 200, r.text
        results = []

        def one(i):
            body = {"model": "busy", "prompt": f"request {i}", "max_tokens": 12}
            results.append(requests.post(f"{base}/v1/completions", json=body, timeout=120))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        st = wait_until(lambda: (lambda c: c if c["share_moves"] >= 1 else None)(
            one_state(admin_state_http(base, ADMIN), "controller")["state"]), 60,
            "the controller to move share toward the busy model", proc=proc)
        move = st["recent_share_moves"][0]
        assert (move["from"], move["to"]) == ("calm", "busy"), move
        assert move["to_share"] > 0.5 > move["from_share"], move
        unit = one_state(admin_state_http(base, ADMIN), "gpu_unit")["state"]["models"]
        assert unit["busy"]["share"] > 0.5 > unit["calm"]["share"], unit
        assert unit["busy"]["share"] + unit["calm"]["share"] <= 1.0 + 1e-9
        for t in threads:
            t.join(timeout=120)
        assert len(results) == 6 and all(r.status_code == 200 for r in results), \
            [r.text for r in results if r.status_code != 200]
        assert st["share_move_failures"] == 0
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert 'llmux:share_moves_total{controller="controller"}' in metrics
    finally:
        proc.cleanup()
