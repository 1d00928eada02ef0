"""A local fake of the Stripe endpoints Atelier calls (stripe-mock cannot be installed here).

Speaks Stripe's wire format: form-encoded requests with bracketed nesting, JSON responses with
Stripe's object shapes and error envelope. Its hosted Checkout page "pays" on submit: it creates
the subscription and invoice, delivers the signed webhooks (checkout.session.completed,
customer.subscription.created, invoice.paid, built from tests/fixtures/stripe) to the configured
endpoint, then redirects to the session's success_url.
"""

from __future__ import annotations

import copy
import html
import itertools
import json
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stripe"
_ids = itertools.count(1)


def load_event(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def sign(body: str, secret: str, timestamp: int | None = None) -> str:
    """The ``stripe-signature`` header Stripe would send for ``body``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)


def new_id(prefix: str) -> str:
    return f"{prefix}_fake{next(_ids):06d}{int(time.time() * 1000) % 100000:05d}"


def parse_form(body: str) -> dict:
    """``a[b][0][c]=1`` -> {"a": {"b": [{"c": "1"}]}} (Stripe's encoding)."""
    result: dict = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = result
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = None if last else parts[i + 1]
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append({} if not nxt or not nxt.isdigit() else [])
                if last:
                    node[index] = value
                else:
                    if not isinstance(node[index], (dict, list)) or (
                        nxt.isdigit() and not isinstance(node[index], list)
                    ):
                        node[index] = [] if nxt.isdigit() else {}
                    node = node[index]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, [] if nxt.isdigit() else {})
    return result


class MissingParam(Exception):
    """A request parameter names an object that does not exist (Stripe: 400 resource_missing)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class FakeStripe:
    def __init__(self) -> None:
        self.customers: dict[str, dict] = {}
        self.products: dict[str, dict] = {}
        self.prices: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.subscriptions: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}
        self.events: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.webhook_url = ""
        self.webhook_secret = ""
        self.webhook_responses: list[int] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeStripe:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def calls(self, method: str, path_prefix: str) -> list[dict]:
        return [params for m, p, params in self.requests if m == method and p.startswith(path_prefix)]

    # --- state changes ------------------------------------------------------------------------
    def add_price(self, *, plan: str, amount: int) -> dict:
        product = f"atelier_{plan}"
        self.products.setdefault(
            product,
            {
                "id": product,
                "object": "product",
                "name": f"Atelier {plan.title()}",
                "active": True,
                "metadata": {"plan": plan},
                "livemode": False,
                "created": int(time.time()),
            },
        )
        price = {
            "id": new_id("price"),
            "object": "price",
            "active": True,
            "currency": "usd",
            "unit_amount": amount,
            "unit_amount_decimal": str(amount),
            "lookup_key": f"atelier_{plan}_monthly",
            "product": product,
            "recurring": {
                "interval": "month",
                "interval_count": 1,
                "usage_type": "licensed",
                "meter": None,
                "trial_period_days": None,
            },
            "type": "recurring",
            "billing_scheme": "per_unit",
            "livemode": False,
            "metadata": {"plan": plan},
            "nickname": None,
            "tax_behavior": "unspecified",
            "created": int(time.time()),
        }
        self.prices[price["id"]] = price
        return price

    def pay_checkout(self, session_id: str) -> list[int]:
        """What Stripe does when the customer pays: objects, then signed webhooks."""
        session = self.sessions[session_id]
        price = self.prices[session["line_items"][0]["price"]]
        metadata = dict((session.get("subscription_data") or {}).get("metadata") or {})
        now = int(time.time())
        sub_event = load_event("customer.subscription.updated")
        sub = sub_event["data"]["object"]
        sub.update(id=new_id("sub"), customer=session["customer"], metadata=metadata, created=now, start_date=now)
        item = sub["items"]["data"][0]
        item.update(
            id=new_id("si"),
            price=copy.deepcopy(price),
            subscription=sub["id"],
            current_period_start=now,
            current_period_end=now + 30 * 86400,
        )
        self.subscriptions[sub["id"]] = sub
        inv_event = load_event("invoice.paid")
        inv = inv_event["data"]["object"]
        inv.update(
            id=new_id("in"),
            customer=session["customer"],
            amount_due=price["unit_amount"],
            amount_paid=price["unit_amount"],
            total=price["unit_amount"],
            created=now,
            number=new_id("INV"),
        )
        inv["parent"]["subscription_details"] = {"metadata": metadata, "subscription": sub["id"]}
        line = inv["lines"]["data"][0]
        line.update(
            invoice=inv["id"],
            amount=price["unit_amount"],
            metadata=metadata,
            period={"start": now, "end": now + 30 * 86400},
        )
        line["pricing"]["price_details"] = {"price": price["id"], "product": price["product"]}
        self.invoices[inv["id"]] = inv
        session.update(status="complete", payment_status="paid", subscription=sub["id"], invoice=inv["id"])
        chk_event = load_event("checkout.session.completed")
        chk_event["data"]["object"] = copy.deepcopy(session)
        sub_event["type"] = "customer.subscription.created"
        sub_event["data"].pop("previous_attributes", None)
        results = []
        for event in (chk_event, sub_event, inv_event):
            event.update(id=new_id("evt"), created=now)
            results.append(self.send_event(event))
        return results

    def delete_customer(self, customer_id: str) -> int:
        """A customer deleted in the Stripe dashboard: gone from the API, then a signed customer.deleted."""
        customer = self.customers.pop(customer_id)
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": "2026-05-27.dahlia",
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": "customer.deleted",
            "data": {"object": {**customer, "deleted": True}},
        }
        return self.send_event(event)

    def _known_customer(self, customer_id: str | None) -> None:
        # Stripe answers 400 resource_missing, param "customer", for a deleted or unknown customer.
        if customer_id and customer_id not in self.customers:
            raise MissingParam("customer", f"No such customer: '{customer_id}'")

    def send_event(self, event: dict) -> int:
        self.events[event["id"]] = event
        if not self.webhook_url:
            return 0
        body = json.dumps(event)
        request = urllib.request.Request(
            self.webhook_url,
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, self.webhook_secret)},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        self.webhook_responses.append(status)
        return status

    # --- HTTP ---------------------------------------------------------------------------------
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, payload: dict | None = None, *, html_body: str = "", location: str = ""):
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                if html_body:
                    data = html_body.encode()
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                else:
                    data = json.dumps(payload).encode()
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Request-Id", new_id("req"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, param: str = "", code: str | None = None):
                self._send(
                    status,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "message": message,
                            "param": param,
                            "code": code or ("resource_missing" if status == 404 else None),
                        }
                    },
                )

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def _dispatch(self, method: str):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                params = parse_form(parts.query if method == "GET" else body)
                with fake.lock:
                    fake.requests.append((method, parts.path, params))
                try:
                    with fake.lock:
                        route = self._route(method, parts.path, params)
                except MissingParam as missing:
                    return self._error(400, missing.message, missing.param, "resource_missing")
                except KeyError as missing:
                    return self._error(404, f"No such object: '{missing.args[0]}'", "id")
                if route is None:
                    return self._error(404, f"Unrecognized request URL ({method}: {parts.path}).")
                if route == "pay":
                    session_id = parts.path.split("/")[3]
                    fake.pay_checkout(session_id)
                    return self._send(303, {}, location=fake.sessions[session_id]["success_url"])
                status, payload = route
                if isinstance(payload, str):
                    return self._send(status, html_body=payload)
                return self._send(status, payload)

            def _route(self, method: str, path: str, params: dict):
                now = int(time.time())
                if path == "/favicon.ico":  # the browser asks on the hosted checkout page
                    return 200, {}
                if path == "/v1/account" and method == "GET":
                    return 200, {
                        "id": "acct_fakeAtelier01",
                        "object": "account",
                        "type": "standard",
                        "country": "US",
                        "default_currency": "usd",
                        "email": "billing@atelier.local",
                        "charges_enabled": True,
                        "payouts_enabled": True,
                        "details_submitted": True,
                        "settings": {"dashboard": {"display_name": "Atelier"}},
                        "business_profile": {},
                        "capabilities": {},
                        "metadata": {},
                        "created": 1700000000,
                    }
                if path == "/v1/customers" and method == "POST":
                    customer = {
                        "id": new_id("cus"),
                        "object": "customer",
                        "email": params.get("email"),
                        "metadata": params.get("metadata", {}),
                        "created": now,
                        "livemode": False,
                        "balance": 0,
                        "currency": None,
                        "delinquent": False,
                        "name": None,
                        "invoice_settings": {"default_payment_method": None},
                    }
                    fake.customers[customer["id"]] = customer
                    return 200, customer
                if m := re.fullmatch(r"/v1/customers/([^/]+)", path):
                    return 200, fake.customers[m.group(1)]
                if path == "/v1/products" and method == "POST":
                    product = {
                        "id": params.get("id") or new_id("prod"),
                        "object": "product",
                        "active": True,
                        "name": params["name"],
                        "metadata": params.get("metadata", {}),
                        "created": now,
                        "livemode": False,
                    }
                    fake.products[product["id"]] = product
                    return 200, product
                if m := re.fullmatch(r"/v1/products/([^/]+)", path):
                    product = fake.products[m.group(1)]
                    if method == "POST":
                        product.update({k: (v == "true" if k == "active" else v) for k, v in params.items()})
                    return 200, product
                if path == "/v1/prices" and method == "GET":
                    keys = params.get("lookup_keys") or []
                    data = [p for p in fake.prices.values() if p["lookup_key"] in keys and p["active"]]
                    return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/prices"}
                if path == "/v1/prices" and method == "POST":
                    plan = params.get("metadata", {}).get("plan", "x")
                    if params.get("transfer_lookup_key") == "true":
                        for price in fake.prices.values():
                            if price["lookup_key"] == params.get("lookup_key"):
                                price["lookup_key"] = None
                    price = fake.add_price(plan=plan, amount=int(params["unit_amount"]))
                    price["product"] = params["product"]
                    return 200, price
                if m := re.fullmatch(r"/v1/prices/([^/]+)", path):
                    price = fake.prices[m.group(1)]
                    if method == "POST" and "active" in params:
                        price["active"] = params["active"] == "true"
                    return 200, price
                if path == "/v1/checkout/sessions" and method == "POST":
                    fake._known_customer(params.get("customer"))
                    for item in params.get("line_items", []):
                        if item["price"] not in fake.prices:
                            raise KeyError(item["price"])
                    session_id = "cs_test_" + new_id("s")
                    session = {
                        "id": session_id,
                        "object": "checkout.session",
                        "mode": params.get("mode"),
                        "customer": params.get("customer"),
                        "client_reference_id": params.get("client_reference_id"),
                        "line_items": params.get("line_items", []),
                        "metadata": params.get("metadata", {}),
                        "subscription_data": params.get("subscription_data", {}),
                        "success_url": params.get("success_url"),
                        "cancel_url": params.get("cancel_url"),
                        "status": "open",
                        "payment_status": "unpaid",
                        "subscription": None,
                        "invoice": None,
                        "url": f"{fake.url}/c/pay/{session_id}",
                        "livemode": False,
                        "created": now,
                        "expires_at": now + 86400,
                        "currency": "usd",
                        "ui_mode": "hosted",
                    }
                    fake.sessions[session_id] = session
                    return 200, {k: v for k, v in session.items() if k not in ("line_items", "subscription_data")}
                if m := re.fullmatch(r"/c/pay/([^/]+)", path):
                    session = fake.sessions[m.group(1)]
                    price = fake.prices[session["line_items"][0]["price"]]
                    return 200, (
                        "<!doctype html><title>Fake Stripe Checkout</title><h1>Fake Stripe Checkout</h1>"
                        f"<p>Atelier subscription: ${price['unit_amount'] / 100:.2f} / month</p>"
                        f'<form method="post" action="/c/pay/{html.escape(session["id"])}/confirm">'
                        '<button type="submit">Pay and subscribe</button></form>'
                    )
                if re.fullmatch(r"/c/pay/([^/]+)/confirm", path) and method == "POST":
                    return "pay"
                if path == "/v1/billing_portal/sessions" and method == "POST":
                    fake._known_customer(params["customer"])
                    return 200, {
                        "id": new_id("bps"),
                        "object": "billing_portal.session",
                        "created": now,
                        "customer": params["customer"],
                        "livemode": False,
                        "return_url": params.get("return_url"),
                        "url": f"{fake.url}/p/session/{new_id('x')}",
                    }
                if m := re.fullmatch(r"/v1/subscriptions/([^/]+)", path):
                    return 200, fake.subscriptions[m.group(1)]
                if m := re.fullmatch(r"/v1/invoices/([^/]+)", path):
                    return 200, fake.invoices[m.group(1)]
                if m := re.fullmatch(r"/v1/events/([^/]+)", path):
                    return 200, fake.events[m.group(1)]
                return None

        return Handler


@pytest.fixture
def fake_stripe(settings):
    """A running fake Stripe; the stripe library talks to it for the duration of the test."""
    fake = FakeStripe().start()
    previous = stripe.api_base
    stripe.api_base = fake.url
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_TEST_SECRET_KEY = "sk_test_atelier_fake_key"  # dj-stripe checks the key's shape
    yield fake
    stripe.api_base = previous
    fake.stop()
