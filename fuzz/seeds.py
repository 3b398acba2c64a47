#!/usr/bin/env python3
"""Writes the committed seed corpus of each fuzz target (fuzz/corpus/<target>/).

Seeds are the inputs the unit and integration tests use, in each target's
input format (see the target's doc comment), plus a user object as the fake
Clerk serves it (`fixtures/user.json`, `fixtures/users.json`). Re-run after
changing a target's input format: `python3 fuzz/seeds.py`.
"""
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
USER = (HERE / "fixtures" / "user.json").read_text().strip()
USERS = (HERE / "fixtures" / "users.json").read_text().strip()


def write(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def event(kind, data):
    return json.dumps({"type": kind, "object": "event", "timestamp": 1700000000000,
                       "instance_id": "ins_1", "data": data}, separators=(",", ":"))


# webhook: id \n timestamp \n signature ("sign": the valid one) \n body
user = json.loads(USER)
for name, parts in {
    "updated": ("msg_1", "1700000000", "sign", event("user.updated", user)),
    "created": ("msg_2", "1700000100", "sign", event("user.created", {"id": "user_9", "object": "user", "first_name": "Ada"})),
    "deleted": ("msg_3", "1699999800", "sign", event("user.deleted", {"id": "user_9", "object": "user", "deleted": True})),
    "ignored": ("msg_4", "1700000000", "sign", event("session.created", {})),
    "no_id": ("msg_5", "1700000000", "sign", event("user.updated", {"object": "user"})),
    "bad_signature": ("msg_6", "1700000000", "v1,AAAA", event("user.updated", user)),
    "rotation": ("msg_7", "1700000000", "v1,dGFn v2,abc v1,!!", "{}"),
    "too_old": ("msg_8", "1699999000", "sign", "{}"),
    "future": ("msg_9", "1700000301", "sign", "{}"),
    "bad_timestamp": ("msg_a", "yesterday", "sign", "{}"),
    "not_json": ("msg_b", "1700000000", "sign", "not json"),
    "empty_id": ("", "1700000000", "sign", "{}"),
}.items():
    write("webhook", name, "\n".join(parts))

# clerk_user: a body of GET /users or GET /users/{id}
for name, body in {
    "user": USER,
    "list": USERS,
    "empty_list": "[]",
    "mixed_list": '[1,"x",{"id":3},{"id":""},{"id":"user_1"},null]',
    "lenient": json.dumps({
        "id": "user_1", "first_name": None, "banned": "yes", "created_at": 1.5e12,
        "updated_at": 18446744073709551615, "last_active_at": -1,
        "primary_email_address_id": "idn_2",
        "email_addresses": [{"id": "idn_2", "email_address": "a@example.com",
                             "verification": {"status": "verified"}}, "junk"],
        "phone_numbers": "not a list",
        "public_metadata": {"plan": "pro", "n": 1e308, "neg": -0.0, "tags": ["a", {"x": None}]},
        "private_metadata": None, "unsafe_metadata": [1, 2], "future_field": {"x": 1},
    }),
    "error_envelope": '{"errors":[{"message":"m","long_message":"l","code":"resource_not_found","meta":{}}],"clerk_trace_id":"t"}',
    "deep": '{"id":"u","public_metadata":' + '{"a":' * 60 + "1" + "}" * 60 + "}",
    "unicode": '{"id":"user_\\u00e9\\ud83d\\ude00","first_name":"\\u0000"}',
}.items():
    write("clerk_user", name, body)

# json_without_key: one byte choosing the key (0: private_metadata, 1: a, 2: "",
# 3: a quote, 4: a slash, 5: é, 6: 😀), then the text
for name, (key, text) in {
    "user": (0, USER),
    "list": (0, USERS),
    "escaped_keys": (0, '{"private\\u005fmetadata":1,"\\u0070rivate_metadata":{"a":[]},"b":2}'),
    "nested": (0, '[{"id":"u","private_metadata":{"private_metadata":1}},{"x":{"y":[{"private_metadata":null}]}}]'),
    "strings": (0, '{"a":"\\"private_metadata\\":{","private_metadata":"}\\"","b":"{[,]}"}'),
    "spacing": (1, '{ "a" : 1 ,\n  "b" : [ ] , "a":{"a":2}\t}'),
    "empty_key": (2, '{"":1,"x":{"":2}}'),
    "quote": (3, '{"\\"":1,"\\u0022":2,"q":3}'),
    "slash": (4, '{"\\/":1,"/":2}'),
    "non_ascii": (5, '{"é":1,"\\u00e9":2,"e":3}'),
    "surrogates": (6, '{"😀":1,"\\ud83d\\ude00":2,"\\ud83d":3}'),
    "scalar": (0, '"private_metadata"'),
    "malformed": (0, '{"private_metadata":1,}'),
    "deep": (0, "[" * 200 + '{"private_metadata":1}' + "]" * 200),
}.items():
    write("json_without_key", name, bytes([key]) + text.encode())

# resume_token: [message size byte, users wanted byte] cursor JSON \n GET /users body
filters = {
    "all": {"exact": [], "partial": [], "banned": None, "times": []},
    "ids": {"exact": [["user_id", ["user_a", "user_b"]]], "partial": [["query", "ada"]],
            "banned": False, "times": [["created_after", 5], ["created_before", 9223372036854775807]]},
}
newest = {"field": "created_at", "descending": True}
oldest = {"field": "created_at", "descending": False}
by_name = {"field": "first_name", "descending": False}
cursors = {
    "start": {"v": 2, "filter": filters["all"], "order_by": newest, "at": {}},
    "keyset": {"v": 2, "filter": filters["ids"], "order_by": oldest,
               "at": {"anchor": 1700331453215, "last": 1700331453215, "seen": ["user_a"]}},
    "partial": {"v": 2, "filter": filters["all"], "order_by": newest,
                "at": {"anchor": 7, "offset": 64, "last": 7, "seen": ["u%d" % i for i in range(64)], "partial": True}},
    "offset": {"v": 2, "filter": filters["all"], "order_by": by_name,
               "at": {"offset": 1000, "seen": ["user_x"]}},
    "extremes": {"v": 2, "filter": filters["ids"], "order_by": newest,
                 "at": {"anchor": -9223372036854775808, "offset": 18446744073709551615,
                        "last": 9223372036854775807}},
    "v1": {"v": 1, "filter": filters["all"], "order_by": newest, "offset": 1500},
    "v9": {"v": 9},
}
pages = {"users": USERS, "empty": "[]", "unsorted": json.dumps([
    {"id": "user_b", "created_at": 2}, {"id": "user_a", "created_at": 1}, {"id": "user_c"}])}
for name, cursor in cursors.items():
    for page_name, page in pages.items():
        data = bytes([1, 0]) + json.dumps(cursor, separators=(",", ":")).encode() + b"\n" + page.encode()
        write("resume_token", f"{name}_{page_name}", data)
write("resume_token", "token_shape", bytes([3, 2]) + b"eyJ2IjoyfQ.dGFn")

# policy: a policy file (the deployed example and the unit tests' cases)
write("policy", "deployed", (HERE.parent / "deploy/k8s/base/policy.toml").read_text())
write("policy", "small", """bulk_share = 0.2
[[budgets]]
name = "writes"
rate = "10/1s"
burst = 2
queue_limit = 50
[[callers]]
name = "web"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
weight = 3
budgets = ["clerk", "writes"]
admin = true
""")
write("policy", "errors", """bulk_share = 0.9
[[budgets]]
name = "clerk"
rate = "0/0s"
[[callers]]
name = ""
token_sha256 = "xyz"
weight = 0
budgets = ["nope"]
""")
write("policy", "rates", "100/10s\n5/500ms\n60/1m\n1000000/24h\n1/1ms\n 7 / 2h \n10s\n")
write("policy", "syntax", "[[callers]\nname = \"é\"\n\"\\u00e9\" = 'x\n")
